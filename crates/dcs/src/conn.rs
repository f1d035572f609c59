//! The etcd connections and the retry loop every operation goes through.
//!
//! Invariants:
//! * no operation outlives its deadline: each attempt gets a slice of the remaining time, and
//!   retries stop at the deadline;
//! * one dead or frozen endpoint never fails an operation while another answers: requests stick
//!   to one endpoint while it works, and a failed attempt moves on to the next endpoint. The
//!   per-attempt budget is the remaining time divided among the endpoints not yet tried in this
//!   round (as Patroni splits `retry_timeout` among etcd hosts), so a frozen endpoint costs at
//!   most its share and the next one still gets its turn;
//! * authentication happens on first use of each endpoint, not at construction, and is retried
//!   until it succeeds, so starting while etcd is down works.
//!
//! We keep one etcd-client `Client` per endpoint rather than one balanced over all: its balancer
//! picks endpoints at random per request and keeps choosing an endpoint that accepts TCP but never
//! answers, which fails a third of requests under a frozen etcd process.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::Client;
use tokio::sync::OnceCell;
use tokio::time::{sleep, timeout, Instant};

use crate::backoff::Backoff;
use crate::error::{DcsError, Fault};
use crate::options::EtcdOptions;

/// Shortest attempt we make, so that a nearly spent deadline still gets a real try.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// One endpoint's client.
struct Endpoint {
    /// As shown in messages.
    shown: String,
    /// Cheap to clone; each attempt works on its own clone because the API takes `&mut self`.
    client: Client,
    /// Set once authentication on this endpoint succeeded; later token expiries are handled by
    /// the client's automatic refresh.
    authenticated: OnceCell<()>,
}

/// All endpoints, the one currently preferred, and what is needed to report errors.
pub(crate) struct Conn {
    endpoints: Vec<Endpoint>,
    preferred: AtomicUsize,
    credentials: Option<(String, String)>,
    shown: String,
    op_timeout: Duration,
}

impl Conn {
    /// Builds the clients. Does not contact etcd (channels connect on first use).
    pub(crate) async fn new(options: &EtcdOptions) -> Result<Conn, DcsError> {
        let credentials = options.credentials()?;
        let connect = options.connect_options()?;
        let mut endpoints = Vec::new();
        for (url, shown) in options.endpoint_urls()?.into_iter().zip(options.endpoints_shown()) {
            let client = Client::connect([&url], Some(connect.clone()))
                .await
                .map_err(|e| options.config_error(format!("cannot build a client for {shown}: {e}")))?;
            endpoints.push(Endpoint { shown, client, authenticated: OnceCell::new() });
        }
        Ok(Conn {
            endpoints,
            preferred: AtomicUsize::new(0),
            credentials,
            shown: options.endpoints_for_display(),
            op_timeout: options.op_timeout.max(MIN_ATTEMPT),
        })
    }

    pub(crate) fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// All endpoints, as shown in messages.
    pub(crate) fn endpoints(&self) -> &str {
        &self.shown
    }

    /// Moves away from endpoint `index` after it failed, unless someone already did.
    pub(crate) fn demote(&self, index: usize) {
        let next = (index + 1) % self.endpoints.len();
        let _ = self.preferred.compare_exchange(index, next, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The client of endpoint `index`, authenticated if credentials are configured.
    async fn client(&self, index: usize) -> Result<Client, Fault> {
        let endpoint = &self.endpoints[index];
        if let Some((user, password)) = &self.credentials {
            endpoint
                .authenticated
                .get_or_try_init(|| async {
                    // `update_user` authenticates and stores the credentials in state shared by
                    // all clones, which is what the automatic token refresh uses later.
                    let mut client = endpoint.client.clone();
                    client.update_user(Some((user.clone(), password.clone()))).await.map_err(Fault::from)
                })
                .await?;
        }
        Ok(endpoint.client.clone())
    }

    /// Runs `attempt` until it succeeds, fails for good, or `deadline` passes. Returns the value
    /// and the index of the endpoint that produced it.
    ///
    /// `attempt` builds its request afresh each time from owned data, so it can be retried.
    pub(crate) async fn call_on<T, F, Fut>(&self, deadline: Instant, mut attempt: F) -> Result<(T, usize), Fault>
    where
        F: FnMut(Client) -> Fut + Send,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send,
        T: Send,
    {
        let count = self.endpoints.len();
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        let mut last = Fault::Timeout;
        let mut tried_this_round = 0;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(last);
            }
            let remaining = deadline - now;
            let index = self.preferred.load(Ordering::Acquire) % count;
            let share = remaining.min(self.op_timeout) / u32::try_from(count - tried_this_round).unwrap_or(1);
            let budget = share.max(MIN_ATTEMPT).min(remaining);
            let outcome = timeout(budget, async {
                let client = self.client(index).await?;
                attempt(client).await.map_err(Fault::from)
            })
            .await;
            let fault = match outcome {
                Ok(Ok(value)) => return Ok((value, index)),
                Ok(Err(fault)) => fault,
                Err(_elapsed) => Fault::Timeout,
            };
            if !fault.is_retryable() {
                return Err(fault.at(&self.endpoints[index].shown));
            }
            tracing::debug!(endpoint = %self.endpoints[index].shown, ?fault, "etcd request failed, trying again");
            self.demote(index);
            // Keep the transport's explanation: "connection refused" says more than "timeout".
            if !(matches!(fault, Fault::Timeout) && matches!(last, Fault::Unreachable(_))) {
                last = fault.at(&self.endpoints[index].shown);
            }
            tried_this_round += 1;
            if tried_this_round == count {
                // Every endpoint failed once: pause before the next round.
                tried_this_round = 0;
                let pause = backoff.next_delay();
                if Instant::now() + pause >= deadline {
                    return Err(last);
                }
                sleep(pause).await;
            }
        }
    }

    /// [`Conn::call_on`] without the endpoint index.
    pub(crate) async fn call<T, F, Fut>(&self, deadline: Instant, attempt: F) -> Result<T, Fault>
    where
        F: FnMut(Client) -> Fut + Send,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send,
        T: Send,
    {
        self.call_on(deadline, attempt).await.map(|(value, _)| value)
    }

    /// Like [`Conn::call`], with the failure turned into a [`DcsError`] naming `op`.
    pub(crate) async fn run<T, F, Fut>(&self, op: &'static str, deadline: Instant, attempt: F) -> Result<T, DcsError>
    where
        F: FnMut(Client) -> Fut + Send,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send,
        T: Send,
    {
        let started = Instant::now();
        self.call(deadline, attempt).await.map_err(|f| self.error(op, f, started))
    }

    /// Names a failure for the caller.
    pub(crate) fn error(&self, op: &'static str, fault: Fault, started: Instant) -> DcsError {
        fault.into_error(op, &self.shown, started.elapsed())
    }
}
