//! Replica choice: least outstanding requests over two random choices, and
//! ejection of failing replicas with back-off.
//!
//! Each replica's [`ReplicaState`] outlives endpoint-table updates (it is
//! keyed by deployment, base and address), so a new table keeps the counts
//! and ejections of the replicas it still lists.
//!
//! A replica is ejected on each failure to connect or a reset before any
//! response byte, for the ejection time, doubled for every ejection in a
//! row (up to the maximum); one answered request clears the streak. When
//! every otherwise eligible replica is ejected the gateway uses them anyway
//! (an ejection is a guess; a 503 would be a certainty).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::table::{Deployment, Replica};

/// Live state of one replica at this gateway.
#[derive(Debug)]
pub struct ReplicaState {
    /// Requests sent to it and not yet answered in full.
    outstanding: AtomicU64,
    /// Ejections in a row (back-off exponent).
    streak: AtomicU32,
    /// Ejected until this many ms after `epoch`.
    ejected_until_ms: AtomicU64,
    epoch: Instant,
}

impl ReplicaState {
    /// A replica with nothing outstanding, not ejected.
    pub fn new(epoch: Instant) -> Self {
        Self {
            outstanding: AtomicU64::new(0),
            streak: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            epoch,
        }
    }

    /// Requests outstanding on it.
    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts a request until the returned guard is dropped.
    pub fn begin(self: &std::sync::Arc<Self>) -> Outstanding {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(self.clone())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether it is ejected now.
    pub fn ejected(&self) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > self.now_ms()
    }

    /// It answered: the ejection streak ends.
    pub fn succeeded(&self) {
        if self.streak.load(Ordering::Relaxed) != 0 {
            self.streak.store(0, Ordering::Relaxed);
        }
    }

    /// It failed before answering: eject it for `base` × 2^streak, at most
    /// `max`. Returns how long.
    pub fn failed(&self, base: Duration, max: Duration) -> Duration {
        let streak = self.streak.fetch_add(1, Ordering::Relaxed).min(16);
        let time = base.saturating_mul(1 << streak).min(max);
        self.ejected_until_ms
            .store(self.now_ms() + time.as_millis() as u64, Ordering::Relaxed);
        time
    }
}

/// One outstanding request on a replica; dropping it ends the count.
#[derive(Debug)]
pub struct Outstanding(std::sync::Arc<ReplicaState>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why no replica can take a request (said in the 503).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoReplica {
    /// The deployment has no replica placed.
    NoneScheduled,
    /// None on a base of the request's traffic cell.
    NoneInCell(String),
    /// None runs the version the rules chose.
    NoneOfVersion(String),
    /// None ready (their bases have not installed it, or are NotReady).
    NoneReady,
    /// All draining (being removed).
    AllDraining,
    /// The one left failed and there is no other to retry on.
    NoOtherReplica,
}

impl std::fmt::Display for NoReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoneScheduled => f.write_str("none scheduled (no base runs a replica)"),
            Self::NoneInCell(cell) => write!(f, "none in traffic cell {cell}"),
            Self::NoneOfVersion(v) => write!(f, "none runs version {v}"),
            Self::NoneReady => f.write_str("none ready"),
            Self::AllDraining => f.write_str("all draining"),
            Self::NoOtherReplica => f.write_str("no other replica to retry on"),
        }
    }
}

/// `k=v,k=v` of a cell selector.
pub fn cell_label(cell: &BTreeMap<String, String>) -> String {
    cell.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Picks a replica of `deployment` for a request that the rules sent to
/// `version` (`None`: any) and `cell` (`None`: any base), never one whose
/// address is in `exclude` (the replicas a retry comes from).
pub fn pick<'a>(
    deployment: &'a Deployment,
    version: Option<&str>,
    cell: Option<&BTreeMap<String, String>>,
    exclude: &[&str],
) -> Result<&'a Replica, NoReplica> {
    let mut candidates: Vec<&Replica> = deployment.replicas.iter().collect();
    if candidates.is_empty() {
        return Err(NoReplica::NoneScheduled);
    }
    let mut narrow = |keep: &dyn Fn(&Replica) -> bool, why: NoReplica| {
        candidates.retain(|r| keep(r));
        if candidates.is_empty() {
            Err(why)
        } else {
            Ok(())
        }
    };
    if let Some(cell) = cell {
        narrow(
            &|r| cell.iter().all(|(k, v)| r.labels.get(k) == Some(v)),
            NoReplica::NoneInCell(cell_label(cell)),
        )?;
    }
    if let Some(version) = version {
        narrow(
            &|r| r.versions.iter().any(|v| v == version),
            NoReplica::NoneOfVersion(version.to_string()),
        )?;
    }
    narrow(&|r| r.ready, NoReplica::NoneReady)?;
    narrow(&|r| !r.draining, NoReplica::AllDraining)?;
    if !exclude.is_empty() {
        narrow(
            &|r| !exclude.contains(&r.address.as_str()),
            NoReplica::NoOtherReplica,
        )?;
    }
    if candidates.iter().any(|r| !r.state.ejected()) {
        candidates.retain(|r| !r.state.ejected());
    }
    Ok(two_choices(&candidates))
}

/// Of two distinct random candidates, the one with fewer outstanding requests.
fn two_choices<'a>(candidates: &[&'a Replica]) -> &'a Replica {
    let n = candidates.len();
    if n == 1 {
        return candidates[0];
    }
    let i = fastrand::usize(..n);
    let j = (i + 1 + fastrand::usize(..n - 1)) % n;
    let (a, b) = (candidates[i], candidates[j]);
    if b.state.outstanding() < a.state.outstanding() {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn replica(base: &str, version: &str, group: &str) -> Replica {
        Replica {
            base: base.into(),
            address: format!("{base}:80"),
            versions: vec![version.into()],
            ready: true,
            draining: false,
            labels: [("group".to_string(), group.to_string())].into(),
            state: Arc::new(ReplicaState::new(Instant::now())),
            upstream: Arc::new(crate::upstream::Upstream::new(
                &format!("{base}:80"),
                Default::default(),
            )),
        }
    }

    fn deployment(replicas: Vec<Replica>) -> Deployment {
        Deployment {
            name: "d".into(),
            module: "m".into(),
            rules: None,
            replicas,
            stats: Default::default(),
            series: Default::default(),
        }
    }

    #[test]
    fn the_less_loaded_of_two_wins_and_filters_say_why_none_is_left() {
        let d = deployment(vec![replica("a", "1", "gold"), replica("b", "2", "std")]);
        let _busy: Vec<_> = (0..5).map(|_| d.replicas[0].state.begin()).collect();
        for _ in 0..20 {
            assert_eq!(pick(&d, None, None, &[]).unwrap().base, "b");
        }
        let gold: BTreeMap<String, String> = [("group".into(), "gold".into())].into();
        assert_eq!(pick(&d, None, Some(&gold), &[]).unwrap().base, "a");
        assert_eq!(pick(&d, Some("2"), None, &[]).unwrap().base, "b");
        assert_eq!(
            pick(&d, Some("2"), Some(&gold), &[]).unwrap_err(),
            NoReplica::NoneOfVersion("2".into())
        );
        assert_eq!(
            pick(&d, Some("2"), None, &["b:80"]).unwrap_err(),
            NoReplica::NoOtherReplica
        );
        // Several excluded (a request tried on replicas gone from their bases).
        let three = deployment(vec![
            replica("a", "1", "std"),
            replica("b", "1", "std"),
            replica("c", "1", "std"),
        ]);
        for _ in 0..20 {
            assert_eq!(
                pick(&three, None, None, &["a:80", "c:80"]).unwrap().base,
                "b"
            );
        }
        assert_eq!(
            pick(&three, None, None, &["a:80", "b:80", "c:80"]).unwrap_err(),
            NoReplica::NoOtherReplica
        );
        assert_eq!(
            pick(&deployment(vec![]), None, None, &[]).unwrap_err(),
            NoReplica::NoneScheduled
        );
        let mut draining = replica("c", "1", "std");
        draining.draining = true;
        assert_eq!(
            pick(&deployment(vec![draining]), None, None, &[]).unwrap_err(),
            NoReplica::AllDraining
        );
    }

    #[test]
    fn ejection_backs_off_and_all_ejected_still_serve() {
        let d = deployment(vec![replica("a", "1", "x"), replica("b", "1", "x")]);
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(250);
        assert_eq!(d.replicas[0].state.failed(base, max), base);
        assert_eq!(d.replicas[0].state.failed(base, max), base * 2);
        assert_eq!(d.replicas[0].state.failed(base, max), max);
        for _ in 0..20 {
            assert_eq!(pick(&d, None, None, &[]).unwrap().base, "b");
        }
        d.replicas[1].state.failed(base, max);
        // Both ejected: still served.
        assert!(pick(&d, None, None, &[]).is_ok());
        d.replicas[0].state.succeeded();
        assert_eq!(d.replicas[0].state.failed(base, max), base, "streak ended");
    }
}
