//! Leader election among the controllers that share one store: exactly one
//! of them runs the reconcilers, the rollouts and the scheduler; the others
//! serve reads and forward writes to it ([`crate::forward`]).
//!
//! The lock is etcd's usual one, built on the [`Store`] alone: a candidate
//! grants a lease of the leader TTL and creates [`LEADER_KEY`] attached to
//! it only if the key is absent ([`Store::create_with_lease`]); the key
//! holds its id and advertised API URL ([`LeaderRecord`]). The leader keeps
//! the lease alive every quarter TTL. Followers read the key every quarter
//! TTL (at most 100 ms), so they know where to forward, and try to take it
//! the moment it is gone.
//!
//! Safety does not rest on the renewal loop running: the leader may act
//! only until its *renew deadline* — two thirds of the TTL after the start
//! of its last successful renewal — and [`Leadership::is_leader`] reads that
//! clock, so a controller cut off from the store (or stuck in a call that
//! does not answer) stops acting before etcd can have expired its lease and
//! let another take over. A renewal that finds the lease gone, or the key
//! held by someone else, steps down at once.
//!
//! With the embedded store there is one controller: [`Leadership::always`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::store::{LeaseId, SharedStore, StoreError};

/// The key the leader holds.
pub const LEADER_KEY: &str = "/leader";

/// What [`LEADER_KEY`] says: who leads and where its API is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderRecord {
    /// The leader's id (unique per controller process).
    pub id: String,
    /// Its advertised API URL (`http://host:port`).
    pub url: String,
}

/// This controller's view of the election; cheap to clone.
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<State>,
}

struct State {
    me: LeaderRecord,
    epoch: Instant,
    /// Milliseconds after `epoch` until which this controller may act as
    /// leader; 0: it may not; `u64::MAX`: always (the embedded store).
    valid_until: AtomicU64,
    /// The leader as last read from the store.
    leader: Mutex<Option<LeaderRecord>>,
    /// Told `true` on each election of this controller, `false` when it
    /// steps down.
    elected: watch::Sender<bool>,
    stop: AtomicBool,
    /// The campaign thread, joined by [`Leadership::resign`].
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Leadership {
    fn with(me: LeaderRecord, valid_until: u64) -> Self {
        let leading = valid_until == u64::MAX;
        Self {
            inner: Arc::new(State {
                leader: Mutex::new(leading.then(|| me.clone())),
                me,
                epoch: Instant::now(),
                valid_until: AtomicU64::new(valid_until),
                elected: watch::channel(leading).0,
                stop: AtomicBool::new(false),
                thread: Mutex::new(None),
            }),
        }
    }

    /// The only controller on its store (redb): always the leader.
    pub fn always(url: impl Into<String>) -> Self {
        Self::with(
            LeaderRecord {
                id: "single".into(),
                url: url.into(),
            },
            u64::MAX,
        )
    }

    /// Campaigns for [`LEADER_KEY`] on `store` as `me`, with leases of
    /// `ttl`, on a thread of its own until [`Leadership::resign`].
    pub fn campaign(store: SharedStore, me: LeaderRecord, ttl: Duration) -> Self {
        let this = Self::with(me, 0);
        let runner = this.clone();
        let thread = std::thread::Builder::new()
            .name("leader-election".into())
            .spawn(move || runner.run(&store, ttl))
            .expect("a thread for the leader election");
        *this.inner.thread.lock().expect("election thread") = Some(thread);
        this
    }

    /// Whether this controller may act as leader right now.
    pub fn is_leader(&self) -> bool {
        let until = self.inner.valid_until.load(Ordering::SeqCst);
        until == u64::MAX || self.now_ms() < until
    }

    /// This controller's id and URL.
    pub fn me(&self) -> &LeaderRecord {
        &self.inner.me
    }

    /// The leader, as far as this controller knows: itself while it leads,
    /// else the holder of the key as last read (`None`: no leader, or this
    /// controller lost it and cannot read the store).
    pub fn leader(&self) -> Option<LeaderRecord> {
        if self.is_leader() {
            return Some(self.inner.me.clone());
        }
        self.inner
            .leader
            .lock()
            .expect("leader record")
            .clone()
            .filter(|l| l.id != self.inner.me.id)
    }

    /// Told `true` each time this controller is elected, `false` when it
    /// steps down.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.elected.subscribe()
    }

    /// Stops campaigning and, if leading, gives the key up at once (its
    /// lease revoked) so another controller takes over without waiting for
    /// the TTL.
    pub fn resign(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.inner.thread.lock().expect("election thread").take() {
            let _ = thread.join();
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.inner.epoch).as_millis() as u64
    }

    fn set_leader(&self, record: Option<LeaderRecord>) {
        *self.inner.leader.lock().expect("leader record") = record;
    }

    fn step_down(&self, why: &str) {
        if self.inner.valid_until.swap(0, Ordering::SeqCst) == 0 {
            return; // stepped down already (its renew deadline passed)
        }
        self.set_leader(None);
        tracing::warn!(id = %self.inner.me.id, %why, "no longer the leader; following");
        self.inner.elected.send_replace(false);
    }

    /// Sleeps `for_` in short steps; false once told to stop.
    fn pause(&self, for_: Duration) -> bool {
        let until = Instant::now() + for_;
        while Instant::now() < until {
            if self.inner.stop.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
        }
        !self.inner.stop.load(Ordering::SeqCst)
    }

    /// The campaign: follow while someone leads, take the key when it is
    /// free, keep it alive while leading.
    fn run(&self, store: &SharedStore, ttl: Duration) {
        let renew_every = (ttl / 4).max(Duration::from_millis(50));
        let poll = renew_every.min(Duration::from_millis(100));
        // Acting stops this long after the last successful renewal began:
        // before etcd (which counts from when it received it) can expire
        // the lease.
        let renew_deadline = ttl * 2 / 3;
        let me = serde_json::to_vec(&self.inner.me).expect("a leader record serializes");
        let mut lease: Option<LeaseId> = None;
        // Each outage is logged once, not on every retry.
        let complained = std::cell::Cell::new(false);
        let complain = |what: &str, e: &StoreError| {
            if !complained.replace(true) {
                tracing::warn!(error = %e, "leader election: {what}; retrying");
            }
        };
        loop {
            if self.inner.stop.load(Ordering::SeqCst) {
                break;
            }
            if let Some(held) = lease {
                if !self.pause(renew_every) {
                    break;
                }
                let began = Instant::now();
                let renewed = store.keep_alive(held).and_then(|()| store.get(LEADER_KEY));
                match renewed {
                    Ok(Some(entry))
                        if serde_json::from_slice::<LeaderRecord>(&entry.value)
                            .is_ok_and(|r| r.id == self.inner.me.id) =>
                    {
                        complained.set(false);
                        let was = self.is_leader();
                        self.inner
                            .valid_until
                            .store(self.ms_at(began + renew_deadline), Ordering::SeqCst);
                        if !was {
                            tracing::info!(id = %self.inner.me.id, "leader again: the lease held");
                            self.inner.elected.send_replace(true);
                        }
                    }
                    Ok(_) => {
                        lease = None;
                        self.step_down("the leader key is gone or held by another controller");
                    }
                    Err(StoreError::LeaseNotFound(_)) => {
                        lease = None;
                        self.step_down("the leader lease expired");
                    }
                    Err(e) => {
                        complain("cannot renew the leader lease", &e);
                        if !self.is_leader() {
                            // Keep the lease: if it still lives when the
                            // store answers again, this controller leads on.
                            self.step_down(&format!(
                                "the store did not renew the leader lease within {}",
                                humantime::format_duration(renew_deadline)
                            ));
                        }
                    }
                }
                continue;
            }
            match store.get(LEADER_KEY) {
                Ok(Some(entry)) => {
                    complained.set(false);
                    self.set_leader(serde_json::from_slice(&entry.value).ok());
                    if !self.pause(poll) {
                        break;
                    }
                }
                Ok(None) => {
                    self.set_leader(None);
                    let began = Instant::now();
                    let granted = match store.grant_lease(ttl) {
                        Ok(granted) => granted,
                        Err(e) => {
                            complain("cannot grant a lease", &e);
                            if !self.pause(poll) {
                                break;
                            }
                            continue;
                        }
                    };
                    match store.create_with_lease(LEADER_KEY, &me, granted) {
                        Ok(_) => {
                            complained.set(false);
                            lease = Some(granted);
                            self.inner
                                .valid_until
                                .store(self.ms_at(began + renew_deadline), Ordering::SeqCst);
                            self.set_leader(Some(self.inner.me.clone()));
                            tracing::info!(
                                id = %self.inner.me.id,
                                url = %self.inner.me.url,
                                ttl = %humantime::format_duration(ttl),
                                "elected leader"
                            );
                            self.inner.elected.send_replace(true);
                        }
                        Err(e) => {
                            let _ = store.revoke_lease(granted);
                            if !matches!(e, StoreError::Conflict { .. }) {
                                complain("cannot take the leader key", &e);
                                if !self.pause(poll) {
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    complain("cannot read the leader key", &e);
                    if !self.pause(poll) {
                        break;
                    }
                }
            }
        }
        // Resigning: give the key up now rather than after the TTL.
        if let Some(held) = lease {
            self.inner.valid_until.store(0, Ordering::SeqCst);
            let _ = store.revoke_lease(held);
            self.inner.elected.send_replace(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RedbStore, Store as _};

    fn record(id: &str) -> LeaderRecord {
        LeaderRecord {
            id: id.into(),
            url: format!("http://{id}"),
        }
    }

    fn until(what: &str, within: Duration, done: impl Fn() -> bool) {
        let deadline = Instant::now() + within;
        while !done() {
            assert!(Instant::now() < deadline, "{what} within {within:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn one_of_two_candidates_leads_and_the_other_takes_over_when_it_resigns() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let ttl = Duration::from_millis(600);
        let a = Leadership::campaign(store.clone(), record("a"), ttl);
        until("a leads", Duration::from_secs(2), || a.is_leader());
        let b = Leadership::campaign(store.clone(), record("b"), ttl);
        until("b knows a leads", Duration::from_secs(2), || {
            b.leader() == Some(record("a"))
        });
        // Several renewals later a still leads and b still follows.
        std::thread::sleep(ttl * 2);
        assert!(a.is_leader() && !b.is_leader());
        a.resign();
        assert!(!a.is_leader());
        until("b leads", Duration::from_secs(1), || b.is_leader());
        let stored: LeaderRecord =
            serde_json::from_slice(&store.get(LEADER_KEY).unwrap().unwrap().value).unwrap();
        assert_eq!(stored, record("b"));
        b.resign();
    }

    #[test]
    fn a_leader_whose_key_is_taken_away_steps_down() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let a = Leadership::campaign(store.clone(), record("a"), Duration::from_millis(400));
        until("a leads", Duration::from_secs(2), || a.is_leader());
        let mut told = a.subscribe();
        store
            .put(LEADER_KEY, &serde_json::to_vec(&record("x")).unwrap())
            .unwrap();
        until("a steps down", Duration::from_millis(400), || {
            !a.is_leader()
        });
        assert!(!*told.borrow_and_update());
        assert_ne!(a.leader(), Some(record("a")));
        a.resign();
    }

    #[test]
    fn the_only_controller_on_redb_always_leads() {
        let l = Leadership::always("http://127.0.0.1:1239");
        assert!(l.is_leader());
        assert_eq!(l.leader().unwrap().url, "http://127.0.0.1:1239");
        l.resign();
        assert!(l.is_leader());
    }
}
