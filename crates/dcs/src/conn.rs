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
//!   until it succeeds, so starting while etcd is down works;
//! * endpoints are only ever added (from etcd's member list, [`Conn::learn_members`]), never
//!   removed or reordered, so an endpoint index stays valid for the life of the connection.
//!
//! We keep one etcd-client `Client` per endpoint rather than one balanced over all: its balancer
//! picks endpoints at random per request and keeps choosing an endpoint that accepts TCP but never
//! answers, which fails a third of requests under a frozen etcd process.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::sync::OnceCell;
use tokio::time::{sleep, timeout, Instant};

use crate::backoff::Backoff;
use crate::error::{DcsError, Fault};
use crate::options::EtcdOptions;

/// Shortest attempt we make, so that a nearly spent deadline still gets a real try.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// One endpoint's client.
struct Endpoint {
    /// With its scheme, to recognise it in etcd's member list.
    url: String,
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
    /// Configured first, then learned ones; only appended to.
    endpoints: RwLock<Vec<Arc<Endpoint>>>,
    preferred: AtomicUsize,
    credentials: Option<(String, String)>,
    /// The configured endpoints, as error messages name them.
    shown: String,
    op_timeout: Duration,
    /// For clients of endpoints learned later.
    connect: ConnectOptions,
    uses_tls: bool,
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
            endpoints.push(Arc::new(Endpoint { url, shown, client, authenticated: OnceCell::new() }));
        }
        Ok(Conn {
            endpoints: RwLock::new(endpoints),
            preferred: AtomicUsize::new(0),
            credentials,
            shown: options.endpoints_for_display(),
            op_timeout: options.op_timeout.max(MIN_ATTEMPT),
            connect,
            uses_tls: options.uses_tls(),
        })
    }

    fn count(&self) -> usize {
        self.list().len()
    }

    fn endpoint(&self, index: usize) -> Arc<Endpoint> {
        let list = self.list();
        list[index % list.len()].clone()
    }

    fn list(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Endpoint>>> {
        // Only ever appended to under the write lock: a panic cannot leave it half-changed.
        self.endpoints.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks etcd for its members and adds the client URLs not known yet, as Patroni's etcd3
    /// client does with the member list: a member added to the etcd cluster after the agent
    /// started is then used when the configured ones fail. URLs of the wrong scheme for our
    /// settings (plain http with TLS files configured, or https without) are left out. Returns
    /// the URLs added.
    pub(crate) async fn learn_members(&self, deadline: Instant) -> Result<Vec<String>, Fault> {
        let members = self.call(deadline, |mut c| async move { c.member_list().await }).await?;
        let scheme = if self.uses_tls { "https://" } else { "http://" };
        let mut added = Vec::new();
        for url in members.members().iter().flat_map(|m| m.client_urls()) {
            let url = url.trim_end_matches('/').to_string();
            if !url.starts_with(scheme) || self.list().iter().any(|e| e.url == url) || added.contains(&url) {
                continue;
            }
            // Building a client contacts nothing (channels connect on first use).
            let Ok(client) = Client::connect([&url], Some(self.connect.clone())).await else { continue };
            let shown = crate::error::display_endpoint(&url);
            let endpoint = Arc::new(Endpoint { url: url.clone(), shown, client, authenticated: OnceCell::new() });
            self.endpoints.write().unwrap_or_else(|poisoned| poisoned.into_inner()).push(endpoint);
            added.push(url);
        }
        Ok(added)
    }

    pub(crate) fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// All endpoints, as shown in messages.
    pub(crate) fn endpoints(&self) -> &str {
        &self.shown
    }

    /// The endpoint requests go to now.
    pub(crate) fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Acquire) % self.count()
    }

    /// What a first attempt on the preferred endpoint may take of the time left until
    /// `deadline`: its share, as [`Conn::call_on`] gives it, so that a frozen endpoint leaves
    /// time for the others.
    pub(crate) fn first_attempt_budget(&self, deadline: Instant) -> Duration {
        self.attempt_budget(deadline.saturating_duration_since(Instant::now()), self.count())
    }

    /// One attempt's share of `remaining`, split among the `untried` endpoints of this round.
    fn attempt_budget(&self, remaining: Duration, untried: usize) -> Duration {
        let share = remaining.min(self.op_timeout) / u32::try_from(untried.max(1)).unwrap_or(1);
        share.max(MIN_ATTEMPT).min(remaining)
    }

    /// Moves away from endpoint `index` after it failed, unless someone already did.
    pub(crate) fn demote(&self, index: usize) {
        let next = (index + 1) % self.count();
        let _ = self.preferred.compare_exchange(index, next, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The client of endpoint `index`, authenticated if credentials are configured.
    async fn client(&self, index: usize) -> Result<Client, Fault> {
        let endpoint = self.endpoint(index);
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
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        let mut last = Fault::Timeout;
        let mut tried_this_round = 0;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(last);
            }
            let remaining = deadline - now;
            // Read each round: endpoints learned meanwhile take their turn.
            let count = self.count();
            tried_this_round = tried_this_round.min(count - 1);
            let index = self.preferred();
            let budget = self.attempt_budget(remaining, count - tried_this_round);
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
                return Err(fault.at(&self.endpoint(index).shown));
            }
            tracing::debug!(endpoint = %self.endpoint(index).shown, ?fault, "etcd request failed, trying again");
            self.demote(index);
            // Keep the transport's explanation: "connection refused" says more than "timeout".
            if !(matches!(fault, Fault::Timeout) && matches!(last, Fault::Unreachable(_))) {
                last = fault.at(&self.endpoint(index).shown);
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
