//! The agent's signals: SIGTERM and SIGINT ask it to stop, SIGHUP to reload its configuration
//! file (Patroni's behaviour; its systemd unit reloads with `kill -s HUP $MAINPID`).
//!
//! One task listens for all three from the moment the runtime starts and logs each at once, so a
//! signal is acknowledged however busy the agent is; the agent reads what arrived through a
//! [`StopWatch`] (stop requests, counted) and [`Hangups`] (reload requests, coalesced).
//!
//! Invariants kept here:
//! * SIGHUP never terminates the agent: its handler is installed before the agent touches
//!   anything (the default action of SIGHUP would kill the agent and orphan PostgreSQL);
//! * a stop request is kept, never consumed: whoever waits for it later sees it at once, so the
//!   loop can race every cycle against it without losing it;
//! * the first stop request asks for an orderly stop, the second for an immediate stop of
//!   PostgreSQL (see [`StopWatch::escalated`]); later ones change nothing.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// A signal asking the agent to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM (systemd's stop, `kill`).
    Term,
    /// SIGINT (Ctrl-C).
    Int,
}

impl StopSignal {
    /// The signal's name, as logs show it.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Int => "SIGINT",
        }
    }
}

/// Stop requests received so far.
#[derive(Clone, Copy, Debug, Default)]
struct Stops {
    count: u32,
    first: Option<StopSignal>,
}

/// What a stop signal asks for, given those before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopStep {
    /// The first: an orderly stop.
    Orderly,
    /// The second: stop PostgreSQL immediately.
    Immediate,
    /// Any later one: nothing more to ask.
    Nothing,
}

impl Stops {
    fn record(&mut self, which: StopSignal) -> StopStep {
        self.count += 1;
        self.first.get_or_insert(which);
        match self.count {
            1 => StopStep::Orderly,
            2 => StopStep::Immediate,
            _ => StopStep::Nothing,
        }
    }
}

/// The stop requests, as the agent reads them.
pub struct StopWatch(watch::Receiver<Stops>);

impl StopWatch {
    /// Resolves with the first stop signal: at once if one arrived already.
    pub async fn requested(&mut self) -> StopSignal {
        match self.0.wait_for(|s| s.count >= 1).await {
            Ok(s) => s.first.unwrap_or(StopSignal::Term),
            // The listener is gone (the runtime is shutting down): never resolves.
            Err(_) => std::future::pending().await,
        }
    }

    /// Resolves once a second stop signal has arrived: the operator wants PostgreSQL stopped
    /// immediately rather than waiting for a clean shutdown.
    pub async fn escalated(&mut self) {
        if self.0.wait_for(|s| s.count >= 2).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Reload requests (SIGHUP); several that arrive before the agent reloads count as one.
pub struct Hangups(mpsc::Receiver<()>);

impl Hangups {
    /// Resolves when a SIGHUP arrived since the last call.
    pub async fn recv(&mut self) {
        if self.0.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// Installs the handlers and starts the listener task. Must run inside the Tokio runtime, before
/// anything else the agent does.
pub fn install() -> std::io::Result<(StopWatch, Hangups)> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (stop_tx, stop_rx) = watch::channel(Stops::default());
    let (hup_tx, hup_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            let which = tokio::select! {
                Some(()) = term.recv() => StopSignal::Term,
                Some(()) = int.recv() => StopSignal::Int,
                Some(()) = hup.recv() => {
                    info!("SIGHUP received: reloading the configuration file");
                    // A reload already waiting covers this one too.
                    let _ = hup_tx.try_send(());
                    continue;
                }
                else => return,
            };
            let mut step = StopStep::Nothing;
            stop_tx.send_modify(|s| step = s.record(which));
            match step {
                StopStep::Orderly => info!("{} received: shutting down", which.name()),
                StopStep::Immediate => warn!("{} received again: stopping PostgreSQL immediately", which.name()),
                StopStep::Nothing => info!("{} received: already shutting down", which.name()),
            }
        }
    });
    Ok((StopWatch(stop_rx), Hangups(hup_rx)))
}

/// Stop and reload requests that never come (agents run by tests, stopped by aborting them).
#[cfg(test)]
pub fn never() -> (StopWatch, Hangups) {
    let (_, stops) = watch::channel(Stops::default());
    let (_, hangups) = mpsc::channel(1);
    (StopWatch(stops), Hangups(hangups))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_stop_request_stays_seen_and_the_second_one_escalates() {
        let (tx, rx) = watch::channel(Stops::default());
        let mut stops = StopWatch(rx);
        let soon = Duration::from_millis(50);
        assert!(tokio::time::timeout(soon, stops.requested()).await.is_err(), "nothing asked yet");

        let mut step = StopStep::Nothing;
        tx.send_modify(|s| step = s.record(StopSignal::Term));
        assert_eq!(step, StopStep::Orderly);
        assert_eq!(stops.requested().await, StopSignal::Term);
        // Not consumed: a later wait (the next turn of the loop, the shutdown) sees it at once.
        assert_eq!(stops.requested().await, StopSignal::Term);
        assert!(tokio::time::timeout(soon, stops.escalated()).await.is_err(), "one signal does not escalate");

        tx.send_modify(|s| step = s.record(StopSignal::Int));
        assert_eq!(step, StopStep::Immediate);
        stops.escalated().await;
        assert_eq!(stops.requested().await, StopSignal::Term, "the first signal names the stop");
        tx.send_modify(|s| step = s.record(StopSignal::Term));
        assert_eq!(step, StopStep::Nothing);
    }
}
