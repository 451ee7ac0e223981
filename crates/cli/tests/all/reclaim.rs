//! Memory comes back: a real `berth base` process installs, serves and
//! uninstalls modules 300 times (100 distinct digests, so code is compiled
//! and loaded from the compile cache), two modules and eight requests at
//! once, each request writing 8 MiB of guest memory, and its resident memory
//! ends within 5 MB of where it was after a warm-up. The same workload on a base
//! that keeps freed instance memory resident (`--memory-keep-resident`)
//! must grow, or the check above could not tell reclaim from no reclaim.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::support::BaseProcess;

/// MiB of guest memory each measured request writes (`hog`'s `/touch`).
const TOUCH_MIB: usize = 8;
/// Modules installed, called and uninstalled at the same time.
const PARALLEL_MODULES: usize = 2;
/// Requests in flight at once to each module: each holds its own instance,
/// so up to `PARALLEL_MODULES * REQUESTS_PER_MODULE` pool slots are in use.
const REQUESTS_PER_MODULE: usize = 4;
/// Instances of the base's pool (memory slots are twice that): room for
/// the requests in flight, and a bound on what keep-resident holds on to.
const MAX_INSTANCES: &str = "12";
/// Growth allowed after the warm-up, in bytes.
const ALLOWED_GROWTH: u64 = 5 << 20;

/// Resident set size of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// `wasm` plus a custom section: the same module, another digest.
fn variant(wasm: &[u8], tag: usize) -> Vec<u8> {
    let name = b"berth-test";
    let payload = tag.to_le_bytes();
    let content_len = 1 + name.len() + payload.len();
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.push(content_len as u8); // < 128: one LEB byte
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

/// Installs a `hog` variant as `m{tag}`, sends it `REQUESTS_PER_MODULE`
/// concurrent requests that each write `mib` MiB, checks every answer, and
/// uninstalls it.
async fn cycle(client: reqwest::Client, ops: String, ingress: String, tag: usize, mib: usize) {
    let hog = std::fs::read(berth_example_modules::HOG).unwrap();
    let name = format!("m{tag}");
    let response = client
        .post(format!("{ops}/v1/modules?name={name}&version=1"))
        .header("content-type", "application/wasm")
        .body(variant(&hog, tag))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let mut requests = JoinSet::new();
    for _ in 0..REQUESTS_PER_MODULE {
        let request = client.get(format!("{ingress}/{name}/touch?mib={mib}"));
        requests.spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.text().await.unwrap())
        });
    }
    let expected = format!("touched {mib} MiB ({} bytes)\n", mib << 20);
    while let Some(answer) = requests.join_next().await {
        let (status, body) = answer.unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, expected.as_str()));
    }
    let response = client
        .delete(format!("{ops}/v1/modules/{name}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Runs `cycles` cycles, `PARALLEL_MODULES` at a time, over `digests`
/// distinct digests with tags from `first` (a digest seen before installs
/// from the compile cache).
async fn cycles(base: &BaseProcess, first: usize, cycles: usize, digests: usize, mib: usize) {
    let client = reqwest::Client::new();
    let mut running = JoinSet::new();
    for i in 0..cycles {
        let tag = first + i % digests;
        if running.len() == PARALLEL_MODULES {
            running.join_next().await.unwrap().unwrap();
        }
        let (ops, ingress) = (base.ops.clone(), base.ingress.clone());
        running.spawn(cycle(client.clone(), ops, ingress, tag, mib));
    }
    while let Some(done) = running.join_next().await {
        done.unwrap();
    }
}

/// A base started with `extra`, warmed up with `warmup` cycles whose
/// requests write nothing (every host path: compile, install, concurrent
/// requests, uninstall), then `measured` cycles over `digests` digests
/// writing `TOUCH_MIB` per request.
/// Calls `settled(before, now)` on the RSS until it says yes or 5 s pass
/// (freed pages may be returned just after the last response); returns the
/// RSS before and after the measured cycles.
async fn measure(
    extra: &[&str],
    warmup: usize,
    measured: usize,
    digests: usize,
    settled: impl Fn(u64, u64) -> bool,
) -> (u64, u64) {
    let mut args = vec!["--max-instances", MAX_INSTANCES];
    args.extend_from_slice(extra);
    let base = BaseProcess::start_with(&args);
    let pid = base.child.id();
    cycles(&base, 0, warmup, warmup, 0).await;
    let before = rss(pid);
    cycles(&base, 1000, measured, digests, TOUCH_MIB).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = rss(pid);
    while !settled(before, after) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = rss(pid);
    }
    (before, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_gives_the_memory_back() {
    let (before, after) = measure(&[], 40, 300, 100, |before, now| {
        now <= before + ALLOWED_GROWTH
    })
    .await;
    eprintln!(
        "base RSS: {:.1} MB after the warm-up, {:.1} MB after 300 cycles writing {TOUCH_MIB} MiB per request",
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    assert!(
        after <= before + ALLOWED_GROWTH,
        "RSS grew from {:.1} MB to {:.1} MB over 300 install/serve/uninstall cycles (allowed: +{} MB)",
        before as f64 / 1e6,
        after as f64 / 1e6,
        ALLOWED_GROWTH >> 20
    );
}

/// The negative control: with freed instance memory kept resident, the same
/// workload leaves the written pages in the pool, so RSS must grow by at
/// least the pages of the requests in flight at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeping_memory_resident_does_not_give_it_back() {
    let keep = (16usize << 20).to_string();
    let at_least = ((PARALLEL_MODULES * REQUESTS_PER_MODULE * TOUCH_MIB) as u64) << 20;
    let (before, after) = measure(
        &["--memory-keep-resident", &keep],
        20,
        40,
        40,
        |before, now| now >= before + at_least,
    )
    .await;
    eprintln!(
        "base RSS with {} MiB kept resident: {:.1} MB after the warm-up, {:.1} MB after 40 cycles",
        16,
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    assert!(
        after >= before + at_least,
        "keep-resident should hold at least {} MB of written pages, but RSS went from {:.1} MB to {:.1} MB",
        at_least >> 20,
        before as f64 / 1e6,
        after as f64 / 1e6
    );
}
