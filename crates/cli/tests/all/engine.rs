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

/// With `RUST_BACKTRACE=1` set (as many shells have it), a module that fails
/// after its response head is logged with its error chain, never a host
/// stack backtrace: symbolizing one took 0.2–0.9 s on the ingress thread
/// and stalled every new connection on it.
#[tokio::test]
async fn a_module_failing_after_its_head_is_logged_without_a_host_backtrace() {
    let data = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let base = BaseProcess::start_logged(data.path(), &[], &[("RUST_BACKTRACE", "1")], log.path());
    let client = reqwest::Client::new();
    install(
        &client,
        &base,
        "panic",
        berth_example_modules::PANIC,
        json!({}),
    )
    .await;
    let response = client
        .get(format!("{}/panic/after-head", base.ingress))
        .send()
        .await;
    // The body failed before it was complete: a 500, a cut-off body, or,
    // when the head had not left the base's write buffer yet (it goes out
    // with the first body bytes), a connection closed before a whole head.
    match response {
        Ok(response) => {
            let status = response.status();
            let body = response.text().await;
            assert!(
                status == 500 || body.is_err(),
                "a failing body was answered {status} with {body:?}"
            );
        }
        Err(e) => assert!(
            format!("{e:?}").contains("IncompleteMessage"),
            "the request failed other than by a cut-off response: {e:?}"
        ),
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let logged = loop {
        let text = std::fs::read_to_string(log.path()).unwrap();
        if text.contains("module failed after sending its response head") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the failure was never logged:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        logged.contains("wasm backtrace"),
        "the log lacks the module's error chain:\n{logged}"
    );
    assert!(
        !logged.contains("Stack backtrace") && !logged.contains("std::backtrace"),
        "a host backtrace was logged:\n{logged}"
    );
}
