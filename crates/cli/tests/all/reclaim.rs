//! Memory comes back: a real `berth base` process installs, serves and
//! uninstalls modules 300 times (100 distinct digests, so code is compiled
//! and loaded from the compile cache), two modules and eight requests at
//! once, each request writing 8 MiB of guest memory, and its resident memory
//! ends within 5 MB of where it was after a warm-up, although the base keeps
//! freed instances' written pages resident (its default) while a module is
//! installed. The negative control: with one module left installed, those
//! pages must show in the RSS, or the check above could not tell reclaim
//! from no reclaim; uninstalled, they must be gone.

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
    let name = install_and_touch(&client, &ops, &ingress, tag, mib).await;
    uninstall(&client, &ops, &name).await;
}

/// Installs a `hog` variant as `m{tag}` and sends it `REQUESTS_PER_MODULE`
/// concurrent requests that each write `mib` MiB, checking every answer;
/// returns the module's name.
async fn install_and_touch(
    client: &reqwest::Client,
    ops: &str,
    ingress: &str,
    tag: usize,
    mib: usize,
) -> String {
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
    name
}

/// Uninstalls module `name`.
async fn uninstall(client: &reqwest::Client, ops: &str, name: &str) {
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

/// The RSS of process `pid` once `settled(rss)` says yes, or after 5 s
/// (freed pages may be returned just after the last response).
async fn rss_once(pid: u32, settled: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut now = rss(pid);
    while !settled(now) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = rss(pid);
    }
    now
}

/// A base with `MAX_INSTANCES` instances, warmed up with `warmup` cycles
/// whose requests write nothing (every host path: compile, install,
/// concurrent requests, uninstall).
async fn warmed_up_base(warmup: usize) -> BaseProcess {
    let base = BaseProcess::start_with(&["--max-instances", MAX_INSTANCES]);
    cycles(&base, 0, warmup, warmup, 0).await;
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_gives_the_memory_back() {
    let base = warmed_up_base(40).await;
    let pid = base.child.id();
    let before = rss(pid);
    cycles(&base, 1000, 300, 100, TOUCH_MIB).await;
    let after = rss_once(pid, |now| now <= before + ALLOWED_GROWTH).await;
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

/// The negative control, and what keep-resident is for: while a module is
/// installed its freed instances' written pages stay resident (so the RSS
/// check above can see memory that is not given back), and uninstalling
/// it gives them back at once (the patched purge in `vendor/wasmtime`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_module_keeps_its_pages_until_it_is_uninstalled() {
    // At least one instance's pages (the requests may share a slot).
    let at_least = (TOUCH_MIB as u64) << 20;
    let base = warmed_up_base(20).await;
    let pid = base.child.id();
    let before = rss(pid);
    let client = reqwest::Client::new();
    // A digest of the warm-up: it installs from the compile cache, so the
    // RSS moves by the written pages and not by a compile's heap.
    let name = install_and_touch(&client, &base.ops, &base.ingress, 0, TOUCH_MIB).await;
    let held = rss_once(pid, |now| now >= before + at_least).await;
    eprintln!(
        "base RSS: {:.1} MB after the warm-up, {:.1} MB with the module installed after {REQUESTS_PER_MODULE} requests writing {TOUCH_MIB} MiB",
        before as f64 / 1e6,
        held as f64 / 1e6
    );
    assert!(
        held >= before + at_least,
        "the freed instances should keep their {} MB of written pages while the module is installed, but RSS went from {:.1} MB to {:.1} MB",
        at_least >> 20,
        before as f64 / 1e6,
        held as f64 / 1e6
    );
    uninstall(&client, &base.ops, &name).await;
    let after = rss_once(pid, |now| now <= before + ALLOWED_GROWTH).await;
    eprintln!("and {:.1} MB after it was uninstalled", after as f64 / 1e6);
    assert!(
        after <= before + ALLOWED_GROWTH,
        "uninstalling should give the kept pages back: RSS {:.1} MB before, {:.1} MB installed, {:.1} MB after (allowed: +{} MB)",
        before as f64 / 1e6,
        held as f64 / 1e6,
        after as f64 / 1e6,
        ALLOWED_GROWTH >> 20
    );
}
