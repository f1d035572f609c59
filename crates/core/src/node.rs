//! The per-cycle decision (placeholder while the decision table is written).

use crate::action::{ActionResult, Plan};
use crate::model::Tags;
use crate::observe::Observation;

/// Per-node settings from the local configuration that the decision depends on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSettings {
    /// This member's name.
    pub name: String,
    /// Its tags.
    pub tags: Tags,
    /// Wipe and re-clone when pg_rewind fails.
    pub remove_data_directory_on_rewind_failure: bool,
}

/// One node's HA state machine.
#[derive(Debug)]
pub struct HaNode {
    settings: NodeSettings,
}

impl HaNode {
    /// A node with no memory yet.
    pub fn new(settings: NodeSettings) -> Self {
        HaNode { settings }
    }
    /// Decides this cycle.
    pub fn decide(&mut self, obs: &Observation<'_>) -> Plan {
        let _ = (&self.settings, obs);
        Plan { actions: vec![], message: String::new(), next_cycle: obs.now }
    }
    /// Records a result.
    pub fn advance(&mut self, _r: ActionResult) {}
}
