//! [`EtcdStore`]: the [`Store`] on an etcd cluster, every key under one
//! prefix (`/berth` by default) so several stores can share a cluster.
//!
//! The mapping is etcd's own: revisions are etcd's (`mod_revision`,
//! `create_revision`, the header revision of a list), compare-and-swap is a
//! txn comparing the key's `mod_revision` (0: absent), a watch is an etcd
//! watch that starts again from the revision after the last one it
//! delivered when the connection drops, and leases are etcd leases (revoking
//! one deletes its keys in one revision).
//!
//! Each member has a client of its own: a request that cannot connect to
//! one member goes to the next (and a watch resumes on the next), so one
//! member down stops nothing while the others keep their quorum.
//!
//! The [`Store`] trait is synchronous; the client is async. The store owns a
//! small runtime of its own and each call waits for its answer there, so it
//! can be called from any thread, inside another runtime or not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};

use crate::store::{Entry, Event, LeaseId, Store, StoreError, Watch};

/// The prefix every key lives under unless told otherwise.
pub const DEFAULT_PREFIX: &str = "/berth";
/// How long the store waits for the cluster to answer at open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request is retried while the members elect a raft leader
/// (etcd's default election timeout is 1 s).
const ELECTION_WAIT: Duration = Duration::from_secs(3);
/// Pause before a dropped watch connects again.
const WATCH_RETRY: Duration = Duration::from_millis(200);

/// The etcd [`Store`].
pub struct EtcdStore {
    /// One client per member (each connects lazily), so a request can go
    /// to another member when one is down.
    clients: Arc<Vec<Client>>,
    /// The member that answered last.
    current: Arc<AtomicUsize>,
    prefix: String,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Whether a request failed without reaching a member (connection refused
/// or not established): then another member may take it.
fn not_connected(e: &StoreError) -> bool {
    let StoreError::Backend(why) = e else {
        return false;
    };
    why.contains("Unavailable") && why.contains("connect") || why.contains("transport error")
}

/// Whether a request failed because the cluster was between raft leaders
/// ("leader changed", "no leader"): it is sent again. A put that did land
/// lands once more with the same value; a compare-and-swap or create that
/// did land comes back as a conflict, which its callers already answer by
/// reading again.
fn electing(e: &StoreError) -> bool {
    let StoreError::Backend(why) = e else {
        return false;
    };
    why.contains("etcdserver: leader changed") || why.contains("etcdserver: no leader")
}

fn failed(e: etcd_client::Error) -> StoreError {
    StoreError::Backend(format!("etcd: {e}"))
}

/// etcd's answer to a lease it does not know.
fn lease_error(e: etcd_client::Error, lease: LeaseId) -> StoreError {
    if e.to_string().contains("lease not found") {
        StoreError::LeaseNotFound(lease)
    } else {
        failed(e)
    }
}

fn revision(header: Option<&etcd_client::ResponseHeader>) -> u64 {
    header.map_or(0, |h| h.revision()) as u64
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`HOST:PORT`), keeping every
    /// key under `prefix`; fails, naming the endpoints, when no member
    /// answers within a few seconds.
    pub fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("store-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot start the etcd client: {e}")))?;
        let unreachable = |why: String| {
            StoreError::Backend(format!(
                "no etcd member answers at {} ({why}); check that etcd runs there, that its \
                 --listen-client-urls and --advertise-client-urls include those addresses, and \
                 that this host can reach them",
                endpoints.join(", ")
            ))
        };
        let urls: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
        let (done, answer) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            let connect = async {
                let mut clients = Vec::new();
                for url in &urls {
                    let options = ConnectOptions::new().with_timeout(REQUEST_TIMEOUT);
                    clients.push(
                        Client::connect([url], Some(options))
                            .await
                            .map_err(|e| e.to_string())?,
                    );
                }
                // The channels connect lazily: ask every member at once and
                // start with the first that answers (one that hangs does
                // not hold up the others).
                let mut asked = tokio::task::JoinSet::new();
                for (i, client) in clients.iter().enumerate() {
                    let mut client = client.clone();
                    asked.spawn(async move { (i, client.status().await) });
                }
                let mut last = None;
                while let Some(answer) = asked.join_next().await {
                    match answer {
                        Ok((i, Ok(_))) => return Ok((clients, i)),
                        Ok((_, Err(e))) => last = Some(e.to_string()),
                        Err(e) => last = Some(e.to_string()),
                    }
                }
                Err(last.unwrap_or_else(|| "no endpoint given".into()))
            };
            let _ = done.send(tokio::time::timeout(CONNECT_TIMEOUT, connect).await);
        });
        // Waited for here, not with `block_on`: the caller may be inside
        // another runtime.
        let connected = match answer.recv() {
            Ok(Ok(Ok(connected))) => Ok(connected),
            Ok(Ok(Err(e))) => Err(unreachable(e)),
            Ok(Err(_)) => Err(unreachable(format!(
                "no answer within {}",
                humantime::format_duration(CONNECT_TIMEOUT)
            ))),
            Err(_) => Err(StoreError::Backend("the etcd client stopped".into())),
        };
        let (clients, current) = match connected {
            Ok(connected) => connected,
            Err(e) => {
                // Without waiting, as in `drop`.
                runtime.shutdown_background();
                return Err(e);
            }
        };
        Ok(Self {
            clients: Arc::new(clients),
            current: Arc::new(AtomicUsize::new(current)),
            prefix: prefix.trim_end_matches('/').to_string(),
            runtime: Some(runtime),
        })
    }

    /// Runs `call` with a client on the store's runtime and waits for it:
    /// with the member that answered last, then each other one while the
    /// one asked cannot be connected to (so one dead member never stops
    /// the store; a request that reached a member is never sent twice).
    fn run<T, F>(&self, call: impl Fn(Client) -> F + Send + 'static) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (done, answer) = mpsc::sync_channel(1);
        let (clients, current) = (self.clients.clone(), self.current.clone());
        self.runtime().spawn(async move {
            let electing_until = tokio::time::Instant::now() + ELECTION_WAIT;
            let result = loop {
                let first = current.load(Ordering::Relaxed);
                let mut result = Err(StoreError::Backend("etcd: no endpoint".into()));
                for k in 0..clients.len() {
                    let i = (first + k) % clients.len();
                    result = call(clients[i].clone()).await;
                    match &result {
                        Err(e) if not_connected(e) => continue,
                        _ => {
                            current.store(i, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                match &result {
                    // The members are electing a raft leader (one died):
                    // the request was dropped, ask again shortly.
                    Err(e) if electing(e) && tokio::time::Instant::now() < electing_until => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ => break result,
                }
            };
            let _ = done.send(result);
        });
        answer
            .recv()
            .map_err(|_| StoreError::Backend("the etcd client stopped".into()))?
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("runtime lives until drop")
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn entry(prefix_len: usize, kv: &KeyValue) -> Entry {
        Entry {
            key: String::from_utf8_lossy(&kv.key()[prefix_len..]).into_owned(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision() as u64,
            mod_revision: kv.mod_revision() as u64,
        }
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Without waiting: the store may be dropped inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let (full, cut) = (self.full(key), self.prefix.len());
        self.run(move |mut c| {
            let full = full.clone();
            async move {
                let response = c.get(full, None).await.map_err(failed)?;
                Ok(response.kvs().first().map(|kv| Self::entry(cut, kv)))
            }
        })
    }

    fn list(&self, prefix: &str) -> Result<(Vec<Entry>, u64), StoreError> {
        let (full, cut) = (self.full(prefix), self.prefix.len());
        self.run(move |mut c| {
            let full = full.clone();
            async move {
                let response = c
                    .get(full, Some(GetOptions::new().with_prefix()))
                    .await
                    .map_err(failed)?;
                let entries = response
                    .kvs()
                    .iter()
                    .map(|kv| Self::entry(cut, kv))
                    .collect();
                Ok((entries, revision(response.header())))
            }
        })
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<u64, StoreError> {
        let (full, value) = (self.full(key), value.to_vec());
        self.run(move |mut c| {
            let full = full.clone();
            let value = value.clone();
            async move {
                let response = c.put(full, value, None).await.map_err(failed)?;
                Ok(revision(response.header()))
            }
        })
    }

    fn compare_and_swap(&self, key: &str, expected: u64, value: &[u8]) -> Result<u64, StoreError> {
        let (full, value, key) = (self.full(key), value.to_vec(), key.to_string());
        self.run(move |mut c| {
            let full = full.clone();
            let value = value.clone();
            let key = key.clone();
            async move {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        full.clone(),
                        CompareOp::Equal,
                        expected as i64,
                    )])
                    .and_then([TxnOp::put(full.clone(), value, None)])
                    .or_else([TxnOp::get(full, None)]);
                let response = c.txn(txn).await.map_err(failed)?;
                if response.succeeded() {
                    return Ok(revision(response.header()));
                }
                let found = found_revision(response);
                Err(StoreError::Conflict {
                    key,
                    expected,
                    found,
                })
            }
        })
    }

    fn delete(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let full = self.full(key);
        self.run(move |mut c| {
            let full = full.clone();
            async move {
                let response = c.delete(full, None).await.map_err(failed)?;
                Ok((response.deleted() > 0).then(|| revision(response.header())))
            }
        })
    }

    fn watch(&self, prefix: &str, after: u64) -> Result<Watch, StoreError> {
        let (full, cut) = (self.full(prefix), self.prefix.len());
        let (send, events) = tokio::sync::mpsc::channel(1024);
        let clients = self.clients.clone();
        let first = self.current.load(Ordering::Relaxed);
        self.runtime()
            .spawn(follow(clients, first, full, cut, after, send));
        Ok(Watch::from_channel(events))
    }

    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        // etcd counts whole seconds.
        let seconds = ttl.as_secs_f64().ceil().max(1.0) as i64;
        self.run(move |mut c| async move {
            let response = c.lease_grant(seconds, None).await.map_err(failed)?;
            Ok(response.id() as LeaseId)
        })
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.run(move |mut c| async move {
            let (mut keeper, mut answers) = c
                .lease_keep_alive(lease as i64)
                .await
                .map_err(|e| lease_error(e, lease))?;
            keeper
                .keep_alive()
                .await
                .map_err(|e| lease_error(e, lease))?;
            match answers.message().await.map_err(|e| lease_error(e, lease))? {
                Some(answer) if answer.ttl() > 0 => Ok(()),
                _ => Err(StoreError::LeaseNotFound(lease)),
            }
        })
    }

    fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.run(move |mut c| async move {
            c.lease_revoke(lease as i64)
                .await
                .map_err(|e| lease_error(e, lease))?;
            Ok(())
        })
    }

    fn create_with_lease(
        &self,
        key: &str,
        value: &[u8],
        lease: LeaseId,
    ) -> Result<u64, StoreError> {
        let (full, value, key) = (self.full(key), value.to_vec(), key.to_string());
        self.run(move |mut c| {
            let full = full.clone();
            let value = value.clone();
            let key = key.clone();
            async move {
                let options = PutOptions::new().with_lease(lease as i64);
                let txn = Txn::new()
                    .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(full.clone(), value, Some(options))])
                    .or_else([TxnOp::get(full, None)]);
                let response = c.txn(txn).await.map_err(|e| lease_error(e, lease))?;
                if response.succeeded() {
                    return Ok(revision(response.header()));
                }
                let found = found_revision(response);
                Err(StoreError::Conflict {
                    key,
                    expected: 0,
                    found,
                })
            }
        })
    }

    fn put_with_lease(&self, key: &str, value: &[u8], lease: LeaseId) -> Result<u64, StoreError> {
        let (full, value) = (self.full(key), value.to_vec());
        self.run(move |mut c| {
            let full = full.clone();
            let value = value.clone();
            async move {
                let options = PutOptions::new().with_lease(lease as i64);
                let response = c
                    .put(full, value, Some(options))
                    .await
                    .map_err(|e| lease_error(e, lease))?;
                Ok(revision(response.header()))
            }
        })
    }
}

/// Follows etcd's watch on `prefix` from the revision after `after` (from
/// member `member` of `clients`, the next one after each failure),
/// sending each change to `send` until the receiver is gone; a dropped
/// connection is followed again from the revision after the last change
/// sent, so nothing is lost or repeated.
async fn follow(
    clients: Arc<Vec<Client>>,
    mut member: usize,
    prefix: String,
    cut: usize,
    mut after: u64,
    send: tokio::sync::mpsc::Sender<Result<Event, StoreError>>,
) {
    loop {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(after as i64 + 1);
        let mut client = clients[member % clients.len()].clone();
        let stream = client.watch(prefix.clone(), Some(options)).await;
        let (_watcher, mut stream) = match stream {
            Ok(pair) => pair,
            Err(e) => {
                // Each retry asks the next member.
                member += 1;
                tracing::warn!(error = %e, "etcd watch failed; retrying");
                if send.is_closed() {
                    return;
                }
                tokio::time::sleep(WATCH_RETRY).await;
                continue;
            }
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    member += 1;
                    break;
                }
                Err(e) => {
                    member += 1;
                    tracing::warn!(error = %e, "etcd watch dropped; resuming");
                    break;
                }
            };
            if response.compact_revision() > 0 {
                let _ = send.send(Err(StoreError::Compacted(after))).await;
                return;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let change = match event.event_type() {
                    EventType::Put => Event::Put(EtcdStore::entry(cut, kv)),
                    EventType::Delete => Event::Delete {
                        key: String::from_utf8_lossy(&kv.key()[cut..]).into_owned(),
                        revision: kv.mod_revision() as u64,
                    },
                };
                after = change.revision();
                if send.send(Ok(change)).await.is_err() {
                    return;
                }
            }
            if response.canceled() {
                break;
            }
        }
        if send.is_closed() {
            return;
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}

/// The revision a failed compare-and-swap found: what the txn's `else` get
/// read (0: the key is absent).
fn found_revision(response: etcd_client::TxnResponse) -> u64 {
    response
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map_or(0, |kv| kv.mod_revision())),
            _ => None,
        })
        .unwrap_or(0) as u64
}
