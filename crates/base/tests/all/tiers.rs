//! Tiered code: a freshly compiled module serves on Winch code (visible in
//! status and `/metrics`), then moves up to Cranelift's without failing a
//! request; a module Winch cannot compile serves on Cranelift's at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_api::{CodeTier, ModuleList};
use berth_example_modules::HELLO;
use berth_runtime::{TierUpGate, Tiers};

use crate::support::TestBase;

async fn tier_of(base: &TestBase, name: &str) -> Option<CodeTier> {
    let list: ModuleList = base.ops_get(&format!("/v1/modules/{name}")).await;
    list.modules[0].tier
}

/// The files in the base's compiled-code cache (none before the first).
fn compiled_files(base: &TestBase) -> Vec<String> {
    std::fs::read_dir(base.data_dir.path().join("cache/compiled"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// `berth_module_code_tier{module, version="1", tier}`.
fn tier_gauge(metrics: &str, module: &str, tier: &str) -> Option<String> {
    let prefix =
        format!("berth_module_code_tier{{module=\"{module}\",version=\"1\",tier=\"{tier}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_serves_on_winch_then_moves_to_cranelift_without_failing_a_request() {
    let gate = TierUpGate::new();
    let held = gate.clone();
    let base = TestBase::start_with(|c| c.runtime.tier_up_gate = Some(held)).await;
    base.install_path("hello", "1", HELLO).await;

    // Cranelift is held back: the module serves, on Winch code, and says so.
    base.assert_hello_serves().await;
    assert_eq!(tier_of(&base, "hello").await, Some(CodeTier::Winch));
    let metrics = base.metrics_text().await;
    assert_eq!(tier_gauge(&metrics, "hello", "winch").as_deref(), Some("1"));
    assert_eq!(
        tier_gauge(&metrics, "hello", "cranelift").as_deref(),
        Some("0")
    );

    // A light load runs across the swap.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let url = base.url("/hello");
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let answered = match http.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            r.text().await.is_ok_and(|b| b == "Hello from berth!\n")
                        }
                        _ => false,
                    };
                    if answered { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(120);
    while ok.load(Ordering::Relaxed) < 20 {
        assert!(Instant::now() < deadline, "no load got through");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gate.open();
    while tier_of(&base, "hello").await != Some(CodeTier::Cranelift) {
        assert!(Instant::now() < deadline, "still on Winch code after 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Requests after the swap, on Cranelift's code.
    let swapped = ok.load(Ordering::Relaxed);
    while ok.load(Ordering::Relaxed) < swapped + 20 {
        assert!(Instant::now() < deadline, "load stalled after the swap");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed");
    assert!(ok.load(Ordering::Relaxed) >= swapped + 20);
    let metrics = base.metrics_text().await;
    assert_eq!(
        tier_gauge(&metrics, "hello", "cranelift").as_deref(),
        Some("1")
    );
    assert_eq!(tier_gauge(&metrics, "hello", "winch").as_deref(), Some("0"));

    // Both tiers are cached, by digest + tier + engine.
    let compiled: Vec<String> = std::fs::read_dir(base.data_dir.path().join("cache/compiled"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let digest = crate::support::digest_of(HELLO);
    let hex = digest.trim_start_matches("sha256:");
    for tier in ["winch", "cranelift"] {
        assert!(
            compiled
                .iter()
                .any(|f| f.starts_with(&format!("{hex}-{tier}-")) && f.ends_with(".cwasm")),
            "no {tier} code cached: {compiled:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_winch_cannot_compile_serves_on_cranelift_code() {
    let base = TestBase::start_with(|c| c.runtime.force_winch_failure = true).await;
    base.install_path("hello", "1", HELLO).await;
    assert_eq!(tier_of(&base, "hello").await, Some(CodeTier::Cranelift));
    base.assert_hello_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cranelift_only_never_compiles_with_winch() {
    let base = TestBase::start_with(|c| c.runtime.tiers = Tiers::CraneliftOnly).await;
    base.install_path("hello", "1", HELLO).await;
    assert_eq!(tier_of(&base, "hello").await, Some(CodeTier::Cranelift));
    base.assert_hello_serves().await;
    let compiled = compiled_files(&base);
    assert!(
        compiled.iter().all(|f| f.contains("-cranelift-")),
        "{compiled:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn winch_only_stays_on_winch_code_and_never_compiles_with_cranelift() {
    let base = TestBase::start_with(|c| c.runtime.tiers = Tiers::WinchOnly).await;
    base.install_path("hello", "1", HELLO).await;
    assert_eq!(tier_of(&base, "hello").await, Some(CodeTier::Winch));
    base.assert_hello_serves().await;
    // The Winch code is written to the cache in the background; once it is
    // there, nothing else may follow.
    let compiled = || compiled_files(&base);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !compiled().iter().any(|f| f.contains("-winch-")) {
        assert!(
            Instant::now() < deadline,
            "Winch code never cached: {:?}",
            compiled()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Long enough for a background Cranelift compile of hello to land.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        compiled().iter().all(|f| f.contains("-winch-")),
        "{:?}",
        compiled()
    );
    assert_eq!(tier_of(&base, "hello").await, Some(CodeTier::Winch));
    base.assert_hello_serves().await;
}
