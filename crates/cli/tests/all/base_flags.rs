//! The default limits a `berth base` takes on its command line reach the
//! modules installed without limits of their own: `--max-memory-mib`,
//! `--max-concurrency`, `--max-request-bytes` and `--request-timeout`, on a
//! real process over real HTTP.

use std::time::{Duration, Instant};

use crate::support::BaseProcess;

/// Uploads the module at `path` as `name` with no limits of its own.
async fn install(client: &reqwest::Client, base: &BaseProcess, name: &str, path: &str) {
    let response = client
        .post(format!("{}/v1/modules?name={name}&version=1", base.ops))
        .header("content-type", "application/wasm")
        .body(std::fs::read(path).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

/// `GET path` on the ingress: status and body.
async fn get(client: &reqwest::Client, base: &BaseProcess, path: &str) -> (u16, String) {
    let response = client
        .get(format!("{}{path}", base.ingress))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Requests of `module` in flight, as the ops API lists them.
async fn in_flight(client: &reqwest::Client, base: &BaseProcess, module: &str) -> u64 {
    let list: serde_json::Value = client
        .get(format!("{}/v1/modules", base.ops))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["modules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == module)
        .map(|m| m["inFlight"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_from_the_command_line_hold_for_modules_without_their_own() {
    let base = BaseProcess::start_with(&[
        "--max-memory-mib",
        "16",
        "--max-concurrency",
        "1",
        "--max-request-bytes",
        "1000",
        "--request-timeout",
        "2s",
    ]);
    let client = reqwest::Client::new();
    for (name, path) in [
        ("hello", berth_example_modules::HELLO),
        ("hog", berth_example_modules::HOG),
        ("echo", berth_example_modules::ECHO),
        ("spin", berth_example_modules::SPIN),
    ] {
        install(&client, &base, name, path).await;
    }

    // --max-memory-mib: hog's endless allocation stops at 16 MiB.
    let (status, text) = get(&client, &base, "/hog").await;
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("memory limit of 16 MiB"), "{text}");

    // --max-request-bytes: a 2,000-byte body is refused before echo sees it.
    let response = client
        .post(format!("{}/echo", base.ingress))
        .body(vec![b'a'; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let text = response.text().await.unwrap();
    assert!(text.contains("limit of 1000 bytes"), "{text}");
    let (status, _) = get(&client, &base, "/echo").await;
    assert_eq!(status, 200, "a small request still reaches echo");

    // --max-concurrency: one spinning request takes the only slot...
    let started = Instant::now();
    let spinner = {
        let request = client.get(format!("{}/spin", base.ingress)).send();
        tokio::spawn(async move {
            let response = request.await.unwrap();
            (response.status().as_u16(), Instant::now())
        })
    };
    let deadline = Instant::now() + Duration::from_millis(1500);
    while in_flight(&client, &base, "spin").await < 1 {
        assert!(
            Instant::now() < deadline,
            "the spinning request did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...so a second one is turned away at once.
    let (status, text) = get(&client, &base, "/spin").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("limit of 1 concurrent requests"), "{text}");

    // --request-timeout: the spinner is cut at 2 s, not the 30 s default
    // (the upper bound leaves room for a loaded machine).
    let (status, finished) = spinner.await.unwrap();
    assert_eq!(status, 504);
    let took = finished - started;
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "the spinner ended after {took:?}"
    );
    let (status, text) = get(&client, &base, "/hello").await;
    assert_eq!((status, text.as_str()), (200, "Hello from berth!\n"));
}
