//! `berth gateway` in front of a controller and its bases, all real
//! processes over real HTTP: spreading, rules and traffic cells, a base
//! killed under load, a scale-in under load (drain), unknown routes, a
//! controller that comes up after the gateway, scale to zero end to end
//! (idle → 0 replicas → held request → activation), chaos (bases killed
//! and restarted under load during a rollout), and an autoscale ramp
//! driven by Debian's `hey` (installed when missing).

use std::io::{Read as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_example_modules::{HELLO, HELLO_V2};

use crate::support::{
    BaseProcess, berth, failure, file_digest, spawn_controller, spawn_gateway, stdout, work_dir,
};

const SECRET: &str = "fleet-secret";

/// A `berth controller` process, killed on drop.
struct Controller {
    child: Child,
    addr: String,
}

impl Controller {
    fn start(work: &std::path::Path, port: u16, extra: &[&str]) -> Self {
        let mut args = vec!["--heartbeat-timeout", "1s"];
        args.extend_from_slice(extra);
        let (child, addr) = spawn_controller(port, &work.join("controller"), &args, &[]);
        Self { child, addr }
    }

    /// A base joining this controller as `name` with `labels`, trusting
    /// the gateway's secret.
    fn base(&self, name: &str, labels: &str) -> BaseProcess {
        let args = self.base_args(name, labels);
        BaseProcess::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The same on the data directory `dir` (a base restarted on it).
    fn base_at(&self, dir: &std::path::Path, name: &str, labels: &str) -> BaseProcess {
        let args = self.base_args(name, labels);
        BaseProcess::start_at(dir, &args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn base_args(&self, name: &str, labels: &str) -> Vec<String> {
        [
            "--controller",
            &format!("http://{}", self.addr),
            "--name",
            name,
            "--heartbeat-interval",
            "200ms",
            "--labels",
            labels,
            "--gateway-secret",
            SECRET,
        ]
        .map(String::from)
        .to_vec()
    }

    /// Applies a ModuleDeployment `hello` of `version` (HELLO or HELLO_V2)
    /// with further `spec` lines.
    fn apply(&self, work: &std::path::Path, version: &str, spec: &str) {
        let artifact = if version == "2.0.0" { HELLO_V2 } else { HELLO };
        self.apply_module(work, "hello", artifact, version, spec);
    }

    /// Applies a ModuleDeployment of module `name` from `artifact`.
    fn apply_module(
        &self,
        work: &std::path::Path,
        name: &str,
        artifact: &str,
        version: &str,
        spec: &str,
    ) {
        let file = work.join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: {name} }}\nspec:\n  module: {{ name: {name}, version: \"{version}\", artifact: \"file:{artifact}\", digest: \"{}\" }}\n  {spec}\n",
                file_digest(artifact)
            ),
        )
        .unwrap();
        let mut cmd = berth(&["apply", "-f", file.to_str().unwrap()]);
        cmd.args(["--controller", &self.addr]);
        stdout(cmd);
    }

    /// The endpoint table.
    fn endpoints(&self) -> serde_json::Value {
        let (_, body) = get(&self.addr, "/v1/endpoints", &[]).expect("the controller answers");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until `hello` has `want` ready, non-draining replicas in the
    /// endpoint table, each running `version`.
    fn wait_ready(&self, want: usize, version: &str) {
        self.wait_ready_of("hello", want, version);
    }

    /// The same for deployment `name`.
    fn wait_ready_of(&self, name: &str, want: usize, version: &str) {
        eventually(
            &format!("{want} ready replicas of {name}@{version}"),
            || {
                let table = self.endpoints();
                let replicas = table["deployments"]
                    .as_array()
                    .and_then(|all| all.iter().find(|d| d["name"] == name))
                    .and_then(|d| d["replicas"].as_array().cloned())
                    .unwrap_or_default();
                replicas.len() == want
                    && replicas.iter().all(|r| {
                        r["ready"] == true
                            && r["draining"] == false
                            && r["versions"] == serde_json::json!([version])
                    })
            },
        );
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `berth gateway` process, its stderr kept in a file; killed on drop.
struct Gateway {
    child: Child,
    addr: String,
    stderr: tempfile::NamedTempFile,
}

impl Gateway {
    fn start(controller: &str) -> Self {
        Self::start_with(controller, &[])
    }

    /// A gateway with `extra` flags.
    fn start_with(controller: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--gateway-secret", SECRET];
        args.extend_from_slice(extra);
        let (child, addr, stderr) = spawn_gateway(controller, &args);
        Self {
            child,
            addr,
            stderr,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap()
    }

    /// The value of the gateway metric `name` with `labels` (0 if absent).
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let (_, text) = get(&self.addr, "/metrics", &[]).unwrap();
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` with `headers` on `addr`: the status, the response head and
/// the body; `None` if the connection failed or broke.
fn fetch(addr: &str, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String, String)> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((status, head.to_string(), body.to_string()))
}

/// The status and body of `GET path` on `addr`.
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    fetch(addr, path, headers).map(|(status, _, body)| (status, body))
}

/// Requests each base's ops API counted for `hello`.
fn served(bases: &[&BaseProcess]) -> Vec<u64> {
    bases
        .iter()
        .map(|b| {
            let ops = b.ops.trim_start_matches("http://");
            let Some((_, body)) = get(ops, "/v1/modules", &[]) else {
                return 0;
            };
            let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            list["modules"]
                .as_array()
                .map(|all| {
                    all.iter()
                        .filter(|m| m["name"] == "hello")
                        .map(|m| m["requests"].as_u64().unwrap_or(0))
                        .sum()
                })
                .unwrap_or(0)
        })
        .collect()
}

/// Per-base requests served between `before` and now.
fn delta(bases: &[&BaseProcess], before: &[u64]) -> Vec<u64> {
    served(bases)
        .iter()
        .zip(before)
        .map(|(now, then)| now - then)
        .collect()
}

/// Polls `check` until it holds (20 s at most).
#[track_caller]
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `n` requests for /hello with `headers` through the gateway;
/// returns the `x-berth-module` of each (every one must be a 200).
fn send(gateway: &Gateway, n: usize, headers: &[(&str, &str)]) -> Vec<String> {
    (0..n)
        .map(|_| {
            let (status, head, body) =
                fetch(&gateway.addr, "/hello", headers).expect("the gateway answers");
            assert_eq!(status, 200, "{body}");
            head.lines()
                .find_map(|l| l.strip_prefix("x-berth-module: "))
                .expect("a module answered")
                .to_string()
        })
        .collect()
}

/// Steady load on /hello through the gateway from `threads` clients until
/// stopped; counts answers and failures (with when they happened).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, threads: usize) -> Self {
        Self::start_on(addr, "/hello", threads)
    }

    /// The same on `path`.
    fn start_on(addr: &str, path: &str, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, ok, failures, addr, path) = (
                    stop.clone(),
                    ok.clone(),
                    failures.clone(),
                    addr.to_string(),
                    path.to_string(),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match get(&addr, &path, &[]) {
                            Some((200, _)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failures
                                .lock()
                                .unwrap()
                                .push((Instant::now(), format!("{other:?}"))),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            threads,
        }
    }

    /// Waits for `more` answers beyond those so far.
    fn wait_answers(&self, more: u64) {
        let want = self.ok.load(Ordering::Relaxed) + more;
        eventually(&format!("{more} more answers under load"), || {
            self.ok.load(Ordering::Relaxed) >= want
        });
    }

    /// Stops; returns (answers, failures).
    fn finish(self) -> (u64, Vec<(Instant, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[test]
fn a_gateway_spreads_requests_and_follows_version_rules_and_traffic_cells() {
    let work = work_dir();
    let ctl = Controller::start(work.path(), 0, &[]);
    let bases: Vec<BaseProcess> = [("a", "gold"), ("b", "gold"), ("c", "std"), ("d", "std")]
        .iter()
        .map(|(name, tier)| ctl.base(name, &format!("group=online,tier={tier}")))
        .collect();
    let all: Vec<&BaseProcess> = bases.iter().collect();
    // The other tests run the default layout (a listener thread per core);
    // this one serves every connection on the shared runtime.
    let gateway = Gateway::start_with(&ctl.addr, &["--threads", "0"]);
    let rules = "rules:\n    rules:\n      - { name: gold, match: [{ on: header, name: x-tier, exact: gold }], cell: { tier: gold } }\n      - { name: beta, match: [{ on: header, name: x-beta }], version: \"2.0.0\" }";
    let spec =
        |extra: &str| format!("replicas: 4\n  baseSelector: {{ group: online }}\n  {rules}{extra}");
    ctl.apply(work.path(), "1.0.0", &spec(""));
    ctl.wait_ready(4, "1.0.0");
    eventually("the gateway routes /hello", || {
        get(&gateway.addr, "/hello", &[]).is_some_and(|(status, _)| status == 200)
    });

    // Spread over every replica.
    let before = served(&all);
    let answered = send(&gateway, 200, &[]);
    assert!(answered.iter().all(|m| m == "hello@1.0.0"), "{answered:?}");
    let spread = delta(&all, &before);
    assert!(spread.iter().all(|n| *n >= 10), "uneven spread: {spread:?}");
    assert_eq!(spread.iter().sum::<u64>(), 200);

    // The client's request id reaches the base (which answers with it).
    let (_, head, _) = fetch(&gateway.addr, "/hello", &[("x-request-id", "req-42")]).unwrap();
    assert!(head.contains("x-request-id: req-42"), "{head}");

    // A cell rule lands only on the gold group.
    let before = served(&all);
    send(&gateway, 60, &[("x-tier", "gold")]);
    let gold = delta(&all, &before);
    assert_eq!(gold[2] + gold[3], 0, "gold traffic left its cell: {gold:?}");
    assert!(
        gold[0] > 0 && gold[1] > 0,
        "one gold base got nothing: {gold:?}"
    );

    // No replica of the version a rule chose: 503 naming the module and why.
    let (status, body) = get(&gateway.addr, "/hello", &[("x-beta", "1")]).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("module `hello`") && body.contains("none runs version 2.0.0"),
        "{body}"
    );

    // Unknown route: 404 naming nothing internal.
    let (status, body) = get(&gateway.addr, "/nothing/here", &[]).unwrap();
    assert_eq!(status, 404);
    assert_eq!(
        body,
        r#"{"error":{"code":"not_found","message":"no route matches this request"}}"#
    );

    // Half the replicas on 2.0.0 (a rollout waiting for confirmation): the
    // beta rule pins 2.0.0 on whichever bases run it.
    ctl.apply(
        work.path(),
        "2.0.0",
        &spec("\n  strategy: { batches: 2, needConfirm: true }"),
    );
    eventually("two replicas run 2.0.0", || {
        let table = ctl.endpoints();
        let replicas = table["deployments"][0]["replicas"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        replicas
            .iter()
            .filter(|r| r["versions"] == serde_json::json!(["2.0.0"]) && r["ready"] == true)
            .count()
            == 2
    });
    let before = served(&all);
    let beta = send(&gateway, 40, &[("x-beta", "yes")]);
    assert!(beta.iter().all(|m| m == "hello@2.0.0"), "{beta:?}");
    let v2 = delta(&all, &before);
    assert_eq!(
        v2.iter().filter(|n| **n > 0).count(),
        2,
        "2.0.0 traffic: {v2:?}"
    );
    // The gateway's metrics and the wide listing.
    assert!(
        gateway.metric(
            "berth_gateway_requests_total",
            &[("module", "hello"), ("code", "200")]
        ) >= 300.0
    );
    assert_eq!(
        gateway.metric(
            "berth_gateway_requests_total",
            &[("module", "none"), ("code", "404")]
        ),
        1.0
    );
    let mut wide = berth(&["get", "deployments", "-o", "wide"]);
    wide.args(["--controller", &ctl.addr]);
    let wide = stdout(wide);
    for b in &bases {
        let ingress = b.ingress.trim_start_matches("http://");
        assert!(wide.contains(ingress), "{ingress} not in:\n{wide}");
    }
}

#[test]
fn a_base_killed_under_load_costs_at_most_its_requests_in_flight() {
    let work = work_dir();
    let ctl = Controller::start(work.path(), 0, &[]);
    let mut bases: Vec<Option<BaseProcess>> = ["a", "b", "c"]
        .iter()
        .map(|n| Some(ctl.base(n, "group=online")))
        .collect();
    let gateway = Gateway::start(&ctl.addr);
    ctl.apply(
        work.path(),
        "1.0.0",
        "replicas: 3\n  baseSelector: { group: online }",
    );
    ctl.wait_ready(3, "1.0.0");
    eventually("the gateway routes /hello", || {
        get(&gateway.addr, "/hello", &[]).is_some_and(|(status, _)| status == 200)
    });
    let clients = 4;
    let load = Load::start(&gateway.addr, clients);
    load.wait_answers(100);
    let mut victim = bases[0].take().unwrap();
    victim.child.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    let _ = victim.child.wait();
    load.wait_answers(300);
    let (answered, failures) = load.finish();
    assert!(
        failures.len() <= clients,
        "{} of {answered} requests failed, more than were in flight: {failures:?}",
        failures.len()
    );
    assert!(
        failures
            .iter()
            .all(|(at, _)| *at < killed + Duration::from_millis(500)),
        "failures after the ejection: {failures:?}"
    );
    assert!(
        gateway.metric("berth_gateway_ejections_total", &[("module", "hello")]) >= 1.0,
        "the dead replica was never ejected"
    );
}

#[test]
fn scaling_in_and_a_version_change_under_load_through_the_gateway_fail_nothing() {
    let work = work_dir();
    // The default drain grace period: 2 s.
    let ctl = Controller::start(work.path(), 0, &[]);
    let bases: Vec<BaseProcess> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| ctl.base(n, "group=online"))
        .collect();
    let gateway = Gateway::start(&ctl.addr);
    ctl.apply(
        work.path(),
        "1.0.0",
        "replicas: 4\n  baseSelector: { group: online }",
    );
    ctl.wait_ready(4, "1.0.0");
    eventually("the gateway routes /hello", || {
        get(&gateway.addr, "/hello", &[]).is_some_and(|(status, _)| status == 200)
    });
    let load = Load::start(&gateway.addr, 4);
    load.wait_answers(100);
    ctl.apply(
        work.path(),
        "1.0.0",
        "replicas: 1\n  baseSelector: { group: online }",
    );
    // The three removed replicas drain first, then go.
    let table = ctl.endpoints();
    let draining = table["deployments"][0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["draining"] == true)
        .count();
    assert_eq!(draining, 3, "{table}");
    let serving = || {
        bases
            .iter()
            .filter(|b| {
                get(b.ingress.trim_start_matches("http://"), "/hello", &[])
                    .is_some_and(|(status, _)| status == 200)
            })
            .count()
    };
    // Still installed while they drain (the gateway sends them nothing new)...
    assert_eq!(serving(), 4, "a replica went before its drain");
    // ...and uninstalled after it.
    eventually("one base serving hello", || serving() == 1);
    load.wait_answers(100);
    // A version change of the replica left, under the same load.
    ctl.apply(
        work.path(),
        "2.0.0",
        "replicas: 1\n  baseSelector: { group: online }",
    );
    ctl.wait_ready(1, "2.0.0");
    load.wait_answers(100);
    let (answered, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {answered} failed: {failures:?}",
        failures.len()
    );
}

#[test]
fn a_gateway_started_before_its_controllers_serves_once_one_answers() {
    let work = work_dir();
    let free_port = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    // Two controllers named: one never comes, the other comes late. This
    // gateway speaks HTTP/1 to bases (the others here speak the default,
    // HTTP/2), so that path is covered end to end too.
    let (never, port) = (free_port(), free_port());
    let gateway = Gateway::start_with(
        &format!("127.0.0.1:{never},http://127.0.0.1:{port}"),
        &["--base-protocol", "http1"],
    );
    let (status, body) = get(&gateway.addr, "/hello", &[]).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not reached its controller"), "{body}");
    // It retries every second; let it fail a few times.
    eventually("the gateway logs the unreachable controller", || {
        gateway.log().contains("cannot reach the controller")
    });
    std::thread::sleep(Duration::from_millis(2500));
    let ctl = Controller::start(work.path(), port, &[]);
    let _base = ctl.base("a", "group=online");
    ctl.apply(
        work.path(),
        "1.0.0",
        "replicas: 1\n  baseSelector: { group: online }",
    );
    eventually("the gateway serves /hello", || {
        get(&gateway.addr, "/hello", &[]).is_some_and(|(status, _)| status == 200)
    });
    let log = gateway.log();
    assert_eq!(
        log.matches("cannot reach the controller").count(),
        1,
        "one line per outage:\n{log}"
    );
    assert!(log.contains("endpoint table received"), "{log}");
}

#[test]
fn a_gateway_refuses_bad_flags_naming_them() {
    let err = failure(berth(&[
        "gateway",
        "--controller",
        " , ",
        "--listen",
        "127.0.0.1:0",
    ]));
    assert!(
        err.contains("--controller names no controller") && err.contains("--controller http://"),
        "{err}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = failure(berth(&[
        "gateway",
        "--controller",
        "127.0.0.1:1",
        "--listen",
        &addr,
    ]));
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    // The error of a gateway given one bad `flag value`.
    let refused = |flag: &str, value: &str| {
        failure(berth(&[
            "gateway",
            "--controller",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
            flag,
            value,
        ]))
    };
    let err = refused("--base-protocol", "http3");
    assert!(
        err.contains("invalid value 'http3' for '--base-protocol")
            && err.contains("give http2 or http1"),
        "{err}"
    );
    // A load report interval that is no duration, zero, or out of range.
    for (value, says) in [
        (
            "fast",
            "`fast` is not a duration (expected number at 0); give e.g. 250ms or 1s",
        ),
        (
            "0s",
            "--load-report-interval 0s is out of range: give a duration from 10ms to 4s, e.g. 250ms",
        ),
        ("1ms", "--load-report-interval 1ms is out of range"),
        (
            "10s",
            "longer outlives the 5 s the controller keeps a report",
        ),
    ] {
        let err = refused("--load-report-interval", value);
        assert!(
            err.contains(&format!(
                "invalid value '{value}' for '--load-report-interval"
            )) && err.contains(says),
            "{value}: {err}"
        );
    }
}

/// `--load-report-interval` sets how often the gateway reports load: at
/// 2 s, a 3 s window sees at most 2 reports (at the 250 ms default it
/// would see about 12). Counted by the controller's
/// `berth_controller_load_reports_total`.
#[test]
fn a_gateway_reports_load_at_its_interval() {
    let work = work_dir();
    let ctl = Controller::start(work.path(), 0, &[]);
    let reports =
        || crate::controller::metric(&ctl.addr, "berth_controller_load_reports_total", &[]);
    let _gateway = Gateway::start_with(&ctl.addr, &["--load-report-interval", "2s"]);
    eventually("the gateway's first load report", || reports() >= 1.0);
    let (before, since) = (reports(), Instant::now());
    // A measurement window, not a wait for a state: the count in it is
    // bounded above, whatever else slows the machine.
    std::thread::sleep(Duration::from_secs(3));
    let more = reports() - before;
    let bound = (since.elapsed().as_secs_f64() / 2.0).floor() + 1.0;
    assert!(
        more <= bound,
        "{more} reports in {:?} at --load-report-interval 2s (at most {bound})",
        since.elapsed()
    );
}

/// A scale-in that removed several replicas before the gateway heard of
/// it (the controller is frozen, so the table stays stale; scale-in 8 → 1
/// removes 7 at once): a request that meets one gone replica and then
/// another still reaches the one left. With a single retry on a base's
/// "no module here" 404, such a request was answered 502 (this test then
/// fails on its first one).
#[test]
fn replicas_gone_from_several_bases_before_the_gateway_knew_cost_no_request() {
    let work = work_dir();
    let ctl = Controller::start(work.path(), 0, &[]);
    let (bases, gateway) = hello_on_every_base(&ctl, work.path(), &["a", "b", "c"]);
    let [a, b, c] = &bases[..] else {
        unreachable!()
    };
    signal(&ctl.child, "STOP");
    for gone in [a, b] {
        stdout(gone.berth(&["undeploy", "hello"]));
    }
    let before = served(&[a, b, c]);
    let answered = send(&gateway, 60, &[]);
    signal(&ctl.child, "CONT");
    assert!(answered.iter().all(|m| m == "hello@1.0.0"), "{answered:?}");
    assert_eq!(delta(&[a, b, c], &before), vec![0, 0, 60]);
    assert!(
        gateway.metric("berth_gateway_retries_total", &[("module", "hello")]) >= 2.0,
        "the gone replicas were never tried"
    );
}

/// A replica removed from its base before the gateway heard of it (the
/// controller is frozen, so the gateway's table stays stale): the base
/// answers 404 saying no module is there, and the gateway sends the
/// request to the other replica instead of passing the 404 on.
#[test]
fn a_replica_gone_from_its_base_before_the_gateway_knew_costs_no_request() {
    let work = work_dir();
    let ctl = Controller::start(work.path(), 0, &[]);
    let (bases, gateway) = hello_on_every_base(&ctl, work.path(), &["a", "b"]);
    let [a, b] = &bases[..] else { unreachable!() };
    signal(&ctl.child, "STOP");
    stdout(a.berth(&["undeploy", "hello"]));
    let (status, head, _) =
        fetch(a.ingress.trim_start_matches("http://"), "/hello", &[]).expect("base a answers");
    assert_eq!(status, 404);
    assert!(head.contains("x-berth-not-here: 1"), "{head}");
    let before = served(&[a, b]);
    let answered = send(&gateway, 40, &[]);
    signal(&ctl.child, "CONT");
    assert!(answered.iter().all(|m| m == "hello@1.0.0"), "{answered:?}");
    assert_eq!(delta(&[a, b], &before), vec![0, 40]);
    assert!(
        gateway.metric("berth_gateway_retries_total", &[("module", "hello")]) >= 1.0,
        "the stale replica was never tried"
    );
}

/// Bases named `names` in group `online`, a gateway, and `hello` with a
/// replica on each base, served through the gateway.
fn hello_on_every_base(
    ctl: &Controller,
    work: &std::path::Path,
    names: &[&str],
) -> (Vec<BaseProcess>, Gateway) {
    let bases: Vec<BaseProcess> = names.iter().map(|n| ctl.base(n, "group=online")).collect();
    let gateway = Gateway::start(&ctl.addr);
    ctl.apply(
        work,
        "1.0.0",
        &format!(
            "replicas: {}\n  baseSelector: {{ group: online }}",
            names.len()
        ),
    );
    ctl.wait_ready(names.len(), "1.0.0");
    eventually("the gateway routes /hello", || {
        get(&gateway.addr, "/hello", &[]).is_some_and(|(status, _)| status == 200)
    });
    (bases, gateway)
}

/// The cold start a held request reports, from its response head.
fn cold_start_ms(head: &str) -> u64 {
    head.lines()
        .find_map(|l| l.strip_prefix("x-berth-cold-start-ms: "))
        .unwrap_or_else(|| panic!("no cold start header in\n{head}"))
        .parse()
        .unwrap()
}

impl Controller {
    /// The stored deployment `hello` with its status.
    fn hello(&self) -> serde_json::Value {
        let (_, body) =
            get(&self.addr, "/v1/deployments/hello", &[]).expect("the controller answers");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until `hello` went idle to zero: the controller says so and
    /// no replica is left in the endpoint table.
    fn wait_zero(&self) {
        eventually("hello scaled to zero", || {
            self.hello()["status"]["scaledToZero"] == true
                && self.endpoints()["deployments"][0]["replicas"]
                    .as_array()
                    .is_some_and(Vec::is_empty)
        });
    }
}

/// Waits until `base` no longer serves `hello` (uninstalled after its drain).
fn wait_dropped(base: &BaseProcess) {
    eventually("the base dropped hello", || {
        get(base.ingress.trim_start_matches("http://"), "/hello", &[])
            .is_some_and(|(status, _)| status == 404)
    });
}

/// Sends `signal` (`STOP`, `CONT`) to `child`.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

/// A request through the gateway sent from a thread: it may be held.
fn in_thread(gateway: &Gateway) -> std::thread::JoinHandle<(u16, String, String)> {
    let addr = gateway.addr.clone();
    std::thread::spawn(move || fetch(&addr, "/hello", &[]).expect("the gateway answers"))
}

#[test]
fn an_idle_deployment_goes_to_zero_and_the_next_request_through_the_gateway_activates_it() {
    let work = work_dir();
    let ctl = Controller::start(work.path(), 0, &["--drain-grace", "200ms"]);
    let base = ctl.base("a", "group=online");
    ctl.apply(
        work.path(),
        "1.0.0",
        "replicas: 1\n  scaleToZero: { idleAfter: 1s }\n  baseSelector: { group: online }",
    );
    let gateway = Gateway::start(&ctl.addr);
    ctl.wait_ready(1, "1.0.0");
    // The gateway's table follows the controller's by a long poll: a
    // request sent before it shows the replica would be held (for 0 ms).
    eventually("the gateway routes to the ready replica", || {
        gateway.metric("berth_gateway_replicas", &[("module", "hello")]) == 1.0
    });
    let (status, head, _) = fetch(&gateway.addr, "/hello", &[]).unwrap();
    assert_eq!(status, 200);
    assert!(!head.contains("x-berth-cold-start-ms"), "{head}");
    // No request for idleAfter: 0 replicas, nothing left on the base.
    ctl.wait_zero();
    wait_dropped(&base);
    // The next request is held, activates it, and is answered.
    let (status, head, body) = fetch(&gateway.addr, "/hello", &[]).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(cold_start_ms(&head) > 0, "{head}");
    let hello = ctl.hello();
    assert_ne!(hello["status"]["scaledToZero"], true, "{hello}");
    assert_eq!(
        gateway.metric("berth_gateway_queue_depth", &[("module", "hello")]),
        0.0
    );
    // Served by a replica again: the following requests are not held.
    let (status, head, _) = fetch(&gateway.addr, "/hello", &[]).unwrap();
    assert_eq!(status, 200);
    assert!(!head.contains("x-berth-cold-start-ms"), "{head}");
}

#[test]
fn held_requests_beyond_the_queue_and_an_activation_no_base_can_take_get_503_saying_why() {
    let work = work_dir();
    let ctl = Controller::start(work.path(), 0, &["--drain-grace", "200ms"]);
    let base = ctl.base("a", "group=online");
    let zero = "replicas: 1\n  scaleToZero: { idleAfter: 1s }";
    ctl.apply(
        work.path(),
        "1.0.0",
        &format!("{zero}\n  baseSelector: {{ group: online }}"),
    );
    let gateway = Gateway::start_with(&ctl.addr, &["--hold-queue", "1", "--hold-timeout", "15s"]);
    ctl.wait_zero();
    // The gateway follows the table a moment later: until it has seen zero
    // replicas, a request would go to the (soon frozen) base, not the queue.
    eventually("the gateway saw zero replicas", || {
        get(&gateway.addr, "/metrics", &[]).is_some_and(|(_, text)| {
            text.lines()
                .any(|l| l == "berth_gateway_replicas{module=\"hello\"} 0")
        })
    });
    // The base is frozen once it has uninstalled hello (frozen before, its
    // last report would still show hello ready, and the controller would
    // route the activation's request to it): the activated replica cannot
    // start, so the first request stays held and fills the queue of one.
    wait_dropped(&base);
    signal(&base.child, "STOP");
    let held = in_thread(&gateway);
    eventually("one request held", || {
        gateway.metric("berth_gateway_queue_depth", &[("module", "hello")]) == 1.0
    });
    let (status, body) = get(&gateway.addr, "/hello", &[]).unwrap();
    signal(&base.child, "CONT");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(
            "module `hello` has no ready replica: its hold queue is full (1 requests already wait"
        ),
        "{body}"
    );
    // The base thaws: the held request flows.
    let (status, head, body) = held.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(cold_start_ms(&head) > 0, "{head}");
    // At zero again, its bases gone from its selector: the controller
    // cannot place a replica, and the gateway says so at once.
    ctl.wait_zero();
    ctl.apply(
        work.path(),
        "1.0.0",
        &format!("{zero}\n  baseSelector: {{ group: nowhere }}"),
    );
    let asked = Instant::now();
    let (status, body) = get(&gateway.addr, "/hello", &[]).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("module `hello` has no ready replica: the controller cannot activate it: no base can run a replica of ModuleDeployment `hello`: no Ready base matches group=nowhere"),
        "{body}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn bases_killed_and_restarted_under_load_during_a_rollout_keep_every_module_reachable() {
    let work = work_dir();
    let ctl = Controller::start(work.path(), 0, &[]);
    let names = ["a", "b", "c"];
    let dirs: Vec<tempfile::TempDir> = names.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let mut bases: Vec<BaseProcess> = names
        .iter()
        .zip(&dirs)
        .map(|(name, dir)| ctl.base_at(dir.path(), name, "group=online"))
        .collect();
    let gateway = Gateway::start(&ctl.addr);
    let hello = "replicas: 3\n  baseSelector: { group: online }\n  strategy: { batches: 3, pauseBetween: 3s }";
    ctl.apply(work.path(), "1.0.0", hello);
    ctl.apply_module(
        work.path(),
        "echo",
        berth_example_modules::ECHO,
        "1",
        "replicas: 3\n  baseSelector: { group: online }",
    );
    ctl.wait_ready(3, "1.0.0");
    ctl.wait_ready_of("echo", 3, "1");
    eventually("the gateway routes both modules", || {
        ["/hello", "/echo"]
            .iter()
            .all(|path| get(&gateway.addr, path, &[]).is_some_and(|(status, _)| status == 200))
    });
    let clients = 3;
    let loads = [
        Load::start_on(&gateway.addr, "/hello", clients),
        Load::start_on(&gateway.addr, "/echo", clients),
    ];
    for load in &loads {
        load.wait_answers(50);
    }
    // A rollout to 2.0.0 in three batches, while the bases are killed and
    // restarted one after the other.
    ctl.apply(work.path(), "2.0.0", hello);
    let mut kills: Vec<Instant> = Vec::new();
    let mut during_rollout = 0;
    for round in 0..5 {
        // One kill every 3 s (pacing the chaos, not waiting for a state).
        if let Some(last) = kills.last() {
            std::thread::sleep(
                (*last + Duration::from_secs(3)).saturating_duration_since(Instant::now()),
            );
        }
        let i = round % names.len();
        if !ctl.hello()["rollout"].is_null() {
            during_rollout += 1;
        }
        bases[i].child.kill().unwrap(); // SIGKILL
        kills.push(Instant::now());
        let _ = bases[i].child.wait();
        bases[i] = ctl.base_at(dirs[i].path(), names[i], "group=online");
        // Back and serving both modules on its own ingress, and both still
        // answered through the gateway, before the next kill.
        let ingress = bases[i].ingress.trim_start_matches("http://").to_string();
        eventually(&format!("{} serves again after its kill", names[i]), || {
            ["/hello", "/echo"]
                .iter()
                .all(|path| get(&ingress, path, &[]).is_some_and(|(status, _)| status == 200))
        });
        for load in &loads {
            load.wait_answers(30);
        }
    }
    assert!(
        during_rollout >= 2,
        "only {during_rollout} kills fell in the rollout"
    );
    // The rollout finishes: every replica runs the new version, and the
    // gateway sends every request to it.
    ctl.wait_ready(3, "2.0.0");
    eventually("the rollout is over", || ctl.hello()["rollout"].is_null());
    let served = send(&gateway, 20, &[]);
    assert!(served.iter().all(|m| m == "hello@2.0.0"), "{served:?}");
    let mut failed = Vec::new();
    let mut answered = 0;
    for load in loads {
        let (ok, failures) = load.finish();
        answered += ok;
        failed.extend(failures);
    }
    eprintln!(
        "chaos: {} kills ({during_rollout} during the rollout), {answered} requests answered, {} failed",
        kills.len(),
        failed.len()
    );
    // Only requests in flight at a kill may fail: at most one per client
    // per kill, each within a moment of a kill.
    assert!(
        failed.len() <= kills.len() * clients * 2,
        "{} of {answered} failed: {failed:?}",
        failed.len()
    );
    assert!(
        failed.iter().all(|(at, _)| kills
            .iter()
            .any(|k| *at >= *k && *at < *k + Duration::from_secs(1))),
        "failures away from any kill: {failed:?}"
    );
}

/// Installs Debian's `hey` load generator when it is missing (once).
fn ensure_hey() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let present = Command::new("hey")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if present {
            return;
        }
        eprintln!("hey is missing: installing Debian's hey (apt-get, once)");
        let installed = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey",
            ])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed,
            "cannot install hey; run `apt-get update && apt-get install -y hey` as root"
        );
    });
}

/// What one `hey` run reported.
#[derive(Debug)]
pub(crate) struct Hey {
    /// Requests per second.
    pub(crate) rps: f64,
    /// 200 answers.
    pub(crate) ok: u64,
    /// Other answers and errors, as hey printed them.
    pub(crate) failed: Vec<String>,
}

/// `hey -z SECS -c WORKERS -q RATE` (rate per worker) on `url`, in a thread.
pub(crate) fn hey(url: &str, secs: u32, workers: u32, rate: u32) -> std::thread::JoinHandle<Hey> {
    ensure_hey();
    let url = url.to_string();
    std::thread::spawn(move || {
        let out = Command::new("hey")
            .args(["-z", &format!("{secs}s"), "-c", &workers.to_string()])
            .args(["-q", &rate.to_string(), "-t", "10", &url])
            .output()
            .expect("hey runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let rps = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no rate in hey's output:\n{text}"));
        let mut ok = 0;
        let mut failed = Vec::new();
        let mut section = "";
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.ends_with("distribution:") {
                section = if trimmed.starts_with("Status code") {
                    "codes"
                } else if trimmed.starts_with("Error") {
                    "errors"
                } else {
                    ""
                };
                continue;
            }
            if trimmed.is_empty() || !line.starts_with("  ") {
                if !line.starts_with("  ") {
                    section = "";
                }
                continue;
            }
            match section {
                "codes" if trimmed.starts_with("[200]") => {
                    ok += trimmed
                        .trim_start_matches("[200]")
                        .split_whitespace()
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                }
                "codes" | "errors" => failed.push(trimmed.to_string()),
                _ => {}
            }
        }
        Hey { rps, ok, failed }
    })
}

#[test]
fn an_autoscaled_deployment_follows_a_load_ramp_through_the_gateway() {
    let work = work_dir();
    let ctl = Controller::start(work.path(), 0, &["--drain-grace", "500ms"]);
    let _bases: Vec<BaseProcess> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| ctl.base(n, "group=online"))
        .collect();
    let gateway = Gateway::start(&ctl.addr);
    // One replica carries 40 requests/s.
    ctl.apply(
        work.path(),
        "1.0.0",
        "autoscale: { minReplicas: 1, maxReplicas: 4, target: { rps: 40 }, scaleUpWindow: 1s, scaleDownWindow: 3s }\n  baseSelector: { group: online }",
    );
    ctl.wait_ready(1, "1.0.0");
    let url = format!("http://{}/hello", gateway.addr);
    eventually("the gateway routes /hello", || {
        get(&gateway.addr, "/hello", &[]).is_some_and(|(status, _)| status == 200)
    });
    let desired = || ctl.hello()["status"]["desired"].as_u64().unwrap_or(0);
    // ~15 requests/s: one replica is enough, and stays.
    let low = hey(&url, 3, 1, 15);
    let mut most = 0;
    while !low.is_finished() {
        most = most.max(desired());
        std::thread::sleep(Duration::from_millis(100));
    }
    let low = low.join().unwrap();
    assert_eq!(most, 1, "scaled beyond one replica at {:.0}/s", low.rps);
    // ~160 requests/s: four replicas, all serving through the gateway.
    let high = hey(&url, 8, 4, 40);
    ctl.wait_ready(4, "1.0.0");
    let high = high.join().unwrap();
    let ended = Instant::now();
    assert!(
        high.rps > 3.0 * 40.0,
        "the ramp reached only {:.0}/s",
        high.rps
    );
    // Back to ~15 requests/s: after the scale-down window, one replica,
    // the others drained first.
    let after = hey(&url, 7, 1, 15);
    ctl.wait_ready(1, "1.0.0");
    let fell = ended.elapsed();
    assert!(
        fell >= Duration::from_secs(3),
        "scaled down {fell:?} after the load fell, within the 3 s window"
    );
    assert_eq!(desired(), 1);
    let after = after.join().unwrap();
    eprintln!(
        "ramp: {:.0}/s on 1 replica, {:.0}/s on 4, {:.0}/s back on 1 after {fell:?}",
        low.rps, high.rps, after.rps
    );
    for run in [&low, &high, &after] {
        assert!(run.ok > 0 && run.failed.is_empty(), "{run:?}");
    }
    let described = stdout({
        let mut cmd = berth(&["describe", "deployment", "hello"]);
        cmd.args(["--controller", &ctl.addr]);
        cmd
    });
    assert!(described.contains("Autoscaled"), "{described}");
}
