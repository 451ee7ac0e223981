//! Bad input gets a precise error and changes nothing: after each refusal
//! `hello` still serves and the installed set is exactly as before.

use berth_api::{ArtifactSource, InstallRequest, Route};
use berth_example_modules::{CLI_HELLO, ECHO, HELLO, WANTS_MISSING};

use crate::support::{TestBase, digest_of, expect_error, install_request, serve_files};

/// A base with `hello` installed, and the list as it was.
async fn base_with_hello() -> (TestBase, berth_api::ModuleList) {
    let base = TestBase::start().await;
    base.install_path("hello", "1.0.0", HELLO).await;
    let list = base.list().await;
    (base, list)
}

async fn assert_untouched(base: &TestBase, before: &berth_api::ModuleList) {
    base.assert_hello_serves().await;
    // Request counters and traffic stats move as hello serves, and its code
    // moves up from Winch to Cranelift in the background; everything else
    // must be as it was.
    let without_counters = |list: &berth_api::ModuleList| {
        let mut list = list.clone();
        for m in &mut list.modules {
            (m.requests, m.errors, m.in_flight, m.memory_in_use_bytes) = (0, 0, 0, 0);
            m.recent = Default::default();
            m.tier = None;
        }
        list
    };
    assert_eq!(
        without_counters(&base.list().await),
        without_counters(before),
        "a refused request changed the installed set"
    );
}

fn upload_query(name: &str) -> String {
    format!("name={name}&version=1.0.0")
}

#[tokio::test]
async fn an_artifact_that_is_not_wasm_is_refused() {
    let (base, before) = base_with_hello().await;
    let message = expect_error(
        base.upload(
            &upload_query("text"),
            b"#!/bin/sh\necho not wasm\n".to_vec(),
        )
        .await,
        422,
        "not_wasm",
    );
    assert!(
        message.contains("not WebAssembly") && message.contains("wasm32-wasip2"),
        "{message}"
    );
    expect_error(
        base.upload(&upload_query("empty"), Vec::new()).await,
        422,
        "not_wasm",
    );
    assert_untouched(&base, &before).await;
}

#[tokio::test]
async fn a_core_module_is_refused_as_not_a_component() {
    let (base, before) = base_with_hello().await;
    // The smallest valid core module: magic + version 1.
    let message = expect_error(
        base.upload(&upload_query("core"), b"\0asm\x01\0\0\0".to_vec())
            .await,
        422,
        "not_a_component",
    );
    assert!(message.contains("core WebAssembly module"), "{message}");
    assert_untouched(&base, &before).await;
}

#[tokio::test]
async fn a_component_without_the_http_export_is_refused() {
    let (base, before) = base_with_hello().await;
    let message = expect_error(
        base.install(&install_request("cli", "1.0.0", CLI_HELLO))
            .await,
        422,
        "missing_http_export",
    );
    assert!(message.contains("wasi:http/incoming-handler"), "{message}");
    // It names what the component does export.
    assert!(message.contains("wasi:cli/run"), "{message}");
    assert_untouched(&base, &before).await;
}

#[tokio::test]
async fn a_component_importing_what_the_base_lacks_is_refused_naming_the_import() {
    let (base, before) = base_with_hello().await;
    let message = expect_error(
        base.install(&install_request("wants", "1.0.0", WANTS_MISSING))
            .await,
        422,
        "unsupported_import",
    );
    // It names the interface and says how to fix it.
    assert!(message.contains("berth:missing/ledger"), "{message}");
    assert!(message.contains("does not provide"), "{message}");
    assert!(message.contains("Remove the import"), "{message}");
    assert_untouched(&base, &before).await;
}

#[tokio::test]
async fn a_truncated_component_is_refused() {
    let (base, before) = base_with_hello().await;
    let mut bytes = std::fs::read(ECHO).unwrap();
    bytes.truncate(bytes.len() / 2);
    expect_error(
        base.upload(&upload_query("torn"), bytes).await,
        422,
        "invalid_wasm",
    );
    assert_untouched(&base, &before).await;
}

#[tokio::test]
async fn a_digest_mismatch_is_refused_naming_both_digests() {
    let (base, before) = base_with_hello().await;
    let mut request = install_request("echo", "1.0.0", ECHO);
    request.digest = Some(digest_of(HELLO));
    let message = expect_error(base.install(&request).await, 422, "digest_mismatch");
    assert!(
        message.contains(&digest_of(HELLO)) && message.contains(&digest_of(ECHO)),
        "{message}"
    );
    // A malformed digest is a bad request.
    request.digest = Some("sha256:1234".into());
    expect_error(base.install(&request).await, 400, "invalid_request");
    assert_untouched(&base, &before).await;
}

#[tokio::test]
async fn unreachable_and_missing_artifacts_are_refused() {
    // The test's servers are on loopback, which a base fetches from only when told.
    let base = TestBase::start_with(|c| c.artifact_hosts = vec!["127.0.0.1".into()]).await;
    base.install_path("hello", "1.0.0", HELLO).await;
    let before = base.list().await;
    let url_request = |url: String| InstallRequest {
        artifact: Some(ArtifactSource::Url(url)),
        ..InstallRequest::new("remote", "1.0.0")
    };
    // Nothing listens on port 1.
    let message = expect_error(
        base.install(&url_request("http://127.0.0.1:1/m.wasm".into()))
            .await,
        502,
        "artifact_unreachable",
    );
    assert!(message.contains("127.0.0.1:1"), "{message}");
    // A server that answers 404.
    let server = serve_files(vec![]).await;
    let message = expect_error(
        base.install(&url_request(format!("http://{server}/missing.wasm")))
            .await,
        502,
        "artifact_unreachable",
    );
    assert!(message.contains("404"), "{message}");
    expect_error(
        base.install(&url_request("ftp://example/m.wasm".into()))
            .await,
        400,
        "invalid_request",
    );
    // A local path that does not exist, in an allowed directory (outside
    // them it is refused as such: see trust.rs).
    let ghost = std::env::temp_dir().join("berth-nonexistent/ghost.wasm");
    let ghost = ghost.to_str().unwrap();
    let message = expect_error(
        base.install(&install_request("ghost", "1.0.0", ghost))
            .await,
        422,
        "artifact_not_found",
    );
    assert!(message.contains(ghost), "{message}");
    assert!(message.contains("`berth deploy FILE.wasm`"), "{message}");
    assert!(!message.contains("POST /v1/modules"), "{message}");
    assert_untouched(&base, &before).await;
}

#[tokio::test]
async fn route_and_version_collisions_are_refused() {
    let (base, before) = base_with_hello().await;
    let mut clash = install_request("echo", "1.0.0", ECHO);
    clash.route = Some(Route {
        host: None,
        path_prefix: Some("/hello/".into()),
    });
    let message = expect_error(base.install(&clash).await, 409, "route_conflict");
    assert!(message.contains("`hello`"), "{message}");
    assert!(
        message.contains("`berth deploy --route /other`"),
        "{message}"
    );
    // Same name and version, different bytes.
    let message = expect_error(
        base.install(&install_request("hello", "1.0.0", ECHO)).await,
        409,
        "version_conflict",
    );
    assert!(message.contains("hello@1.0.0"), "{message}");
    assert_untouched(&base, &before).await;
}

#[tokio::test]
async fn malformed_requests_are_refused() {
    let (base, before) = base_with_hello().await;
    let post_json = |body: &'static str| {
        let request = base
            .client
            .post(base.ops("/v1/modules"))
            .header("content-type", "application/json")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    expect_error(post_json("{not json").await, 400, "invalid_request");
    let message = expect_error(
        post_json(r#"{"name":"x","version":"1","artifact":{"path":"/x"},"colour":"red"}"#).await,
        400,
        "invalid_request",
    );
    assert!(message.contains("colour"), "{message}");
    let message = expect_error(
        base.install(&install_request("Bad_Name", "1.0.0", HELLO))
            .await,
        400,
        "invalid_request",
    );
    assert!(message.contains("Bad_Name"), "{message}");
    // One rule with `berth new` and manifests (berth_api::ModuleName): a
    // module name starts with a letter.
    let message = expect_error(
        base.install(&install_request("1orders", "1.0.0", HELLO))
            .await,
        400,
        "invalid_request",
    );
    assert!(
        message.contains("`1orders` is not a module name")
            && message.contains("starting with a letter"),
        "{message}"
    );
    let mut bad_route = install_request("other", "1.0.0", HELLO);
    bad_route.route = Some(Route {
        host: None,
        path_prefix: Some("nope".into()),
    });
    expect_error(base.install(&bad_route).await, 400, "invalid_request");
    let response = base
        .client
        .post(base.ops("/v1/modules"))
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_untouched(&base, &before).await;
}

#[tokio::test]
async fn an_oversized_upload_is_refused() {
    let base = TestBase::start_with(|c| c.max_artifact_bytes = 50_000).await;
    let message = expect_error(
        base.upload(&upload_query("big"), std::fs::read(HELLO).unwrap())
            .await,
        413,
        "payload_too_large",
    );
    assert!(message.contains("50000"), "{message}");
    assert!(base.list().await.modules.is_empty());
}

#[tokio::test]
async fn a_streamed_upload_past_the_limit_is_refused_and_changes_nothing() {
    // No Content-Length: the limit can only be found while reading.
    let hello = std::fs::read(HELLO).unwrap();
    let limit = hello.len();
    let base = TestBase::start_with(|c| c.max_artifact_bytes = limit).await;
    base.install_path("hello", "1.0.0", HELLO).await;
    let before = base.list().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(hello), Ok(vec![0u8; 64])];
    let response = base
        .client
        .post(base.ops(&format!("/v1/modules?{}", upload_query("big"))))
        .header("content-type", "application/wasm")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let message = expect_error(
        (response.status().as_u16(), response.json().await.unwrap()),
        413,
        "payload_too_large",
    );
    assert!(message.contains(&limit.to_string()), "{message}");
    assert_untouched(&base, &before).await;
}

#[tokio::test]
async fn uninstalling_what_is_not_there_is_a_clear_404() {
    let (base, before) = base_with_hello().await;
    let delete = |path: &str| {
        let request = base.client.delete(base.ops(path));
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let message = expect_error(delete("/v1/modules/ghost").await, 404, "module_not_found");
    assert!(
        message.contains("ghost") && message.contains("hello"),
        "{message}"
    );
    let message = expect_error(
        delete("/v1/modules/hello/versions/9.9.9").await,
        404,
        "module_not_found",
    );
    assert!(message.contains("1.0.0"), "{message}");
    assert_untouched(&base, &before).await;
}

#[tokio::test]
async fn bad_limits_headers_and_log_queries_are_refused() {
    let (base, before) = base_with_hello().await;
    let zero = InstallRequest {
        limits: Some(berth_api::Limits {
            max_concurrency: Some(0),
            ..Default::default()
        }),
        ..install_request("echo", "1.0.0", ECHO)
    };
    let message = expect_error(base.install(&zero).await, 400, "invalid_request");
    assert!(
        message.contains("limits.maxConcurrency must be at least 1"),
        "{message}"
    );

    // Install options in the header may not name another artifact.
    let with_artifact = serde_json::to_string(&install_request("echo", "1.0.0", ECHO)).unwrap();
    let response = base
        .client
        .post(base.ops("/v1/modules"))
        .header("content-type", "application/wasm")
        .header("x-berth-install", with_artifact)
        .body(std::fs::read(ECHO).unwrap())
        .send()
        .await
        .unwrap();
    let message = expect_error(
        (response.status().as_u16(), response.json().await.unwrap()),
        400,
        "invalid_request",
    );
    assert!(message.contains("drop `artifact`"), "{message}");

    let response = base
        .client
        .get(base.ops("/v1/modules/hello/logs?since=yesterday"))
        .send()
        .await
        .unwrap();
    let message = expect_error(
        (response.status().as_u16(), response.json().await.unwrap()),
        400,
        "invalid_request",
    );
    assert!(message.contains("since `yesterday`"), "{message}");
    assert_untouched(&base, &before).await;
}

#[tokio::test]
async fn a_second_base_on_a_taken_port_or_data_dir_is_refused_and_the_first_serves() {
    let (base, before) = base_with_hello().await;
    let taken = base.running.as_ref().unwrap().ingress_addr;
    let other = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(other.path());
    config.ingress_addr = taken;
    let message = berth_base::Base::start(config)
        .await
        .err()
        .expect("port is taken")
        .to_string();
    assert!(
        message.contains(&format!("cannot listen on {taken} for the ingress")),
        "{message}"
    );
    assert_eq!(
        message.matches("Address already in use").count(),
        1,
        "{message}"
    );

    let message = berth_base::Base::start(crate::support::config(base.data_dir.path()))
        .await
        .err()
        .expect("data dir is in use")
        .to_string();
    assert!(
        message.contains("another base uses this data directory"),
        "{message}"
    );
    assert_untouched(&base, &before).await;
}
