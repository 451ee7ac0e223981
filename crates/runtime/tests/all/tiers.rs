//! Tiered code in the runtime: the optimized code a module moves up to, when
//! it comes from elsewhere (a controller) or is compiled here, and what the
//! swap does to warm `pooled` instances.

use std::time::{Duration, Instant};

use berth_example_modules::{COUNTER, ECHO, HELLO};
use berth_runtime::trampolines::{self, TrampolineCache};
use berth_runtime::{Digest, InstancePolicy, LoadedModule, Tier, TierUpGate, Tiers};

use crate::support::{TestRuntime, call};

/// Polls until `module` runs on `tier` (Cranelift compiles in the
/// background; 120 s covers a loaded CI machine).
async fn until_tier(module: &LoadedModule, tier: Tier) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while module.tier() != tier {
        assert!(Instant::now() < deadline, "still not on {tier} code");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_module_serves_on_winch_while_its_optimized_code_comes_from_elsewhere_then_maps_it() {
    let rt = TestRuntime::new();
    let hello = std::fs::read(HELLO).unwrap();
    let digest = Digest::of(&hello);
    // What a controller would ship; echo's code under hello's digest, so
    // the test sees which code the module ended up on.
    let (shipped, _) =
        berth_runtime::compile_for_fleet(rt.runtime.engine(), &std::fs::read(ECHO).unwrap())
            .unwrap();

    let expected = rt
        .runtime
        .expect_code(digest)
        .expect("the runtime has tiers");
    let module = rt.try_load(HELLO).unwrap();
    assert_eq!(module.tier(), Tier::Winch);
    let (status, body) = call(&module, "/", None).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "Hello from berth!\n"));

    // The optimizer parks the module instead of compiling it here.
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt.runtime.awaiting_code() != 1 {
        assert!(Instant::now() < deadline, "the module never waited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!rt.runtime.cache().has_compiled(&digest));
    assert_eq!(module.tier(), Tier::Winch);

    // The code arrives: the module maps it.
    rt.runtime
        .cache()
        .store_compiled(&digest, &shipped)
        .unwrap();
    drop(expected);
    until_tier(&module, Tier::Cranelift).await;
    assert_eq!(rt.runtime.awaiting_code(), 0);
    let (status, body) = call(&module, "/shipped", None).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("\"path\":\"/shipped\""),
        "not the shipped code: {body}"
    );
}

#[tokio::test]
async fn when_no_code_comes_from_elsewhere_the_module_is_compiled_here() {
    let rt = TestRuntime::new();
    let digest = Digest::of(&std::fs::read(HELLO).unwrap());
    let expected = rt.runtime.expect_code(digest).unwrap();
    let module = rt.try_load(HELLO).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt.runtime.awaiting_code() != 1 {
        assert!(Instant::now() < deadline, "the module never waited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The fetch failed: nothing was stored.
    drop(expected);
    until_tier(&module, Tier::Cranelift).await;
    assert!(rt.runtime.cache().has_compiled(&digest));
    let (status, body) = call(&module, "/", None).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "Hello from berth!\n"));
}

/// `/global` of `counter`: how many requests its instance has served.
async fn global(module: &LoadedModule) -> u64 {
    let (status, body) = call(module, "/global", None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["global"]
        .as_u64()
        .unwrap()
}

/// `n` answers of `/global`, each after the instance is back in the pool.
async fn answers(module: &LoadedModule, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(global(module).await);
        let deadline = Instant::now() + Duration::from_millis(500);
        while module.warm_instances() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    out
}

#[tokio::test]
async fn a_tier_up_drops_the_warm_instances_made_on_winch_code() {
    let gate = TierUpGate::new();
    let held = gate.clone();
    let rt = TestRuntime::with(|c| c.tier_up_gate = Some(held));
    let counter = rt.load(COUNTER, "counter", |s| {
        s.limits.max_memory_bytes = 16 << 20;
        s.policy = InstancePolicy::Pooled {
            max_requests: 100,
            max_idle: Duration::from_secs(60),
        };
    });
    assert_eq!(counter.tier(), Tier::Winch);
    assert_eq!(
        answers(&counter, 3).await,
        [1, 2, 3],
        "reused on Winch code"
    );
    assert_eq!(counter.warm_instances(), 1);

    gate.open();
    until_tier(&counter, Tier::Cranelift).await;
    assert_eq!(
        answers(&counter, 3).await,
        [1, 2, 3],
        "Cranelift's code starts a new instance, then reuses it"
    );
    assert_eq!(counter.warm_instances(), 1);
}

#[test]
fn winch_compiles_each_trampoline_shape_once() {
    use wasmtime::component::Component;
    // An engine and cache of its own: other tests' compiles do not count.
    let cache = std::sync::Arc::new(TrampolineCache::new(trampolines::BUDGET));
    let mut config = wasmtime::Config::new();
    config
        .strategy(wasmtime::Strategy::Winch)
        .cranelift_opt_level(wasmtime::OptLevel::None)
        .enable_incremental_compilation(cache.clone())
        .expect("the vendored Winch builder takes an incremental cache");
    let engine = wasmtime::Engine::new(&config).unwrap();

    Component::new(&engine, std::fs::read(HELLO).unwrap()).unwrap();
    let (hits, misses) = (cache.hits(), cache.misses());
    assert!(misses > 0, "no trampoline went through the cache");
    assert!(
        hits > 0,
        "hello has trampolines of one shape, yet each compiled ({misses} misses)"
    );
    // A second module: most of its shapes are hello's.
    Component::new(&engine, std::fs::read(COUNTER).unwrap()).unwrap();
    let (hits, misses) = (cache.hits() - hits, cache.misses() - misses);
    eprintln!("counter after hello: {hits} trampolines from the cache, {misses} compiled");
    assert!(
        hits > misses,
        "counter's trampolines mostly compiled again: {hits} hits, {misses} misses"
    );
}

#[tokio::test]
async fn winch_code_with_shared_trampolines_serves() {
    // hello's and counter's Winch code, counter's trampolines partly from
    // the process's cache (filled by hello's compile if by nothing else).
    let rt = TestRuntime::with(|c| c.tiers = Tiers::WinchOnly);
    let hello = rt.try_load(HELLO).unwrap();
    let before = TrampolineCache::shared().hits();
    let counter = rt.try_load(COUNTER).unwrap();
    assert_eq!((hello.tier(), counter.tier()), (Tier::Winch, Tier::Winch));
    assert!(
        TrampolineCache::shared().hits() > before,
        "the runtime's Winch engine does not use the shared trampoline cache"
    );
    let (status, body) = call(&hello, "/", None).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "Hello from berth!\n"));
    for _ in 0..2 {
        let (status, body) = call(&counter, "/global", None).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["global"], 1, "{body}");
    }
}
