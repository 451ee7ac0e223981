//! Exhaustion against a real `berth base` process: 10,000 idle connections
//! and a flood of installs, while a module keeps serving. The in-process
//! cases (slowloris headers, a 1 GB upload, a small connection cap) are in
//! crates/base/tests/all/exhaustion.rs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_example_modules::HELLO;
use futures::StreamExt as _;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

use crate::support::BaseProcess;

/// How many idle connections the flood opens.
const IDLE: usize = 10_000;

/// The flood uses half the fds a test process may have: one flood at a time.
static FD_HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Raises this process's soft open-files limit to its hard limit (the
/// flood needs more than a usual soft limit of 1024) and returns it.
#[allow(unsafe_code)]
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write `limit`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    limit.rlim_cur
}

/// The soft "Max open files" of process `pid`, from /proc.
fn process_fd_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// How many file descriptors process `pid` holds.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A client that keeps asking `path` of the ingress at `addr` on one
/// HTTP/1 connection (opened before any flood, never replaced) until told
/// to stop, counting answers that were not hello's.
struct Steady {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    slowest_us: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// GET `path` on the connection `sender`: the status and body, or what failed.
async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    path: &str,
) -> Result<(u16, String), String> {
    use http_body_util::BodyExt as _;
    sender.ready().await.map_err(|e| format!("{e:?}"))?;
    let request = hyper::Request::get(path)
        .header("host", "steady")
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

impl Steady {
    /// Starts once a first request has succeeded (so its connection is
    /// open before any flood).
    async fn start(ingress: &str, path: &'static str) -> Self {
        let stream = TcpStream::connect(host_port(ingress)).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let first = get_on(&mut sender, path).await;
        assert_eq!(first, Ok((200, "Hello from berth!\n".into())));
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let slowest_us = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (stop, ok, failed, slowest_us) =
                (stop.clone(), ok.clone(), failed.clone(), slowest_us.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let answer = get_on(&mut sender, path).await;
                    slowest_us.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    match answer {
                        Ok((200, body)) if body == "Hello from berth!\n" => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((status, body)) => {
                            failed.lock().unwrap().push(format!("{status} {body}"))
                        }
                        Err(e) => {
                            failed.lock().unwrap().push(e);
                            // The connection is gone: nothing more to ask on it.
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
        Self {
            stop,
            ok,
            failed,
            slowest_us,
            task,
        }
    }

    fn served(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `more` further requests were served (so the client is
    /// shown to serve at this point), up to 30 s.
    async fn serves_on(&self, more: u64) {
        let target = self.served() + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.served() < target {
            assert!(
                Instant::now() < deadline,
                "the steady client stopped being served: {:?}",
                self.failed.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the client: (served, failures, slowest answer).
    async fn stop(self) -> (u64, Vec<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let failed = self.failed.lock().unwrap().clone();
        (
            self.ok.load(Ordering::Relaxed),
            failed,
            Duration::from_micros(self.slowest_us.load(Ordering::Relaxed)),
        )
    }
}

/// Opens `count` TCP connections to `addr` (256 connecting at once, so the
/// listen backlog never overflows into SYN retries) and sends nothing.
async fn open_idle(addr: &str, count: usize) -> Vec<TcpStream> {
    futures::stream::iter(0..count)
        .map(|_| async move {
            TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
        })
        .buffer_unordered(256)
        .collect()
        .await
}

/// Sorts idle connections into those the base refused (a 503 naming the
/// limit, then closed) and those it holds open and silent, until `open`
/// says the count of silent ones is right, or 30 s pass (connections still
/// in the kernel's queue are answered once the base accepts them). Panics
/// on any other answer. Returns (refused, held open).
async fn settle(conns: &mut Vec<TcpStream>, open: impl Fn(usize) -> bool) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    loop {
        // In the order of `conns` (`buffered`, not `buffer_unordered`):
        // the answers say which connections to keep.
        let answers: Vec<Option<String>> = futures::stream::iter(conns.iter_mut())
            .map(|conn| async move {
                let mut got = Vec::new();
                let quiet = Duration::from_millis(300);
                match tokio::time::timeout(quiet, conn.read_to_end(&mut got)).await {
                    Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
                    Err(_) if got.is_empty() => None,
                    Err(_) => {
                        // Part of an answer: read the rest of it.
                        let rest = Duration::from_secs(5);
                        let _ = tokio::time::timeout(rest, conn.read_to_end(&mut got)).await;
                        Some(String::from_utf8_lossy(&got).into_owned())
                    }
                }
            })
            .buffered(IDLE)
            .collect()
            .await;
        let mut silent = answers.iter().map(Option::is_none);
        conns.retain(|_| silent.next().unwrap());
        for answer in answers.into_iter().flatten() {
            assert!(
                answer.starts_with("HTTP/1.1 503")
                    && answer.contains("retry-after: 1")
                    && answer.contains("--max-connections"),
                "a connection over the cap got: {answer:?}"
            );
            refused += 1;
        }
        if open(conns.len()) || Instant::now() > deadline {
            return (refused, conns.len());
        }
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// GET `url` on a new connection: (status, body).
async fn fresh_get(url: &str) -> Result<(u16, String), String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let response = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.map_err(|e| e.to_string())?))
}

/// Starts a base with `cap` connections per listener and `hello` installed,
/// and checks its own open-files limit fits the flood.
fn base_with_cap(cap: usize) -> BaseProcess {
    let base = BaseProcess::start_with(&[
        "--max-connections",
        &cap.to_string(),
        // Longer than the test: idle connections stay until it drops them.
        "--header-read-timeout",
        "120s",
    ]);
    crate::support::stdout(base.berth(&["deploy", HELLO, "--name", "hello", "--version", "1.0.0"]));
    let limit = process_fd_limit(base.child.id());
    assert!(
        limit as usize > IDLE.min(cap) + 100,
        "the base may open {limit} files, too few for {IDLE} connections"
    );
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_leave_a_module_serving() {
    let _one_flood = FD_HEAVY.lock().await;
    let limit = raise_fd_limit();
    assert!(
        limit as usize > IDLE + 1000,
        "this test needs {IDLE} connections and may open {limit} files"
    );
    let base = base_with_cap(IDLE + 2000);
    let pid = base.child.id();
    let hello = format!("{}/hello", base.ingress);
    let steady = Steady::start(&base.ingress, "/hello").await;
    let before = open_fds(pid);

    let started = Instant::now();
    let mut idle = open_idle(&host_port(&base.ingress), IDLE).await;
    let opened_in = started.elapsed();
    // The base holds every one of them (a descriptor each) ...
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(pid) < before + IDLE {
        assert!(
            Instant::now() < deadline,
            "the base holds {} descriptors, {before} before the flood",
            open_fds(pid)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... refuses none of them, and serves the steady client and new ones.
    steady.serves_on(50).await;
    assert_eq!(
        fresh_get(&hello).await,
        Ok((200, "Hello from berth!\n".into()))
    );
    let health = fresh_get(&format!("{}/v1/health", base.ops)).await;
    assert_eq!(health.map(|(s, _)| s), Ok(200));
    let (refused, open) = settle(&mut idle, |_| true).await;
    assert_eq!((refused, open), (0, IDLE));

    drop(idle);
    steady.serves_on(50).await;
    let (served, failed, slowest) = steady.stop().await;
    assert!(failed.is_empty(), "the steady client failed: {failed:?}");
    println!(
        "{IDLE} idle connections opened in {opened_in:?}; steady client: {served} served, \
         0 failed, slowest {slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_cleanly_while_the_base_serves() {
    const CAP: usize = 1000;
    let _one_flood = FD_HEAVY.lock().await;
    raise_fd_limit();
    let base = base_with_cap(CAP);
    let hello = format!("{}/hello", base.ingress);
    // Connected before the flood: it holds one of the CAP connections.
    let steady = Steady::start(&base.ingress, "/hello").await;

    let mut idle = open_idle(&host_port(&base.ingress), IDLE).await;
    let (refused, open) = settle(&mut idle, |open| open < CAP).await;
    assert_eq!(
        (refused, open),
        (IDLE - (CAP - 1), CAP - 1),
        "(refused, held open) with a cap of {CAP} and the steady client holding one"
    );
    // At the cap: the kept-alive client is served, a new one is told why not.
    steady.serves_on(50).await;
    // (An HTTP client gets the 503 as the answer to its request: the base
    // drains what it sent before closing, so no reset discards the 503.)
    // While the flood's own refusals are still draining (at most 1024 at
    // once, each up to 500 ms), a new client may get a reset instead: poll.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        match fresh_get(&hello).await {
            Ok(answer) => break answer,
            Err(e) => assert!(Instant::now() < deadline, "no 503 at the cap: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("{CAP} connections open")) && body.contains("--max-connections"),
        "{body}"
    );
    // The ops API has its own cap: still answering.
    let health = fresh_get(&format!("{}/v1/health", base.ops)).await;
    assert_eq!(health.map(|(s, _)| s), Ok(200));

    // Once the idle ones go, new connections are served again.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = fresh_get(&hello).await;
        if answer.as_ref().is_ok_and(|(s, _)| *s == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not served after the flood: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (served, failed, slowest) = steady.stop().await;
    assert!(failed.is_empty(), "the steady client failed: {failed:?}");
    println!(
        "cap {CAP}: {refused} of {IDLE} refused with a 503, {open} held; steady client: \
         {served} served, 0 failed, slowest {slowest:?}"
    );
}

/// POST an install request to the base's ops API: (status, Retry-After, body).
async fn post_install(
    client: &reqwest::Client,
    ops: &str,
    request: &serde_json::Value,
) -> (u16, Option<String>, serde_json::Value) {
    let response = client
        .post(format!("{ops}/v1/modules"))
        .json(request)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry_after, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_flood_is_admitted_or_refused_clearly_while_a_module_serves() {
    const GOOD: usize = 200;
    const PENDING: usize = 8;
    let base = BaseProcess::start_with(&["--max-pending-installs", &PENDING.to_string()]);
    crate::support::stdout(base.berth(&["deploy", HELLO, "--name", "hello", "--version", "1.0.0"]));
    let steady = Steady::start(&base.ingress, "/hello").await;
    let work = crate::support::work_dir();
    let not_wasm = work.path().join("notes.wasm");
    std::fs::write(&not_wasm, "plain text, not a component\n").unwrap();

    // 200 distinct name@versions of a real module, and 40 bad requests of
    // four kinds, each with the answer it must get.
    let mut requests: Vec<(serde_json::Value, Option<(u16, &str)>)> = (0..GOOD)
        .map(|i| {
            let request = serde_json::json!({
                "name": format!("m{}", i / 2),
                "version": format!("1.0.{}", i % 2),
                "artifact": {"path": HELLO},
                "route": {"pathPrefix": format!("/m{}", i / 2)},
            });
            (request, None)
        })
        .collect();
    for i in 0..10 {
        let bad = [
            (
                serde_json::json!({"name": format!("Bad Name {i}"), "version": "1.0.0", "artifact": {"path": HELLO}}),
                (400, "invalid_request"),
            ),
            (
                serde_json::json!({"name": format!("text{i}"), "version": "1.0.0", "artifact": {"path": not_wasm}}),
                (422, "not_wasm"),
            ),
            (
                serde_json::json!({"name": format!("shadow{i}"), "version": "1.0.0", "artifact": {"path": "/etc/shadow"}}),
                (403, "artifact_forbidden"),
            ),
            (
                serde_json::json!({"name": format!("wrong{i}"), "version": "1.0.0", "artifact": {"path": HELLO},
                    "digest": format!("sha256:{}", "0".repeat(64))}),
                (422, "digest_mismatch"),
            ),
        ];
        requests.extend(bad.into_iter().map(|(r, want)| (r, Some(want))));
    }
    fastrand_shuffle(&mut requests);

    let client = reqwest::Client::new();
    let started = Instant::now();
    let answers: Vec<_> = futures::future::join_all(requests.iter().map(|(request, want)| {
        let (client, ops) = (&client, &base.ops);
        async move { (request, *want, post_install(client, ops, request).await) }
    }))
    .await;
    let flood_took = started.elapsed();

    let mut installed = std::collections::BTreeSet::new();
    let mut busy = Vec::new();
    let mut refused_bad = 0;
    for (request, want, answer) in answers {
        match judge(request, want, answer) {
            Verdict::Installed(label) => drop(installed.insert(label)),
            Verdict::Refused => refused_bad += 1,
            Verdict::Busy => busy.push((request.clone(), want)),
        }
    }
    // The flood overran the limit, and the base said so rather than queue it all.
    assert!(
        !busy.is_empty(),
        "{GOOD} installs at once never met the limit of {PENDING}"
    );
    assert_eq!(installed.len() + refused_bad + busy.len(), requests.len());
    // The base lists exactly what it answered 201 to (and hello).
    let listed = || async {
        let list: serde_json::Value = reqwest::get(format!("{}/v1/modules", base.ops))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                format!(
                    "{}@{}",
                    m["name"].as_str().unwrap(),
                    m["version"].as_str().unwrap()
                )
            })
            .filter(|m| m != "hello@1.0.0")
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(listed().await, installed, "listed versions after the flood");
    let installed_first = installed.len();

    // Retried as told (a second later, a few at a time), the refused ones go in.
    tokio::time::sleep(Duration::from_secs(1)).await;
    while !busy.is_empty() {
        let round = std::mem::take(&mut busy);
        let answers = futures::stream::iter(round)
            .map(|(request, want)| {
                let (client, ops) = (&client, &base.ops);
                async move {
                    let answer = post_install(client, ops, &request).await;
                    ((request, want), answer)
                }
            })
            .buffer_unordered(PENDING)
            .collect::<Vec<_>>()
            .await;
        for ((request, want), answer) in answers {
            match judge(&request, want, answer) {
                Verdict::Installed(label) => drop(installed.insert(label)),
                Verdict::Refused => refused_bad += 1,
                Verdict::Busy => busy.push((request, want)),
            }
        }
    }
    assert_eq!(
        refused_bad,
        requests.len() - GOOD,
        "every bad request got its error"
    );
    assert_eq!(installed.len(), GOOD);
    assert_eq!(listed().await, installed);
    // Each of them serves.
    for i in [0, GOOD / 2 - 1] {
        let (status, body) = fresh_get(&format!("{}/m{i}", base.ingress)).await.unwrap();
        assert_eq!((status, body.as_str()), (200, "Hello from berth!\n"));
    }
    let (served, failed, slowest) = steady.stop().await;
    assert!(failed.is_empty(), "the steady client failed: {failed:?}");
    println!(
        "{GOOD} installs + 40 bad at once in {flood_took:?}: {installed_first} installed, the \
         other {} refused with 503 too_many_installs (limit {PENDING}), all in after retrying; \
         steady client: {served} served, 0 failed, slowest {slowest:?}",
        GOOD - installed_first
    );
}

/// What the base answered one install of the flood.
enum Verdict {
    /// `201`: installed (its `name@version`).
    Installed(String),
    /// A bad request, refused with the error it deserves.
    Refused,
    /// `503 too_many_installs` with `Retry-After`: retry it.
    Busy,
}

/// Checks one answer of the flood: a good request (`want` none) is
/// installed or refused as busy; a bad one gets its `want`ed status and
/// code, or busy (admission comes before the artifact is read).
fn judge(
    request: &serde_json::Value,
    want: Option<(u16, &str)>,
    (status, retry_after, body): (u16, Option<String>, serde_json::Value),
) -> Verdict {
    let label = format!(
        "{}@{}",
        request["name"].as_str().unwrap(),
        request["version"].as_str().unwrap()
    );
    if status == 503 {
        assert_eq!(
            body["error"]["code"], "too_many_installs",
            "{label}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("--max-pending-installs"), "{body}");
        assert_eq!(retry_after.as_deref(), Some("1"), "{label}: no Retry-After");
        return Verdict::Busy;
    }
    match want {
        None => {
            assert_eq!(status, 201, "{label}: {body}");
            Verdict::Installed(label)
        }
        Some((want_status, want_code)) => {
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (want_status, Some(want_code)),
                "{label}: {body}"
            );
            Verdict::Refused
        }
    }
}

/// Shuffles `items` (Fisher-Yates), so good and bad requests interleave.
fn fastrand_shuffle<T>(items: &mut [T]) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

/// `VmRSS` and `VmHWM` (peak) of process `pid`, in MiB.
fn rss_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_allocating_to_its_limit_under_100_concurrent_requests_fails_alone() {
    const CONCURRENT: usize = 100;
    let base = BaseProcess::start();
    crate::support::stdout(base.berth(&["deploy", HELLO, "--name", "hello", "--version", "1.0.0"]));
    crate::support::stdout(base.berth(&[
        "deploy",
        berth_example_modules::HOG,
        "--name",
        "hog",
        "--version",
        "1.0.0",
        "--memory-mib",
        "8",
    ]));
    let pid = base.child.id();
    let steady = Steady::start(&base.ingress, "/hello").await;
    let (rss_before, _) = rss_mib(pid);

    // Each request grows its instance 1 MiB at a time until the limit
    // stops it: 100 instances at their limit at once.
    let client = reqwest::Client::new();
    let started = Instant::now();
    let answers = futures::future::join_all((0..CONCURRENT).map(|_| {
        let client = &client;
        let url = format!("{}/hog", base.ingress);
        async move {
            let response = client.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    }))
    .await;
    let took = started.elapsed();
    for (status, body) in &answers {
        assert_eq!(*status, 500, "{body}");
        assert!(
            body.contains("memory limit of 8 MiB") && body.contains("hog@1.0.0"),
            "{body}"
        );
    }
    // The module serves what stays within its limit, and the neighbour never stopped.
    assert_eq!(
        fresh_get(&format!("{}/hog/fine", base.ingress)).await,
        Ok((200, "hog is fine\n".into()))
    );
    steady.serves_on(20).await;
    let (rss_after, rss_peak) = rss_mib(pid);
    let (served, failed, slowest) = steady.stop().await;
    assert!(failed.is_empty(), "the steady client failed: {failed:?}");
    println!(
        "{CONCURRENT} concurrent requests each hitting an 8 MiB limit: all 500 naming it in \
         {took:?}; base RSS {rss_before} MiB before, peak {rss_peak} MiB, {rss_after} MiB after; \
         steady client: {served} served, 0 failed, slowest {slowest:?}"
    );
}
