//! The engine flags of `berth base` (keep-resident, warm slots) reach the
//! instance pool, and `berth status` shows a module's CPU share and
//! instance policy: a real base process, real HTTP, the real binary.

use serde_json::json;

use crate::support::{BaseProcess, stdout};

/// Uploads the module at `path` as `name@1` with `limits`.
async fn install(
    client: &reqwest::Client,
    base: &BaseProcess,
    name: &str,
    path: &str,
    limits: serde_json::Value,
) {
    let options = json!({ "name": name, "version": "1", "limits": limits });
    let response = client
        .post(format!("{}/v1/modules?name={name}&version=1", base.ops))
        .header("content-type", "application/wasm")
        .header("x-berth-install", options.to_string())
        .body(std::fs::read(path).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

/// The value of the `/metrics` series named exactly `name`.
async fn metric(client: &reqwest::Client, base: &BaseProcess, name: &str) -> f64 {
    let text = client
        .get(format!("{}/metrics", base.ops))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn keep_resident_flags_bound_the_pool_and_status_shows_share_and_policy() {
    let base = BaseProcess::start_with(&[
        "--memory-keep-resident",
        "4194304",
        "--table-keep-resident",
        "65536",
        "--max-unused-warm-slots",
        "4",
        // One engine, one pool: the bound below is that pool's (with tiers,
        // Winch's engine has a second pool and the bound doubles).
        "--tiers",
        "cranelift",
    ]);
    let client = reqwest::Client::new();
    install(
        &client,
        &base,
        "hello",
        berth_example_modules::HELLO,
        json!({"cpu": 0.5}),
    )
    .await;
    install(
        &client,
        &base,
        "counter",
        berth_example_modules::COUNTER,
        json!({"policy": {"pooled": {"maxRequests": 100, "maxIdleMs": 60000}}}),
    )
    .await;

    let response = client
        .get(format!("{}/hello", base.ingress))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // One instance at a time so far: 4 warm slots + 2 memories of it, times
    // 4 MiB; 4 warm slots + 4 tables of it, times 64 KiB.
    let bound = metric(&client, &base, "berth_pool_resident_bytes_bound").await;
    assert_eq!(bound, ((4 + 2) * (4 << 20) + (4 + 4) * (64 << 10)) as f64);
    // The instance goes back to the pool a moment after its response.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let kept = metric(&client, &base, "berth_pool_resident_bytes").await;
        assert!(kept <= bound, "kept {kept} of {bound}");
        if kept > 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the freed instance kept nothing resident within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let status = stdout(base.berth(&["status", "hello"]));
    assert!(
        status.contains("cpu 0.5 cores (queue 1000 ms), instances fresh"),
        "{status}"
    );
    let status = stdout(base.berth(&["status", "counter"]));
    assert!(
        status.contains("cpu unlimited, instances pooled (100 requests, 60000 ms idle)"),
        "{status}"
    );
}
