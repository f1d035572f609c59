//! One member name, one agent: the rule that refuses to start a second agent under a name a
//! live member already uses.
//!
//! Two agents with one name share one member key, one leader key and one slot: the second sees
//! "its" lock held and "its" data directory empty (or the first agent's PostgreSQL running in
//! it), and whatever it does about that acts on the first agent's behalf: release the live
//! leader's lock (an unplanned failover), adopt and later stop its PostgreSQL. Patroni refuses
//! to start (`Can't start; there is already a node named '<name>' running`, exit 1) when the
//! member key exists and the REST API at its `api_url` answers. So does Rampart, before it binds
//! its own API (which would otherwise answer for the name itself) and before it touches anything.
//!
//! Rampart looks a little closer than Patroni: it asks for the status (`GET <api_url>`, the
//! `/patroni` endpoint) and does not refuse when the answer names a *different* member, so an
//! address taken over by another member does not block a restart. Any other answer from that
//! address, a status naming this member or one without a name (an old Patroni), refuses, as
//! Patroni does. No answer (nothing listening: the previous run of this very agent, whose member
//! key has not expired yet) lets the agent start.

use serde_json::Value;

/// What the member key's `api_url` said when asked for its status.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiAnswer {
    /// Nothing answered (connection refused, timeout, TLS failure...).
    Silent,
    /// An HTTP answer whose body is this JSON (`Value::Null` when it was not JSON).
    Answered(Value),
}

/// Patroni's message for a refused start.
pub fn already_running_message(name: &str) -> String {
    format!("Can't start; there is already a node named '{name}' running")
}

/// Whether an agent named `name` must refuse to start: `member_key_exists` (the DCS holds
/// `/members/<name>`) and `answer` is what its `api_url` said.
pub fn name_in_use(name: &str, member_key_exists: bool, answer: &ApiAnswer) -> bool {
    if !member_key_exists {
        return false;
    }
    match answer {
        ApiAnswer::Silent => false,
        ApiAnswer::Answered(body) => {
            let named = body.pointer("/patroni/name").or_else(|| body.get("name")).and_then(Value::as_str);
            named.is_none_or(|n| n == name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_name_whose_member_answers_as_itself_is_refused() {
        let live = ApiAnswer::Answered(json!({"state": "running", "patroni": {"scope": "pg", "name": "node1"}}));
        assert!(name_in_use("node1", true, &live));
        // An answer Rampart cannot read as a status still comes from a live API: refused, as Patroni.
        assert!(name_in_use("node1", true, &ApiAnswer::Answered(Value::Null)));
        assert!(name_in_use("node1", true, &ApiAnswer::Answered(json!({"state": "running"}))));
    }

    #[test]
    fn a_silent_address_a_missing_key_or_another_members_answer_lets_the_agent_start() {
        let other = ApiAnswer::Answered(json!({"patroni": {"scope": "pg", "name": "node2"}}));
        assert!(!name_in_use("node1", true, &ApiAnswer::Silent), "this agent's own previous run");
        assert!(!name_in_use("node1", false, &other));
        assert!(!name_in_use("node1", true, &other), "the address now belongs to another member");
    }

    #[test]
    fn the_message_is_patronis() {
        assert_eq!(
            already_running_message("postgres-0"),
            "Can't start; there is already a node named 'postgres-0' running"
        );
    }
}
