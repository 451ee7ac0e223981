//! The controller's fleet features with real bases: peer deployments that
//! follow bases joining and leaving, scale-to-zero and activation, an
//! autoscaler driven by a gateway's load report, the buffer group that
//! takes its scale-out when a group is full, and priorities between
//! deployments competing for a full group.

use std::time::{Duration, Instant};

use berth_example_modules::HELLO;

use crate::controller::{ControllerProcess, eventually, has_line, metric, serves};
use crate::support::{BaseProcess, stdout, work_dir};

/// One HTTP request to `addr` (`host:port`); the status and the body.
fn call(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// `berth get deployments -o json`, the one named `name`.
fn deployment(ctl: &ControllerProcess, name: &str) -> serde_json::Value {
    let all: serde_json::Value =
        serde_json::from_str(&stdout(ctl.berth(&["get", "deployments", "-o", "json"]))).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|d| d["manifest"]["metadata"]["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no deployment {name} in {all}"))
}

/// Waits (up to 15 s) until `check` holds.
fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_peer_deployment_runs_on_every_matching_base_as_bases_join_and_leave() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &["--heartbeat-timeout", "1s"]);
    let gold = |name: &str| ctl.base(name, "200ms", &["--labels", "group=gold"]);
    let mut bases: Vec<Option<BaseProcess>> = vec![Some(gold("a")), Some(gold("b"))];
    let other = ctl.base("o", "200ms", &["--labels", "group=other"]);
    let serving = |bases: &[Option<BaseProcess>]| {
        bases
            .iter()
            .flatten()
            .filter(|b| serves(&b.ingress, "/hello"))
            .count()
    };
    let applied = ctl.apply(
        work.path(),
        "hello",
        "1.0.0",
        HELLO,
        None,
        "replicas: all\n  baseSelector: { group: gold }",
    );
    assert!(applied.contains("created"), "{applied}");
    eventually("gold bases serving hello", 2, || serving(&bases));
    assert!(!serves(&other.ingress, "/hello"));
    until("all (2) in get deployments", || {
        stdout(ctl.berth(&["get", "deployments"])).contains("all (2)")
    });

    // A gold base joins: it gets a replica, with no apply.
    bases.push(Some(gold("c")));
    eventually("gold bases serving hello after c joined", 3, || {
        serving(&bases)
    });
    until("all (3)", || {
        ctl.describe("hello")
            .contains("all (3) desired, 3 ready, 3 updated, 0 unschedulable")
    });
    has_line(
        &stdout(ctl.berth(&["get", "deployments"])),
        &["hello", "1.0.0", "3/3", "all (3)"],
    );

    // One leaves (killed): the peer shrinks with it; nothing is unschedulable.
    bases[0] = None;
    until("all (2) after a left", || {
        ctl.describe("hello")
            .contains("all (2) desired, 2 ready, 2 updated, 0 unschedulable")
    });
    assert_eq!(serving(&bases), 2);
    assert!(!serves(&other.ingress, "/hello"));
    let described = ctl.describe("hello");
    has_line(
        &described,
        &["Normal", "Scheduled", "replica placed on base c"],
    );
    has_line(&described, &["Warning", "BaseNotReady", "base a"]);
    drop(ctl);
}

#[test]
fn an_idle_deployment_scales_to_zero_and_activation_brings_it_back() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &[]);
    let base = ctl.base("a", "200ms", &["--labels", "group=gold"]);
    ctl.apply(
        work.path(),
        "hello",
        "1.0.0",
        HELLO,
        None,
        "replicas: 1\n  baseSelector: { group: gold }\n  scaleToZero: { idleAfter: 1s }",
    );
    // It serves, then with no gateway reporting load it is idle: after 1 s
    // it has no replica, and says so (not as a failure).
    until("serving", || serves(&base.ingress, "/hello"));
    until("scaled to zero", || {
        deployment(&ctl, "hello")["status"]["scaledToZero"] == true
    });
    until("uninstalled", || !serves(&base.ingress, "/hello"));
    let described = ctl.describe("hello");
    assert!(
        described.contains("0 (scaled to zero) desired, 0 ready"),
        "{described}"
    );
    has_line(&described, &["Available", "True", "ScaledToZero"]);
    has_line(
        &described,
        &[
            "Scaled:",
            "0 replica(s) by the controller: scaled to zero while idle",
        ],
    );
    has_line(&described, &["ReplicaFailure", "False"]);
    has_line(
        &described,
        &["Normal", "ScaledToZero", "for 1s", "replicas 1 → 0"],
    );
    has_line(
        &stdout(ctl.berth(&["get", "deployments"])),
        &["hello", "0/0", "0 (scaled to zero)"],
    );

    // A gateway holds a request and asks for a replica; it keeps reporting
    // the held request, as a gateway does, until the replica serves.
    let reporting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reporter = {
        let (addr, reporting) = (ctl.addr.clone(), reporting.clone());
        std::thread::spawn(move || {
            while reporting.load(std::sync::atomic::Ordering::Relaxed) {
                let report =
                    r#"{"deployments": {"hello": {"in_flight": 0, "rps": 0.0, "held": 1}}}"#;
                assert_eq!(call(&addr, "PUT", "/v1/gateways/gw-1/load", report).0, 200);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let activated = Instant::now();
    let (status, body) = call(&ctl.addr, "POST", "/v1/deployments/hello/activate", "");
    assert_eq!((status, body.as_str()), (202, r#"{"replicas":1}"#));
    // Polled tightly: the time is printed (debug build, one base).
    while !serves(&base.ingress, "/hello") {
        assert!(
            activated.elapsed() < Duration::from_secs(15),
            "not serving 15 s after activation"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!("activation to serving: {:?}", activated.elapsed());
    // Asked again while it has its replica: 200, nothing changes.
    let (status, body) = call(&ctl.addr, "POST", "/v1/deployments/hello/activate", "");
    assert_eq!((status, body.as_str()), (200, r#"{"replicas":1}"#));
    let described = ctl.describe("hello");
    has_line(&described, &["Normal", "Activated", "replicas 0 → 1"]);
    assert!(
        described
            .contains("Load:        0 in flight, 0.0 requests/s, 1 held (1 gateway(s) reporting)"),
        "{described}"
    );
    assert_eq!(
        ctl.metric("berth_controller_load_held", &[("deployment", "hello")]),
        1.0
    );
    // The gateway goes quiet: idle again, zero again.
    reporting.store(false, std::sync::atomic::Ordering::Relaxed);
    reporter.join().unwrap();
    until("scaled to zero again", || {
        deployment(&ctl, "hello")["status"]["scaledToZero"] == true
    });
    drop(ctl);
}

#[test]
fn a_load_report_above_target_scales_an_autoscaled_deployment_up() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &[]);
    let bases: Vec<BaseProcess> = ["a", "b", "c"]
        .iter()
        .map(|n| ctl.base(n, "200ms", &[]))
        .collect();
    let serving = || {
        bases
            .iter()
            .filter(|b| serves(&b.ingress, "/hello"))
            .count()
    };
    ctl.apply(
        work.path(),
        "hello",
        "1.0.0",
        HELLO,
        None,
        "autoscale: { minReplicas: 1, maxReplicas: 3, target: { concurrency: 10 }, scaleDownWindow: 1m }",
    );
    eventually("bases serving hello", 1, serving);
    // 25 in flight at one gateway: above twice what 1 replica carries at
    // target 10, so the autoscaler panics and goes to ceil(25 / 10) = 3.
    let report = r#"{"deployments": {"hello": {"in_flight": 25, "rps": 100.0, "held": 0}}}"#;
    assert_eq!(
        call(&ctl.addr, "PUT", "/v1/gateways/gw-1/load", report).0,
        200
    );
    eventually("bases serving hello after the load report", 3, serving);
    let described = ctl.describe("hello");
    has_line(
        &described,
        &[
            "Autoscaled",
            "observed 25.0 in flight, target 10 per replica (panic",
            "1 → 3",
        ],
    );
    assert!(
        described.contains("Autoscale:   1-3 replicas, target concurrency 10 per replica"),
        "{described}"
    );
    // get deployments: current/desired/min/max and the last decision.
    until("3 of 3 ready in get deployments", || {
        stdout(ctl.berth(&["get", "deployments"]))
            .lines()
            .any(|l| l.starts_with("hello") && l.contains("3/3") && l.contains("3 (autoscale 1-3)"))
    });
    let listed = stdout(ctl.berth(&["get", "deployments"]));
    has_line(&listed, &["REPLICAS", "CUR/DES/MIN/MAX", "LAST SCALING"]);
    has_line(
        &listed,
        &[
            "hello",
            "3 (autoscale 1-3)",
            "3/3/1/3",
            "ago: observed 25.0 in flight, target 10 per replica (panic",
            "1 → 3",
        ],
    );
    drop(ctl);
}

/// One gateway's load report for `hello`: `in_flight` requests.
fn report_in_flight(ctl: &ControllerProcess, in_flight: u32) {
    let report = format!(
        r#"{{"deployments": {{"hello": {{"in_flight": {in_flight}, "rps": 0.0, "held": 0}}}}}}"#
    );
    assert_eq!(
        call(&ctl.addr, "PUT", "/v1/gateways/gw-1/load", &report).0,
        200
    );
}

/// A series of a base's `/metrics`, an absent one counting 0.
fn base_count(base: &BaseProcess, name: &str, outcome: &str) -> f64 {
    f64::max(0.0, metric(&base.ops, name, &[("outcome", outcome)]))
}

#[test]
fn a_full_group_scales_onto_a_warm_buffer_base_and_scale_in_empties_it_first() {
    let work = work_dir();
    // Bases compile for themselves: only warming can make the buffer
    // base's install a cache hit.
    let ctl = ControllerProcess::start(work.path(), &["--no-code"]);
    let own = ctl.base("a", "200ms", &["--labels", "group=gold"]);
    let buffer = ctl.base(
        "buf",
        "200ms",
        &["--labels", "group=gold,berth.dev/role=buffer"],
    );
    ctl.apply(
        work.path(),
        "hello",
        "1.0.0",
        HELLO,
        None,
        "baseSelector: { group: gold }\n  autoscale: { minReplicas: 1, maxReplicas: 2, target: { concurrency: 10 }, scaleDownWindow: 1s }",
    );
    until("serving on its own group", || {
        serves(&own.ingress, "/hello")
    });
    // The buffer base compiles the code without serving it.
    until("the buffer base warmed hello", || {
        base_count(&buffer, "berth_code_warmed_total", "compiled") == 1.0
    });
    assert!(!serves(&buffer.ingress, "/hello"));
    assert_eq!(
        base_count(&buffer, "berth_compile_cache_lookups_total", "miss"),
        0.0
    );
    let bases = stdout(ctl.berth(&["get", "bases"]));
    has_line(&bases, &["NAME", "STATE", "ROLE"]);
    has_line(&bases, &["a", "Ready", "group"]);
    has_line(&bases, &["buf", "Ready", "buffer"]);

    // 25 in flight wants 2 replicas; group gold has one base (one replica
    // each), so the second goes to the buffer base, installed from cache.
    report_in_flight(&ctl, 25);
    let reported = Instant::now();
    until("the buffer base serving hello", || {
        serves(&buffer.ingress, "/hello")
    });
    // (Polled every 100 ms; the decision comes within one 500 ms tick.)
    eprintln!(
        "load report to a buffer replica serving: {:?}",
        reported.elapsed()
    );
    assert_eq!(
        (
            base_count(&buffer, "berth_compile_cache_lookups_total", "hit"),
            base_count(&buffer, "berth_compile_cache_lookups_total", "miss"),
        ),
        (1.0, 0.0)
    );
    has_line(
        &ctl.describe("hello"),
        &["Normal", "Buffered", "group full", "base buf"],
    );

    // Load gone: after the 1 s window it scales in to 1, and the replica
    // that goes is the buffer base's.
    report_in_flight(&ctl, 0);
    until("the buffer base emptied", || {
        !serves(&buffer.ingress, "/hello")
    });
    assert!(serves(&own.ingress, "/hello"));
    until("1 of 1 in get deployments", || {
        stdout(ctl.berth(&["get", "deployments"]))
            .lines()
            .any(|l| l.starts_with("hello") && l.contains("1/1"))
    });
    drop(ctl);
}

#[test]
fn a_critical_deployment_evicts_a_besteffort_one_from_a_full_group_until_room_returns() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &[]);
    // One base with room for one module: the group is full at once.
    let base = ctl.base(
        "a",
        "200ms",
        &["--labels", "group=gold", "--capacity-modules", "1"],
    );
    let group = "replicas: 1\n  baseSelector: { group: gold }";
    ctl.apply(
        work.path(),
        "low",
        "1.0.0",
        HELLO,
        None,
        &format!("{group}\n  priority: besteffort"),
    );
    until("low serving", || serves(&base.ingress, "/low"));
    // A critical one takes its room.
    ctl.apply(
        work.path(),
        "high",
        "1.0.0",
        HELLO,
        None,
        &format!("{group}\n  priority: critical"),
    );
    until("high serving, low evicted", || {
        serves(&base.ingress, "/high") && !serves(&base.ingress, "/low")
    });
    has_line(
        &ctl.describe("low"),
        &[
            "Warning",
            "Evicted",
            "replica on base a evicted: high (critical) took the room of this besteffort deployment",
        ],
    );
    has_line(
        &ctl.describe("high"),
        &[
            "Normal",
            "Preempted",
            "base a full: took the room of low (besteffort, below this critical deployment)",
        ],
    );
    assert!(ctl.describe("low").contains("1 unschedulable"));
    has_line(&ctl.describe("high"), &["Priority:", "critical"]);

    // Room returns: the evicted replica comes back, with no apply.
    stdout(ctl.berth(&["delete", "deployment", "high"]));
    until("low serving again", || serves(&base.ingress, "/low"));
    until("low ready again", || {
        ctl.describe("low")
            .contains("1 desired, 1 ready, 1 updated, 0 unschedulable")
    });
    drop(ctl);
}
