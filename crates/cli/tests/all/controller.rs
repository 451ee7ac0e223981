//! `berth controller`, `apply`, `get`, `describe`, `delete` against a real
//! controller process.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_example_modules::HELLO;

use crate::support::{
    BaseProcess, berth, controller_command, failure, file_digest, spawn_controller, stdout,
    work_dir, write_deployment,
};

fn manifest(replicas: &str, version: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: orders }}\nspec:\n  module: {{ name: orders, version: {version}, artifact: \"file:{HELLO}\", digest: \"{}\" }}\n  replicas: {replicas}\n  baseSelector: {{ group: online }}\n",
        file_digest(HELLO)
    )
}

#[test]
fn apply_get_describe_delete_through_a_controller_process() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &[]);
    let file = work.path().join("orders.yaml");
    let file_s = file.to_str().unwrap();

    std::fs::write(&file, manifest("3", "1.0.0")).unwrap();
    assert_eq!(
        stdout(ctl.berth(&["apply", "-f", file_s])).trim(),
        "ModuleDeployment/orders created (generation 1)"
    );
    std::fs::write(&file, manifest("three", "1.0.0")).unwrap();
    let err = failure(ctl.berth(&["apply", "-f", file_s]));
    assert!(
        err.contains("spec.replicas: invalid type: string \"three\", expected u32"),
        "{err}"
    );
    std::fs::write(&file, manifest("3", "2.0.0")).unwrap();
    assert_eq!(
        stdout(ctl.berth(&["apply", "-f", file_s])).trim(),
        "ModuleDeployment/orders updated (generation 2)"
    );

    let table = stdout(ctl.berth(&["get", "deployments", "-o", "wide"]));
    assert!(
        table.contains("orders") && table.contains("2.0.0") && table.contains("group=online"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(ctl.berth(&["get", "deployments", "-o", "json"]))).unwrap();
    assert_eq!(json[0]["generation"], 2);
    let described = stdout(ctl.berth(&["describe", "deployment", "orders"]));
    // 1.0.0 never ran (no base matches), so there is nothing to go back to.
    assert!(
        described.contains("Module:      orders@2.0.0") && !described.contains("History:"),
        "{described}"
    );
    let err = failure(ctl.berth(&["rollout", "undo", "orders"]));
    assert!(err.contains("no earlier version to return to"), "{err}");
    assert!(stdout(ctl.berth(&["delete", "deployment", "orders"])).contains("deleted"));
    assert_eq!(
        stdout(ctl.berth(&["get", "deployments"])).trim(),
        "no deployments"
    );
    let err = failure(ctl.berth(&["describe", "deployment", "orders"]));
    assert!(err.contains("no ModuleDeployment named `orders`"), "{err}");
    // With the controller gone: one clear line.
    let after = ctl.berth(&["get", "deployments"]);
    drop(ctl);
    let err = failure(after);
    assert!(
        err.contains("no controller answers") && err.contains("berth controller"),
        "{err}"
    );
}

#[test]
fn bases_register_heartbeat_and_go_not_ready_when_they_stop() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &["--heartbeat-timeout", "1s"]);
    let base = ctl.base("base-a", "200ms", &["--labels", "group=online,zone=a"]);
    stdout(base.berth(&[
        "deploy",
        berth_example_modules::HELLO,
        "--name",
        "hello",
        "--version",
        "1",
    ]));

    let bases = || -> serde_json::Value {
        let cmd = ctl.berth(&["get", "bases", "-o", "json"]);
        serde_json::from_str(&stdout(cmd)).unwrap()
    };
    // Registered, Ready, labelled, and reporting what it runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b = bases();
        if b[0]["heartbeat"]["modules"] == serde_json::json!(["hello@1"]) {
            assert_eq!(b[0]["state"], "Ready");
            assert_eq!(b[0]["heartbeat"]["name"], "base-a");
            assert_eq!(b[0]["heartbeat"]["labels"]["zone"], "a");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the base never reported hello@1: {b}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cmd = ctl.berth(&["get", "bases"]);
    let table = stdout(cmd);
    assert!(
        table.contains("base-a") && table.contains("Ready") && table.contains("group=online"),
        "{table}"
    );

    // The base stops; once its 1 s lease runs out it is NotReady. Polled:
    // the bound only says it happens, with room for a loaded machine.
    drop(base);
    let stopped = Instant::now();
    loop {
        let b = bases();
        if b[0]["state"] == "NotReady" {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "the stopped base is still listed as {} after 10 s",
            b[0]["state"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(ctl);
}

/// A `berth controller` process on a free port with its own store, killed on drop.
#[test]
fn a_controller_keeps_its_state_in_the_store_named_by_store() {
    let work = work_dir();
    let store = work.path().join("elsewhere.redb");
    let flag = format!("redb:{}", store.display());
    let ctl = ControllerProcess::start(work.path(), &["--store", &flag]);
    let file = work.path().join("orders.yaml");
    std::fs::write(&file, manifest("1", "1.0.0")).unwrap();
    assert!(stdout(ctl.berth(&["apply", "-f", file.to_str().unwrap()])).contains("created"));
    drop(ctl);
    // The state is in that file, not in the data directory's default one.
    assert!(store.exists());
    assert!(!work.path().join("controller/controller.redb").exists());
    let again = ControllerProcess::start(work.path(), &["--store", &flag]);
    assert!(stdout(again.berth(&["get", "deployments"])).contains("orders"));
    drop(again);
    // A bad --store is refused before anything starts, saying what to write.
    let err = failure(controller_command(&["--store", "etcd://h1"]));
    assert!(
        err.contains("endpoint `h1` has no port") && err.contains("use `redb:PATH` or `etcd://"),
        "{err}"
    );
}

#[test]
fn a_controller_on_etcd_places_an_applied_deployment_on_a_base() {
    let work = work_dir();
    let etcd = crate::etcd_server::EtcdServer::start();
    let store = format!("etcd://{}", etcd.endpoint);
    let ctl = ControllerProcess::start(work.path(), &["--store", &store]);
    let base = ctl.base("a", "200ms", &["--labels", "group=online"]);
    let spec = "replicas: 1\n  baseSelector: { group: online }";
    assert!(
        ctl.apply(work.path(), "hello", "1.0.0", HELLO, None, spec)
            .contains("created")
    );
    eventually("bases serving hello", 1, || {
        usize::from(serves(&base.ingress, "/hello"))
    });
    // The state is in etcd, not in a redb file.
    assert!(!work.path().join("controller/controller.redb").exists());
    drop(base);
    drop(ctl);
    drop(etcd);
}

#[test]
fn a_controller_refuses_to_start_on_an_unreachable_etcd_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let work = work_dir();
    let store = format!("etcd://127.0.0.1:{port}");
    let mut cmd = controller_command(&["--store", &store]);
    cmd.arg("--data-dir").arg(work.path().join("controller"));
    let err = failure(cmd);
    assert!(
        err.contains(&format!("no etcd member answers at 127.0.0.1:{port}"))
            && err.contains("check that etcd runs there"),
        "{err}"
    );
}

pub(crate) struct ControllerProcess {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
}

impl ControllerProcess {
    /// A controller on a port the system picks.
    pub(crate) fn start(work: &std::path::Path, extra: &[&str]) -> Self {
        Self::start_on(0, work, extra)
    }

    /// A controller on `port` (to restart one where it was).
    fn start_on(port: u16, work: &std::path::Path, extra: &[&str]) -> Self {
        let (child, addr) = spawn_controller(port, &work.join("controller"), extra, &[]);
        Self { child, addr }
    }

    /// The port it listens on.
    fn port(&self) -> u16 {
        self.addr.rsplit_once(':').unwrap().1.parse().unwrap()
    }
}

impl ControllerProcess {
    /// `berth ARGS --controller <this controller>`.
    pub(crate) fn berth(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = berth(args);
        cmd.args(["--controller", &self.addr]);
        cmd
    }

    /// Writes a ModuleDeployment named after its module `name` — `version`
    /// from the file `artifact`, pinned to `digest` (default: the file's
    /// own), with `spec` as further lines under `spec:` — to WORK/NAME.yaml
    /// and applies it; returns what `berth apply` printed.
    pub(crate) fn apply(
        &self,
        work: &std::path::Path,
        name: &str,
        version: &str,
        artifact: &str,
        digest: Option<&str>,
        spec: &str,
    ) -> String {
        let file = write_deployment(work, name, version, artifact, digest, spec);
        stdout(self.berth(&["apply", "-f", file.to_str().unwrap()]))
    }

    /// A `berth base` that joins this controller as `name`, heartbeating
    /// every `interval`, with `extra` flags.
    pub(crate) fn base(&self, name: &str, interval: &str, extra: &[&str]) -> BaseProcess {
        let url = format!("http://{}", self.addr);
        let mut args = vec![
            "--controller",
            &url,
            "--name",
            name,
            "--heartbeat-interval",
            interval,
        ];
        args.extend_from_slice(extra);
        BaseProcess::start_with(&args)
    }

    /// `berth describe deployment NAME`.
    pub(crate) fn describe(&self, name: &str) -> String {
        stdout(self.berth(&["describe", "deployment", name]))
    }

    /// `berth describe deployment name` once it satisfies `ready`, polled
    /// for up to 10 s (what it shows can trail a background compile).
    #[track_caller]
    pub(crate) fn describe_when(&self, name: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.describe(name);
            if ready(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "describe never got there:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of one series of the controller's `/metrics`.
    pub(crate) fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.addr, name, labels)
    }

    /// Asserts one series of the controller's `/metrics` reaches `want`
    /// within 5 s. Status is derived when read, the gauges by the reconcile
    /// pass that follows a heartbeat, so they can trail it by a moment.
    #[track_caller]
    fn assert_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.metric(name, labels);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} is {got}, expected {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The value of one series of the `/metrics` at `addr` (NaN if absent).
pub(crate) fn metric(addr: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    {
        let response = body(addr, "/metrics").expect("/metrics answers");
        let text = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map_or(f64::NAN, |s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    }
}

/// Asserts `text` has a line with every one of `parts`, in order.
#[track_caller]
pub(crate) fn has_line(text: &str, parts: &[&str]) {
    let found = text.lines().any(|line| {
        let mut rest = line;
        parts.iter().all(|p| match rest.find(p) {
            Some(i) => {
                rest = &rest[i + p.len()..];
                true
            }
            None => false,
        })
    });
    assert!(found, "no line with {parts:?} in:\n{text}");
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the base at `ingress` (`http://host:port`) answers 200 at `path`.
pub(crate) fn serves(ingress: &str, path: &str) -> bool {
    body(ingress, path).is_some()
}

/// The body of a 200 answer at `path`, if any.
fn body(ingress: &str, path: &str) -> Option<String> {
    get(ingress, path).filter(|r| r.starts_with("HTTP/1.1 200"))
}

/// The whole answer (status line, headers, body) to `GET path`, if any.
fn get(ingress: &str, path: &str) -> Option<String> {
    crate::support::raw_get(ingress, path)
}

/// Waits until `count(&bases)` equals `want`.
pub(crate) fn eventually(what: &str, want: usize, count: impl Fn() -> usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = count();
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {got}, expected {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn deployments_are_placed_scaled_and_rescheduled_onto_bases() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &["--heartbeat-timeout", "1s"]);
    let base =
        |name: &str, group: &str| ctl.base(name, "200ms", &["--labels", &format!("group={group}")]);
    let mut online: Vec<Option<BaseProcess>> = ["a", "b", "c"]
        .iter()
        .map(|n| Some(base(n, "online")))
        .collect();
    let batch = base("d", "batch");
    let serving = |bases: &[Option<BaseProcess>]| {
        bases
            .iter()
            .flatten()
            .filter(|b| serves(&b.ingress, "/hello"))
            .count()
    };

    let apply = |replicas: u32| {
        let spec = format!("replicas: {replicas}\n  baseSelector: {{ group: online }}");
        ctl.apply(work.path(), "hello", "1.0.0", HELLO, None, &spec);
    };

    apply(2);
    eventually("online bases serving hello", 2, || serving(&online));
    assert!(
        !serves(&batch.ingress, "/hello"),
        "a base outside the selector got a replica"
    );
    apply(3);
    eventually("online bases serving hello", 3, || serving(&online));
    let describe = || {
        let cmd = ctl.berth(&["describe", "deployment", "hello"]);
        stdout(cmd)
    };
    eventually("status of 3 replicas", 1, || {
        usize::from(describe().contains("3 desired, 3 ready, 3 updated, 0 unschedulable"))
    });
    has_line(
        &stdout(ctl.berth(&["get", "deployments"])),
        &["hello", "hello", "1.0.0", "3/3", "3"],
    );
    // The controller's metrics agree.
    let ready = [("deployment", "hello"), ("state", "ready")];
    ctl.assert_metric("berth_controller_replicas", &ready, 3.0);
    ctl.assert_metric("berth_controller_bases", &[("state", "Ready")], 4.0);
    ctl.assert_metric("berth_controller_deployments", &[], 1.0);
    assert!(ctl.metric("berth_controller_heartbeats_total", &[]) >= 4.0);
    ctl.assert_metric(
        "berth_controller_scheduler_decisions_total",
        &[("state", "scheduled")],
        3.0,
    );
    // More replicas than matching bases: the rest is unschedulable, and said so.
    apply(4);
    eventually("status with one unschedulable replica", 1, || {
        usize::from(describe().contains("4 desired, 3 ready, 3 updated, 1 unschedulable"))
    });
    assert_eq!(serving(&online), 3);
    let described = describe();
    has_line(
        &described,
        &["ReplicaFailure", "True", "Unschedulable", "1 replica(s)"],
    );
    has_line(&described, &["Available", "False", "3 of 4 replicas ready"]);
    has_line(
        &described,
        &[
            "Warning",
            "Unschedulable",
            "1 of 4 replica(s) found no base: 3 Ready base(s) match group=online",
        ],
    );
    ctl.assert_metric(
        "berth_controller_replicas",
        &[("deployment", "hello"), ("state", "unschedulable")],
        1.0,
    );
    apply(1);
    eventually("online bases serving hello", 1, || serving(&online));

    // The base running the replica dies: another takes it over within the
    // heartbeat timeout (1 s) + 2 s.
    let running = online
        .iter()
        .position(|b| b.as_ref().is_some_and(|b| serves(&b.ingress, "/hello")))
        .unwrap();
    online[running] = None;
    let died = Instant::now();
    eventually("online bases serving hello after a base died", 1, || {
        serving(&online)
    });
    assert!(
        died.elapsed() < Duration::from_secs(3),
        "rescheduled only after {:?}",
        died.elapsed()
    );
    assert!(!serves(&batch.ingress, "/hello"));
    // The story so far, in the deployment's events.
    let described = describe();
    for (kind, reason, message) in [
        ("Normal", "Created", "hello@1.0.0 with 2 replica(s)"),
        ("Normal", "Scheduled", "replica placed on base"),
        ("Normal", "Running", "runs hello@1.0.0"),
        ("Normal", "Scaled", "replicas 2 → 3"),
        ("Normal", "Scaled", "replicas 4 → 1"),
        ("Normal", "Descheduled", "replica removed from base"),
        ("Warning", "BaseNotReady", "its replica is placed elsewhere"),
    ] {
        has_line(&described, &[kind, reason, message]);
    }
    drop(ctl);
}

#[test]
fn a_version_change_rolls_out_in_batches_waiting_for_confirmation() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &["--heartbeat-timeout", "2s"]);
    let bases: Vec<BaseProcess> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| ctl.base(n, "150ms", &["--labels", "group=online"]))
        .collect();
    let on_v2 = || {
        bases
            .iter()
            .filter(|b| body(&b.ingress, "/hello").is_some_and(|t| t.contains("version 2")))
            .count()
    };
    let on_v1 = || {
        bases
            .iter()
            .filter(|b| body(&b.ingress, "/hello").is_some_and(|t| t.contains("Hello from berth!")))
            .count()
    };
    let apply = |artifact: &str, version: &str| {
        let spec = "replicas: 4\n  baseSelector: { group: online }\n  strategy: { batches: 2, needConfirm: true }";
        ctl.apply(work.path(), "hello", version, artifact, None, spec);
    };
    let rollout = |action: &str| {
        let cmd = ctl.berth(&["rollout", action, "hello"]);
        stdout(cmd)
    };

    apply(berth_example_modules::HELLO, "1.0.0");
    eventually("bases on v1", 4, on_v1);
    apply(berth_example_modules::HELLO_V2, "2.0.0");
    // The first batch (2 of 4) moves, then the rollout waits for confirmation.
    eventually("bases on v2 in batch 1", 2, on_v2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rollout("status").contains("waiting for `berth rollout confirm hello`") {
        assert!(
            Instant::now() < deadline,
            "the rollout never waited for confirmation: {}",
            rollout("status")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A negative check with a window: it proves only that batch 2 did not
    // start within 600 ms (four heartbeats) of the wait being reported.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        (on_v2(), on_v1()),
        (2, 2),
        "batch 2 started within 600 ms, without confirmation"
    );
    assert!(
        rollout("status").contains("(2 of 4 replicas run 2.0.0)"),
        "{}",
        rollout("status")
    );
    let paused = rollout("pause");
    assert!(
        paused.contains("paused (berth rollout resume hello)"),
        "{paused}"
    );
    rollout("resume");
    rollout("confirm");
    eventually("bases on v2 after confirming", 4, on_v2);
    eventually("rollout finished", 1, || {
        usize::from(rollout("status").contains("no rollout in progress"))
    });

    // Undo goes back to 1.0.0, in batches too.
    rollout("undo");
    eventually("bases back on v1 in batch 1", 2, on_v1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rollout("status").contains("waiting for") {
        assert!(
            Instant::now() < deadline,
            "undo never reached its confirmation"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    rollout("confirm");
    eventually("bases on v1 after undo", 4, on_v1);
    // A base serves the new version a moment before its heartbeat tells the
    // controller so; the story is complete once the rollout has finished.
    eventually("undo finished", 1, || {
        usize::from(rollout("status").contains("no rollout in progress"))
    });
    let described = ctl.describe("hello");
    for parts in [
        &[
            "RolloutStarted",
            "1.0.0 → 2.0.0 in 2 batch(es), each confirmed",
        ][..],
        &[
            "BatchComplete",
            "batch 1 of 2 runs 2.0.0; waiting for `berth rollout confirm hello`",
        ],
        &["Confirmed", "batch 1 confirmed"],
        &[
            "BatchStarted",
            "batch 2 of 2: 4 of 4 replicas move to 2.0.0",
        ],
        &["RolloutComplete", "all 4 replicas run 2.0.0"],
        &["UndoRequested", "back from 2.0.0 to 1.0.0"],
        &["RolloutComplete", "all 4 replicas run 1.0.0"],
    ] {
        has_line(&described, parts);
    }
    has_line(&described, &["Progressing", "False", "Complete"]);
    drop(ctl);
}

/// Stops (SIGSTOP) or continues (SIGCONT) the processes of `bases`.
fn signal(bases: &[BaseProcess], signal: &str) {
    for b in bases {
        let status = Command::new("kill")
            .args([signal, &b.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }
}

/// Applies `name`@`version` from a copy of `artifact` that the controller
/// checks and then vanishes before the (frozen) bases fetch it, so every
/// base assigned it fails with artifact_not_found.
fn apply_vanishing(
    ctl: &ControllerProcess,
    work: &std::path::Path,
    bases: &[BaseProcess],
    name: &str,
    version: &str,
    artifact: &str,
    spec: &str,
) {
    let copy = work.join(format!("{name}-{version}.wasm"));
    std::fs::copy(artifact, &copy).unwrap();
    signal(bases, "-STOP");
    ctl.apply(work, name, version, copy.to_str().unwrap(), None, spec);
    std::fs::remove_file(&copy).unwrap();
    signal(bases, "-CONT");
}

#[test]
fn a_failed_rollout_stops_and_a_fixed_apply_repairs_the_deployment() {
    let work = work_dir();
    // Frozen bases must stay Ready: a long heartbeat timeout.
    let ctl = ControllerProcess::start(work.path(), &["--heartbeat-timeout", "60s"]);
    let bases: Vec<BaseProcess> = ["a", "b"]
        .iter()
        .map(|n| ctl.base(n, "150ms", &[]))
        .collect();
    let count = |text: &str| {
        bases
            .iter()
            .filter(|b| body(&b.ingress, "/hello").is_some_and(|t| t.contains(text)))
            .count()
    };
    let on_v1 = || count("Hello from berth!");
    let on_v2 = || count("version 2");
    let spec = "replicas: 2\n  strategy: { batches: 2 }";
    ctl.apply(work.path(), "hello", "1.0.0", HELLO, None, spec);
    eventually("bases on v1", 2, on_v1);

    // 2.0.0 cannot be fetched by the bases: batch 1 (base a) fails.
    let v2 = berth_example_modules::HELLO_V2;
    apply_vanishing(&ctl, work.path(), &bases, "hello", "2.0.0", v2, spec);
    let status = || {
        let output = ctl.berth(&["rollout", "status", "hello"]).output().unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (
            output.status.success(),
            text(output.stdout),
            text(output.stderr),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let (ok, out, err) = loop {
        let (ok, out, err) = status();
        if out.contains("FAILED") {
            break (ok, out, err);
        }
        assert!(
            Instant::now() < deadline,
            "the rollout never failed: {out}{err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // A failed rollout is a failed command, and a failed replica is not on 2.0.0.
    assert!(!ok, "rollout status exited 0 on a failed rollout: {out}");
    assert!(
        out.contains("(0 of 2 replicas run 2.0.0)")
            && out.contains("base a cannot run hello@2.0.0")
            && out.contains("artifact_not_found"),
        "{out}"
    );
    assert!(err.contains("the rollout of `hello` failed"), "{err}");
    // A negative check with a window: it proves only that the old version
    // still serves 500 ms (three heartbeats) after the failure.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        on_v1(),
        2,
        "the old version stopped serving within 500 ms of the failure"
    );
    let described = ctl.describe("hello");
    has_line(
        &described,
        &[
            "Warning",
            "RolloutFailed",
            "base a cannot run hello@2.0.0",
            "(artifact_not_found); the other bases keep 1.0.0",
        ],
    );
    has_line(
        &described,
        &["VersionAssigned", "base a: hello@2.0.0 → 1.0.0"],
    );
    has_line(&described, &["Progressing", "False", "RolloutFailed"]);
    // Beside FAILED, which replica runs which version.
    eventually("both replicas back on 1.0.0 in describe", 1, || {
        usize::from(
            ctl.describe("hello")
                .contains("Versions:    1.0.0 runs on a, b"),
        )
    });
    ctl.assert_metric("berth_controller_rollouts", &[("state", "failed")], 1.0);
    // Undo from a failed rollout: back to 1.0.0, which every base runs.
    let undone = stdout(ctl.berth(&["rollout", "undo", "hello"]));
    assert!(
        undone.contains("hello: hello@1.0.0, 2 of 2 replicas run it, no rollout in progress"),
        "{undone}"
    );
    has_line(
        &ctl.describe("hello"),
        &["UndoRequested", "back from 2.0.0 to 1.0.0"],
    );

    // 2.0.0 fails again; the same code from a path the bases can read
    // restarts the failed rollout, which completes.
    apply_vanishing(&ctl, work.path(), &bases, "hello", "2.0.0", v2, spec);
    eventually("the rollout failed again", 1, || {
        usize::from(status().1.contains("FAILED"))
    });
    ctl.apply(work.path(), "hello", "2.0.0", v2, None, spec);
    let watched = stdout(ctl.berth(&["rollout", "status", "hello", "--watch"]));
    assert!(
        watched
            .trim_end()
            .ends_with("hello: hello@2.0.0, 2 of 2 replicas run it, no rollout in progress"),
        "{watched}"
    );
    assert_eq!(on_v2(), 2);
    has_line(
        &ctl.describe("hello"),
        &[
            "RolloutRestarted",
            "2.0.0 from file:",
            "starts over at batch 1",
        ],
    );

    // 3.0.0 fails; a fixed manifest at a new version rolls from 2.0.0 (what
    // runs), not from the failed 3.0.0, so base b never tries 3.0.0, and
    // every replica ends on the new version.
    apply_vanishing(&ctl, work.path(), &bases, "hello", "3.0.0", v2, spec);
    eventually("the 3.0.0 rollout failed", 1, || {
        usize::from(status().1.contains("FAILED"))
    });
    ctl.apply(work.path(), "hello", "4.0.0", v2, None, spec);
    let watched = stdout(ctl.berth(&["rollout", "status", "hello", "--watch"]));
    assert!(
        watched.contains("2.0.0 → 4.0.0")
            && watched
                .trim_end()
                .ends_with("hello: hello@4.0.0, 2 of 2 replicas run it, no rollout in progress"),
        "{watched}"
    );
    assert_eq!(on_v2(), 2);
    let described = ctl.describe("hello");
    assert!(!described.contains("base b cannot run"), "{described}");
    has_line(&described, &["RolloutStarted", "2.0.0 → 4.0.0"]);
    assert!(
        described.contains("History:     1.0.0 → 2.0.0\n"),
        "{described}"
    );

    // Undo goes back to the last version that ran: 2.0.0, never 3.0.0.
    let undone = stdout(ctl.berth(&["rollout", "undo", "hello"]));
    assert!(undone.contains("4.0.0 → 2.0.0"), "{undone}");
    stdout(ctl.berth(&["rollout", "status", "hello", "-w"]));
    assert!(
        ctl.describe("hello")
            .contains("Versions:    2.0.0 runs on a, b"),
        "{}",
        ctl.describe("hello")
    );

    // A first version that cannot run: a Warning event, a condition, a
    // failing `rollout status`; a fixed version replaces it at once.
    let echo = berth_example_modules::ECHO;
    apply_vanishing(&ctl, work.path(), &bases, "echo", "1", echo, "replicas: 1");
    eventually("a reported install failure", 1, || {
        usize::from(ctl.describe("echo").contains("InstallFailed"))
    });
    let described = ctl.describe("echo");
    has_line(
        &described,
        &[
            "Warning",
            "InstallFailed",
            "cannot run echo@1",
            "artifact_not_found",
        ],
    );
    has_line(&described, &["ReplicaFailure", "True", "InstallFailed"]);
    // Bases install from the controller, which says the artifact's file is gone.
    has_line(
        &described,
        &[
            "failed: the controller cannot serve artifact",
            "cannot read",
        ],
    );
    has_line(&described, &["Versions:", "1 failed on"]);
    let err = failure(ctl.berth(&["rollout", "status", "echo"]));
    assert!(
        err.contains("the rollout of `echo` failed") && err.contains("cannot run echo@1"),
        "{err}"
    );
    ctl.apply(work.path(), "echo", "2", echo, None, "replicas: 1");
    let watched = stdout(ctl.berth(&["rollout", "status", "echo", "--watch"]));
    assert!(
        watched
            .trim_end()
            .ends_with("1 of 1 replicas run it, no rollout in progress"),
        "{watched}"
    );
    drop(ctl);
}

#[test]
fn apply_checks_the_artifact_and_resolves_a_relative_path_against_the_manifest() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &[]);
    let dir = work.path().join("manifests");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(HELLO, dir.join("hello.wasm")).unwrap();
    let write = |artifact: &str, version: &str| {
        let text = format!(
            "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: hello }}\nspec:\n  module: {{ name: hello, version: \"{version}\", artifact: \"{artifact}\", digest: \"{}\" }}\n  replicas: 1\n",
            file_digest(HELLO)
        );
        std::fs::write(dir.join("hello.yaml"), text).unwrap();
    };
    // Applied from another directory: the path is the manifest's neighbour.
    let apply = || {
        let mut cmd = ctl.berth(&["apply", "-f", "manifests/hello.yaml"]);
        cmd.current_dir(work.path());
        cmd
    };
    write("file:./hello.wasm", "1.0.0");
    assert!(stdout(apply()).contains("created"));
    let shown: serde_json::Value =
        serde_json::from_str(&stdout(ctl.berth(&["get", "deployments", "-o", "json"]))).unwrap();
    let absolute = dir.join("hello.wasm").canonicalize().unwrap();
    assert_eq!(
        shown[0]["manifest"]["spec"]["module"]["artifact"],
        format!("file:{}", absolute.display())
    );
    // The controller compiles the module in the background and, once it
    // knows the imports, says why it cannot place it: wait for that state,
    // which nothing below may change.
    let before = ctl.describe_when("hello", |text| text.contains("no Ready base matches"));

    // A relative path to nothing fails before it is sent.
    write("file:missing.wasm", "2.0.0");
    let err = failure(apply());
    assert!(
        err.contains("spec.module.artifact: cannot read") && err.contains("missing.wasm"),
        "{err}"
    );
    // What the controller can check, it does: a 422 naming the field, and
    // the deployment in force is unchanged.
    write("file:/nonexistent/hello.wasm", "2.0.0");
    let err = failure(apply());
    assert!(
        err.contains("spec.module.artifact: cannot read /nonexistent/hello.wasm")
            && err.contains("(invalid_manifest)"),
        "{err}"
    );
    let wrong = format!("file:{}", berth_example_modules::ECHO);
    write(&wrong, "2.0.0");
    let err = failure(apply());
    assert!(err.contains("spec.module.digest: `file:"), "{err}");
    // (Event times move on; everything else is as before.)
    let timeless = |text: String| -> Vec<String> {
        text.lines()
            .filter(|l| !l.contains(" ago"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(timeless(ctl.describe("hello")), timeless(before));

    // The help shows a whole manifest; one variable names the controller everywhere.
    let help = stdout(berth(&["apply", "--help"]));
    assert!(
        help.contains("kind: ModuleDeployment") && help.contains("artifact: file:./orders.wasm"),
        "{help}"
    );
    let help = stdout(berth(&["base", "--help"]));
    assert!(
        help.contains("[env: BERTH_CONTROLLER=") && !help.contains("BERTH_CONTROLLER_URL"),
        "{help}"
    );

    // Hints name commands.
    let err = failure(ctl.berth(&["describe", "deployment", "nope"]));
    assert!(
        err.contains("no ModuleDeployment named `nope`; list them with `berth get deployments`"),
        "{err}"
    );
    drop(ctl);
}

#[test]
fn a_base_that_comes_back_drops_what_was_unassigned_while_it_was_down() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &[]);
    let data = work.path().join("base-data");
    let url = format!("http://{}", ctl.addr);
    let args = [
        "--controller",
        url.as_str(),
        "--name",
        "a",
        "--heartbeat-interval",
        "150ms",
    ];
    let base = BaseProcess::start_at(&data, &args);
    ctl.apply(work.path(), "hello", "1.0.0", HELLO, None, "replicas: 1");
    eventually("base serving hello", 1, || {
        usize::from(serves(&base.ingress, "/hello"))
    });

    // Down, the deployment goes away; back up (same data dir), hello goes too.
    drop(base);
    stdout(ctl.berth(&["delete", "deployment", "hello"]));
    let base = BaseProcess::start_at(&data, &args);
    eventually("base serving hello after coming back", 0, || {
        usize::from(serves(&base.ingress, "/hello"))
    });
    drop(ctl);
}

#[test]
fn a_controller_restart_loses_nothing_and_bases_serve_throughout() {
    let work = work_dir();
    // Heartbeats are rare here (60 s): what reaches the bases within
    // seconds reached them through their assignment watch.
    let ctl_args = ["--heartbeat-timeout", "5m"];
    let ctl = ControllerProcess::start(work.path(), &ctl_args);
    let port = ctl.port();
    let bases: Vec<BaseProcess> = ["a", "b"].iter().map(|n| ctl.base(n, "60s", &[])).collect();
    let serving = || {
        bases
            .iter()
            .filter(|b| serves(&b.ingress, "/hello"))
            .count()
    };
    let apply = |ctl: &ControllerProcess, replicas: u32| {
        let spec = format!("replicas: {replicas}");
        ctl.apply(work.path(), "hello", "1.0.0", HELLO, None, &spec)
    };
    // Both bases have registered (their first heartbeat is at start).
    eventually("registered bases", 2, || {
        let cmd = ctl.berth(&["get", "bases", "-o", "json"]);
        serde_json::from_str::<serde_json::Value>(&stdout(cmd))
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    });
    let applied = Instant::now();
    apply(&ctl, 2);
    eventually("bases serving hello", 2, serving);
    assert!(
        applied.elapsed() < Duration::from_secs(10),
        "assignments waited for a heartbeat ({:?})",
        applied.elapsed()
    );
    eventually("ready replicas reported", 1, || {
        usize::from(ctl.describe("hello").contains("2 desired, 2 ready"))
    });

    // The controller dies; the bases serve on, past its heartbeat timeout's
    // worth of their own retries.
    drop(ctl);
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            serving(),
            2,
            "a base stopped serving while the controller was down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Back on the same port and store: nothing lost, nothing reinstalled.
    let ctl = ControllerProcess::start_on(port, work.path(), &ctl_args);
    let shown: serde_json::Value =
        serde_json::from_str(&stdout(ctl.berth(&["get", "deployments", "-o", "json"]))).unwrap();
    assert_eq!(
        (
            shown[0]["generation"].as_u64(),
            shown[0]["manifest"]["spec"]["replicas"].as_u64()
        ),
        (Some(1), Some(2))
    );
    let described = ctl.describe("hello");
    assert!(described.contains("2 desired, 2 ready"), "{described}");
    has_line(&described, &["Created", "hello@1.0.0 with 2 replica(s)"]);
    for _ in 0..10 {
        assert_eq!(
            serving(),
            2,
            "a base stopped serving after the controller came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And it steers the fleet again, through the bases' watches.
    let applied = Instant::now();
    apply(&ctl, 1);
    eventually("bases serving hello after scaling down", 1, serving);
    assert!(
        applied.elapsed() < Duration::from_secs(10),
        "the scale-down waited for a heartbeat ({:?})",
        applied.elapsed()
    );
    drop(ctl);
}

#[test]
fn bases_load_the_code_the_controller_compiled_once() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &[]);
    // Waits for the controller's code however long it compiles, so the
    // count below is the same on a loaded machine.
    let trusting = ctl.base("a", "200ms", &["--controller-code-wait", "60s"]);
    let local = ctl.base("b", "200ms", &["--compile-locally"]);
    let digest = berth_runtime::Digest::of(&std::fs::read(berth_example_modules::HELLO).unwrap());
    ctl.apply(work.path(), "hello", "1.0.0", HELLO, None, "replicas: 2");
    eventually("bases serving hello", 2, || {
        [&trusting, &local]
            .iter()
            .filter(|b| serves(&b.ingress, "/hello"))
            .count()
    });
    // An absent series (NaN) is a count of 0.
    let lookups = |b: &BaseProcess, outcome: &str| {
        f64::max(
            0.0,
            metric(
                &b.ops,
                "berth_compile_cache_lookups_total",
                &[("outcome", outcome)],
            ),
        )
    };
    // The trusting base mapped the controller's code; the other compiled.
    assert_eq!(
        (lookups(&trusting, "hit"), lookups(&trusting, "miss")),
        (1.0, 0.0)
    );
    assert_eq!(
        (lookups(&local, "hit"), lookups(&local, "miss")),
        (0.0, 1.0)
    );
    let compiled: Vec<_> = std::fs::read_dir(work.path().join("controller/compiled"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".cwasm"))
        .collect();
    assert!(
        compiled.len() == 1 && compiled[0].starts_with(&digest.hex()),
        "{compiled:?}"
    );

    // Code is only handed out for deployed artifacts and the controller's engine.
    let asked = |path: &str| get(&ctl.addr, path).unwrap_or_default();
    let unknown = asked(&format!("/v1/code/{}?engine=x", "ab".repeat(32)));
    assert!(
        unknown.starts_with("HTTP/1.1 404") && unknown.contains("no deployment names artifact"),
        "{unknown}"
    );
    let other = asked(&format!("/v1/code/{}?engine=0000", digest.hex()));
    assert!(
        other.starts_with("HTTP/1.1 404") && other.contains("no code for engine 0000"),
        "{other}"
    );

    // Code a base cannot load (here: the controller's copy got corrupted)
    // is thrown away and the module compiled locally; the base serves.
    let stored = work.path().join("controller/compiled").join(&compiled[0]);
    std::fs::write(&stored, b"not code").unwrap();
    let late = ctl.base("c", "200ms", &[]);
    ctl.apply(work.path(), "hello", "1.0.0", HELLO, None, "replicas: 3");
    eventually("the third base serving hello", 1, || {
        usize::from(serves(&late.ingress, "/hello"))
    });
    assert_eq!((lookups(&late, "hit"), lookups(&late, "miss")), (0.0, 1.0));
    drop(ctl);
}

#[test]
fn a_base_serves_on_its_own_winch_code_until_the_controller_code_arrives() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &[]);
    // Never waits for the controller: it compiles with Winch and serves.
    let base = ctl.base("a", "200ms", &["--controller-code-wait", "0s"]);
    ctl.apply(work.path(), "hello", "1.0.0", HELLO, None, "replicas: 1");
    eventually("the base serving hello", 1, || {
        usize::from(serves(&base.ingress, "/hello"))
    });
    let lookups = |outcome: &str| {
        f64::max(
            0.0,
            metric(
                &base.ops,
                "berth_compile_cache_lookups_total",
                &[("outcome", outcome)],
            ),
        )
    };
    // One lookup. A miss is the case this test is for: the controller's
    // code was not there yet and the base served on its own Winch code. A
    // hit means the controller had compiled hello before the base asked
    // (seen on a quiet machine); the runtime's
    // `tiers::a_module_serves_on_winch_while_its_optimized_code_comes_from_elsewhere_then_maps_it`
    // covers the Winch-then-map path without that race.
    let (hit, miss) = (lookups("hit"), lookups("miss"));
    assert_eq!(hit + miss, 1.0, "one lookup: hit {hit}, miss {miss}");
    // Then, or already, on the optimized code (the controller's, mapped).
    eventually("hello on Cranelift code", 1, || {
        let tier = metric(
            &base.ops,
            "berth_module_code_tier",
            &[("module", "hello"), ("tier", "cranelift")],
        );
        usize::from(tier == 1.0)
    });
    assert!(serves(&base.ingress, "/hello"));
    drop(ctl);
}

#[test]
fn a_koupleless_module_deployment_puts_replicas_on_bases() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &[]);
    let base =
        |name: &str, group: &str| ctl.base(name, "200ms", &["--labels", &format!("group={group}")]);
    let stock: Vec<BaseProcess> = ["s1", "s2", "s3"]
        .iter()
        .map(|n| base(n, "dynamic-stock-deployment"))
        .collect();
    let other = base("o1", "other");
    // Koupleless' sample as published, with a wasm module; `md5` carries
    // berth's sha256 digest.
    let manifest = |replicas: &str| {
        format!(
            "apiVersion: koupleless.io/v1alpha1
kind: ModuleDeployment
metadata:
  labels:
    app.kubernetes.io/name: moduledeployment
  name: moduledeployment-sample
spec:
  baseDeploymentName: dynamic-stock-deployment
  template:
    spec:
      module:
        name: hello
        version: '1.0.0'
        url: \"file:{HELLO}\"
        md5: \"{}\"
  replicas: {replicas}
  operationStrategy:
    upgradePolicy: install_then_uninstall
    needConfirm: false
    grayTimeBetweenBatchSeconds: 0
    useBeta: false
    batchCount: 1
  schedulingStrategy:
    schedulingPolicy: scatter
",
            file_digest(HELLO)
        )
    };
    let file = work.path().join("koupleless.yaml");
    let file_s = file.to_str().unwrap();

    let serving = || {
        stock
            .iter()
            .filter(|b| serves(&b.ingress, "/hello"))
            .count()
    };
    // `replicas: -1`: one replica on every base of the group (a peer deployment).
    std::fs::write(&file, manifest("-1")).unwrap();
    assert_eq!(
        stdout(ctl.berth(&["apply", "-f", file_s])).trim(),
        "ModuleDeployment/moduledeployment-sample created (generation 1)"
    );
    eventually("stock bases serving hello", 3, serving);
    assert!(!serves(&other.ingress, "/hello"));
    // Status follows the heartbeats, so it can trail serving by a moment.
    eventually("a peer deployment of 3 ready replicas", 1, || {
        let table = stdout(ctl.berth(&["get", "deployments"]));
        usize::from(table.lines().any(|l| {
            l.starts_with("moduledeployment-sample") && l.contains("3/3") && l.ends_with("all (3)")
        }))
    });
    let form = stdout(ctl.berth(&["get", "deployments", "-o", "yaml", "--as", "koupleless"]));
    assert!(form.contains("replicas: -1"), "{form}");

    std::fs::write(&file, manifest("2")).unwrap();
    assert_eq!(
        stdout(ctl.berth(&["apply", "-f", file_s])).trim(),
        "ModuleDeployment/moduledeployment-sample updated (generation 2)"
    );
    eventually("stock bases serving hello", 2, serving);
    assert!(
        !serves(&other.ingress, "/hello"),
        "a base outside the group got a replica"
    );
    let table = stdout(ctl.berth(&["get", "deployments", "-o", "wide"]));
    assert!(
        table.contains("moduledeployment-sample")
            && table.contains("group=dynamic-stock-deployment"),
        "{table}"
    );
    // Either form back: berth's, or Koupleless' with the same fields.
    let berth_form = stdout(ctl.berth(&["get", "deployments", "-o", "yaml"]));
    assert!(
        berth_form.contains("apiVersion: berth.dev/v1"),
        "{berth_form}"
    );
    let form = stdout(ctl.berth(&["get", "deployments", "-o", "yaml", "--as", "koupleless"]));
    let forms: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(&form).unwrap();
    let expected: serde_yaml_ng::Value = serde_yaml_ng::from_str(&manifest("2")).unwrap();
    assert_eq!(forms[0]["apiVersion"], expected["apiVersion"], "{form}");
    assert_eq!(
        forms[0]["spec"]["template"], expected["spec"]["template"],
        "{form}"
    );
    assert_eq!(
        forms[0]["spec"]["baseDeploymentName"],
        expected["spec"]["baseDeploymentName"]
    );
    assert_eq!(forms[0]["spec"]["replicas"], expected["spec"]["replicas"]);
    let err = failure(ctl.berth(&["get", "deployments", "--as", "koupleless"]));
    assert!(err.contains("-o yaml"), "{err}");
    drop(ctl);
}

/// `berth base --controller-code-wait` takes a duration and says so.
#[test]
fn base_refuses_a_controller_code_wait_that_is_no_duration() {
    let err = failure(berth(&["base", "--controller-code-wait", "soon"]));
    assert!(
        err.contains("--controller-code-wait") && err.contains("soon"),
        "{err}"
    );
}
