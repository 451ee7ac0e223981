//! The autoscaler's decision: how many replicas a deployment with
//! `spec.autoscale` should run, from the load the gateways report.
//!
//! [`decide`] is a pure function of the policy, the replicas now, one
//! observation and the time, plus the little history it keeps in
//! [`State`]; [`crate::scaler`] calls it every [`TICK`] (and when a load
//! report arrives) for each autoscaled deployment and turns each decision
//! into a change and an event carrying its inputs.
//!
//! - `desired = ceil(observed / target)`, kept within `[minReplicas, maxReplicas]`;
//!   `observed` is the deployment's total (in flight plus held for a
//!   concurrency target, requests per second for an rps target), `target`
//!   what one replica should carry.
//! - **Panic**: an observation above twice what the current replicas carry
//!   at target (`observed > 2 × target × replicas`; any load at 0
//!   replicas) scales up at once to its desired count. For a scale-up
//!   window after that, each observation that wants more scales up at once
//!   too: a step in the load reaches the autoscaler over two reports (the
//!   first covers only part of its interval), and the second is rarely
//!   twice the target again. While panicking the autoscaler never scales
//!   down; panic ends when the scale-up window's average fits the
//!   replicas at target again.
//! - **Scale up**: the average over `scaleUpWindow` wants more replicas.
//! - **Scale down**: only once every observation over a whole
//!   `scaleDownWindow` wanted fewer replicas, and then to the most any of
//!   them wanted (a stabilisation window, as Kubernetes' HPA has).
//! - A replica count outside `[min, max]` (the spec changed) is brought
//!   inside at once.

use std::collections::VecDeque;
use std::time::Duration;

use berth_api::manifest::{Autoscale, Metric};

/// How often the autoscaler decides.
pub const TICK: Duration = Duration::from_millis(500);

/// A deployment's autoscale policy, from its spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Fewest replicas.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// What the target measures.
    pub metric: Metric,
    /// The load one replica should carry.
    pub target: f64,
    /// The window averaged to scale up.
    pub up_window: Duration,
    /// How long load must stay low before scaling down.
    pub down_window: Duration,
}

impl Policy {
    /// The policy `spec.autoscale` describes.
    pub fn of(a: &Autoscale) -> Self {
        let (metric, target) = a.target.get();
        Self {
            min: a.min_replicas,
            max: a.max_replicas,
            metric,
            target,
            up_window: a.scale_up_window(),
            down_window: a.scale_down_window(),
        }
    }

    /// `ceil(observed / target)` within `[min, max]`.
    pub fn desired(&self, observed: f64) -> u32 {
        let raw = (observed.max(0.0) / self.target).ceil();
        // `as` saturates: a huge observation is simply max.
        (raw as u32).clamp(self.min, self.max)
    }
}

/// What one deployment's autoscaler remembers between ticks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// Observations within the scale-up window: (ms, observed).
    samples: VecDeque<(u64, f64)>,
    /// Since when every observation wanted fewer replicas, and the most
    /// any of them wanted.
    below: Option<(u64, u32)>,
    /// In panic mode.
    panicking: bool,
    /// When an observation was last above twice the target (ms).
    panicked_at: Option<u64>,
}

impl State {
    /// Whether the autoscaler is in panic mode.
    pub fn panicking(&self) -> bool {
        self.panicking
    }
}

/// Which rule made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Panic: one observation above twice the target.
    Panic,
    /// Within a scale-up window of a panic, an observation wanting more.
    AfterPanic(Duration),
    /// The scale-up window's average.
    Up(Duration),
    /// A whole scale-down window below target.
    Down(Duration),
    /// The replicas were outside `[min, max]`.
    Bounds,
}

/// One decision, with its inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Replicas before.
    pub from: u32,
    /// Replicas after.
    pub to: u32,
    /// The load the decision went by (the latest observation, or the
    /// scale-up window's average).
    pub observed: f64,
    /// The target per replica.
    pub target: f64,
    /// What they measure.
    pub metric: Metric,
    /// The rule.
    pub window: Window,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.metric {
            Metric::Concurrency => "in flight",
            Metric::Rps => "requests/s",
        };
        let window = match self.window {
            Window::Panic => "panic: above twice the target, at once".to_string(),
            Window::AfterPanic(w) => format!(
                "within the scale-up window {} of a panic, at once",
                humantime::format_duration(w)
            ),
            Window::Up(w) => format!("scale-up window {}", humantime::format_duration(w)),
            Window::Down(w) => format!(
                "below target for the scale-down window {}",
                humantime::format_duration(w)
            ),
            Window::Bounds => "brought within minReplicas..maxReplicas".to_string(),
        };
        write!(
            f,
            "observed {:.1} {unit}, target {} per replica ({window}): {} → {}",
            self.observed, self.target, self.from, self.to
        )
    }
}

/// Decides the replicas of a deployment that runs `current` now, given the
/// load `observed` at `now_ms`; `None` keeps them. See the module docs.
pub fn decide(
    policy: &Policy,
    state: &mut State,
    current: u32,
    observed: f64,
    now_ms: u64,
) -> Option<Decision> {
    let observed = observed.max(0.0);
    let up_ms = policy.up_window.as_millis() as u64;
    state.samples.push_back((now_ms, observed));
    while state
        .samples
        .front()
        .is_some_and(|(at, _)| now_ms.saturating_sub(*at) > up_ms)
    {
        state.samples.pop_front();
    }
    let average =
        state.samples.iter().map(|(_, v)| v).sum::<f64>() / state.samples.len().max(1) as f64;
    let decision = |to: u32, observed: f64, window: Window| Decision {
        from: current,
        to,
        observed,
        target: policy.target,
        metric: policy.metric,
        window,
    };
    if current < policy.min || current > policy.max {
        state.below = None;
        return Some(decision(
            current.clamp(policy.min, policy.max),
            observed,
            Window::Bounds,
        ));
    }
    let carried = f64::from(current) * policy.target;
    if observed > 2.0 * carried {
        state.panicking = true;
        state.panicked_at = Some(now_ms);
        state.below = None;
        let to = policy.desired(observed);
        return (to > current).then(|| decision(to, observed, Window::Panic));
    }
    if state
        .panicked_at
        .is_some_and(|at| now_ms.saturating_sub(at) <= up_ms)
    {
        let to = policy.desired(observed);
        if to > current {
            state.below = None;
            return Some(decision(to, observed, Window::AfterPanic(policy.up_window)));
        }
    }
    if state.panicking && average <= carried {
        state.panicking = false;
    }
    let up = policy.desired(average);
    if up > current {
        state.below = None;
        return Some(decision(up, average, Window::Up(policy.up_window)));
    }
    let down = policy.desired(observed);
    if state.panicking || down >= current {
        state.below = None;
        return None;
    }
    let (since, most) = state.below.get_or_insert((now_ms, down));
    *most = (*most).max(down);
    if now_ms.saturating_sub(*since) >= policy.down_window.as_millis() as u64 {
        let to = *most;
        state.below = None;
        return Some(decision(to, observed, Window::Down(policy.down_window)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// min 1, max 10, target 10 (concurrency), up 2 s, down 10 s.
    fn policy() -> Policy {
        Policy {
            min: 1,
            max: 10,
            metric: Metric::Concurrency,
            target: 10.0,
            up_window: Duration::from_secs(2),
            down_window: Duration::from_secs(10),
        }
    }

    /// Feeds `observed` every 500 ms from `start` for `ticks` ticks,
    /// applying each decision; returns the replicas and the decisions.
    fn run(
        p: &Policy,
        s: &mut State,
        mut current: u32,
        observed: f64,
        start: u64,
        ticks: u64,
    ) -> (u32, Vec<Decision>) {
        let mut decisions = Vec::new();
        for i in 0..ticks {
            if let Some(d) = decide(p, s, current, observed, start + i * 500) {
                current = d.to;
                decisions.push(d);
            }
        }
        (current, decisions)
    }

    #[test]
    fn desired_is_the_ceiling_of_observed_over_target_within_bounds() {
        let p = policy();
        assert_eq!(
            [0.0, 1.0, 10.0, 10.1, 45.0, 1e12, -3.0].map(|o| p.desired(o)),
            [1, 1, 1, 2, 5, 10, 1]
        );
        let zero = Policy { min: 0, ..p };
        assert_eq!(zero.desired(0.0), 0);
    }

    #[test]
    fn a_load_at_target_changes_nothing() {
        let (replicas, decisions) = run(&policy(), &mut State::default(), 3, 30.0, 0, 100);
        assert_eq!((replicas, decisions), (3, vec![]));
    }

    #[test]
    fn above_twice_the_target_panics_and_scales_up_at_once() {
        let p = policy();
        let mut s = State::default();
        // 2 replicas carry 20 at target; 45 is above twice that (40).
        let d = decide(&p, &mut s, 2, 45.0, 0).unwrap();
        assert_eq!((d.from, d.to, d.window), (2, 5, Window::Panic));
        assert!(s.panicking());
        assert_eq!(
            d.to_string(),
            "observed 45.0 in flight, target 10 per replica (panic: above twice the target, at once): 2 → 5"
        );
        // Far above the maximum: max, no more.
        let d = decide(&p, &mut State::default(), 1, 5000.0, 0).unwrap();
        assert_eq!(d.to, 10);
    }

    #[test]
    fn panic_never_scales_down_until_the_window_average_fits() {
        let p = policy();
        let mut s = State::default();
        // 300 in flight: 10 replicas (the max) at once, still in panic
        // (10 carry 100 at target, and 300 is above twice that).
        assert_eq!(decide(&p, &mut s, 2, 300.0, 0).unwrap().to, 10);
        assert!(s.panicking());
        // The load drops to 5 (wants 1). While the 2 s window still
        // averages above what 10 carry, panic holds: no scale-down window
        // starts. It ends at 1.5 s (average 78.75).
        assert_eq!(decide(&p, &mut s, 10, 5.0, 500), None);
        assert!(s.panicking());
        assert_eq!(decide(&p, &mut s, 10, 5.0, 1_000), None);
        assert!(s.panicking());
        let (replicas, decisions) = run(&p, &mut s, 10, 5.0, 1_500, 20);
        assert!(!s.panicking());
        assert_eq!((replicas, decisions.len()), (10, 0), "down before 11.5 s");
        // A whole scale-down window after panic ended: down to 1.
        let d = decide(&p, &mut s, 10, 5.0, 11_500).unwrap();
        assert_eq!((d.to, d.window), (1, Window::Down(Duration::from_secs(10))));
    }

    #[test]
    fn a_step_seen_over_two_reports_reaches_its_count_at_the_second() {
        let p = Policy {
            metric: Metric::Rps,
            target: 300.0,
            ..policy()
        };
        let mut s = State::default();
        // 50/s on 1 replica for a while; then a step to 1,500/s whose
        // first report covers half its interval (775/s: panic, 1 → 3)…
        let (replicas, _) = run(&p, &mut s, 1, 50.0, 0, 8);
        let d = decide(&p, &mut s, replicas, 775.0, 4_000).unwrap();
        assert_eq!((d.to, d.window), (3, Window::Panic));
        // …and the next, a second later, the whole step: 1,500/s is not
        // twice what 3 replicas carry, and the window's average (with the
        // 50s before the step) wants fewer, yet it goes to 5 at once.
        let d = decide(&p, &mut s, 3, 1500.0, 5_000).unwrap();
        assert_eq!((d.from, d.to), (3, 5));
        assert_eq!(
            d.to_string(),
            "observed 1500.0 requests/s, target 300 per replica (within the scale-up window 2s of a panic, at once): 3 → 5"
        );
        // Past the scale-up window of the panic, the window's average rules again.
        let mut s = State::default();
        decide(&p, &mut s, 1, 775.0, 0).unwrap();
        run(&p, &mut s, 3, 800.0, 500, 5);
        assert_eq!(
            decide(&p, &mut s, 3, 1000.0, 3_000),
            None,
            "average 850 fits 3"
        );
    }

    #[test]
    fn with_reports_every_250_ms_a_step_is_decided_within_two_and_the_windows_hold() {
        // The gateway's default interval: one observation per report.
        let p = Policy {
            metric: Metric::Rps,
            target: 300.0,
            ..policy()
        };
        let mut s = State::default();
        let mut current = 1;
        for i in 0..16 {
            assert_eq!(decide(&p, &mut s, current, 50.0, i * 250), None);
        }
        // The step lands 100 ms before a report: that report covers 40%
        // of it (620/s, above twice one replica's 300: panic, 1 → 3), the
        // next the whole step (1 → 5 within 500 ms of the step).
        let d = decide(&p, &mut s, current, 50.0 * 0.6 + 1500.0 * 0.4, 4_000).unwrap();
        assert_eq!((d.to, d.window), (3, Window::Panic));
        current = d.to;
        let d = decide(&p, &mut s, current, 1500.0, 4_250).unwrap();
        assert_eq!((d.to, d.window), (5, Window::AfterPanic(p.up_window)));
        current = d.to;
        // Steady at 1,500/s: nothing more, for as long as it lasts.
        for i in 0..40 {
            assert_eq!(decide(&p, &mut s, current, 1500.0, 4_500 + i * 250), None);
        }
        // Back to 50/s at 14.5 s: no scale-down until a whole 10 s
        // scale-down window of 250 ms observations wanted fewer.
        let fell = 14_500;
        let mut down = None;
        for i in 0..60 {
            if let Some(d) = decide(&p, &mut s, current, 50.0, fell + i * 250) {
                down = Some((i * 250, d));
                break;
            }
        }
        let (after, d) = down.expect("a scale-down");
        assert_eq!(
            (after, d.to, d.window),
            (10_000, 1, Window::Down(p.down_window))
        );
    }

    #[test]
    fn scale_up_follows_the_window_average_without_panic() {
        let p = policy();
        let mut s = State::default();
        // 3 replicas carry 30; 35 is above target but below panic (60).
        let (replicas, decisions) = run(&p, &mut s, 3, 35.0, 0, 1);
        assert_eq!(replicas, 4);
        assert_eq!(decisions[0].window, Window::Up(Duration::from_secs(2)));
        assert!(!s.panicking());
        // A short spike inside the window is averaged out (no panic: 55 < 80).
        let mut s = State::default();
        run(&p, &mut s, 4, 30.0, 0, 4);
        let d = decide(&p, &mut s, 4, 55.0, 2_000);
        assert_eq!(d, None, "30,30,30,30,55 averages 35: 4 replicas suffice");
    }

    #[test]
    fn scale_down_waits_a_whole_window_below_target_and_takes_its_peak() {
        let p = policy();
        let mut s = State::default();
        // 5 replicas, load 25 (wants 3): nothing for 10 s…
        let (replicas, decisions) = run(&p, &mut s, 5, 25.0, 0, 20);
        assert_eq!((replicas, decisions.len()), (5, 0));
        // …then down to 3, the most any observation in the window wanted.
        let d = decide(&p, &mut s, 5, 25.0, 10_000).unwrap();
        assert_eq!((d.to, d.window), (3, Window::Down(Duration::from_secs(10))));
        // A load back at target mid-window restarts it.
        let mut s = State::default();
        run(&p, &mut s, 5, 25.0, 0, 10);
        assert_eq!(decide(&p, &mut s, 5, 50.0, 5_000), None);
        let (replicas, _) = run(&p, &mut s, 5, 25.0, 5_500, 19);
        assert_eq!(replicas, 5, "scaled down before a whole window below");
        let (replicas, _) = run(&p, &mut s, 5, 25.0, 15_000, 2);
        assert_eq!(replicas, 3);
    }

    #[test]
    fn min_zero_scales_to_zero_after_the_window_and_any_load_brings_one_back() {
        let p = Policy { min: 0, ..policy() };
        let mut s = State::default();
        let (replicas, decisions) = run(&p, &mut s, 1, 0.0, 0, 21);
        assert_eq!((replicas, decisions.len()), (0, 1));
        // At zero replicas, any load is above twice what they carry.
        let d = decide(&p, &mut s, 0, 1.0, 20_000).unwrap();
        assert_eq!((d.from, d.to, d.window), (0, 1, Window::Panic));
    }

    #[test]
    fn replicas_outside_the_bounds_are_brought_inside_at_once() {
        let p = Policy {
            min: 2,
            max: 4,
            ..policy()
        };
        let d = decide(&p, &mut State::default(), 7, 0.0, 0).unwrap();
        assert_eq!((d.to, d.window), (4, Window::Bounds));
        let d = decide(&p, &mut State::default(), 1, 0.0, 0).unwrap();
        assert_eq!(d.to, 2);
    }

    #[test]
    fn an_rps_target_reads_requests_per_second() {
        let p = Policy {
            metric: Metric::Rps,
            target: 300.0,
            ..policy()
        };
        let d = decide(&p, &mut State::default(), 1, 1500.0, 0).unwrap();
        assert_eq!(d.to, 5);
        assert!(
            d.to_string()
                .contains("observed 1500.0 requests/s, target 300")
        );
    }
}
