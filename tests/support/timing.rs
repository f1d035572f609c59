//! The three numbers an HA timing is made of, as the e2e tests, the chaos suite and the benches
//! name them: ttl, loop_wait and retry_timeout (seconds).

/// ttl / loop_wait / retry_timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub ttl: u64,
    pub loop_wait: u64,
    pub retry_timeout: u64,
}

impl Timing {
    /// `10/1/3`, for tables.
    pub fn label(&self) -> String {
        format!("{}/{}/{}", self.ttl, self.loop_wait, self.retry_timeout)
    }

    /// `ttl 10 / loop_wait 1 / retry_timeout 3`, for sentences.
    pub fn long_label(&self) -> String {
        format!("ttl {} / loop_wait {} / retry_timeout {}", self.ttl, self.loop_wait, self.retry_timeout)
    }
}
