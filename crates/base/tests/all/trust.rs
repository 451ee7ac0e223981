//! Artifact sources and signatures: a base reads artifact files only under
//! the directories it allows, downloads only from hosts it allows (never
//! loopback or private addresses unless named), never echoes what it read,
//! and, trusting a key, installs only artifacts signed with it. Every
//! refusal leaves the running modules as they were.

use std::path::Path;

use berth_api::{ArtifactSource, InstallRequest};
use berth_example_modules::HELLO;
use berth_runtime::signature::{generate_key, sign};

use crate::support::{TestBase, expect_error, install_request, serve_files};

/// What a shadow password file starts with: must never come back in an error.
const SECRET: &[u8] = b"root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";

/// A base that allows only `dir` and already serves `hello` (uploaded).
async fn base_allowing(dir: &Path) -> TestBase {
    let dir = dir.to_path_buf();
    let base = TestBase::start_with(move |c| c.artifact_dirs = vec![dir]).await;
    let (status, body) = base
        .upload(
            "name=hello&version=1.0.0&pathPrefix=/hello",
            std::fs::read(HELLO).unwrap(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    base
}

/// Asserts that `message` holds none of [`SECRET`], as text or hex.
fn assert_no_secret(message: &str) {
    for leak in [
        "root:".to_string(),
        "daemon".to_string(),
        SECRET[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    ] {
        assert!(!message.contains(&leak), "{message} leaks {leak}");
    }
}

#[tokio::test]
async fn a_path_outside_the_allowed_dirs_is_refused_naming_them_and_the_flag() {
    let allowed = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let shadow = elsewhere.path().join("shadow");
    std::fs::write(&shadow, SECRET).unwrap();
    let base = base_allowing(allowed.path()).await;
    let before = base.list().await;
    let canonical = std::fs::canonicalize(allowed.path()).unwrap();
    for path in [
        shadow.display().to_string(),
        "/etc/shadow".to_string(),
        // Missing outside: the same refusal, so existence is not revealed.
        "/etc/no-such-file".to_string(),
    ] {
        let message = expect_error(
            base.install(&install_request("leak", "1.0.0", &path)).await,
            403,
            "artifact_forbidden",
        );
        assert!(
            message.contains(&canonical.display().to_string())
                && message.contains("--artifact-dir")
                && message.contains("berth deploy"),
            "{message}"
        );
        assert_no_secret(&message);
    }
    assert_eq!(base.list().await.modules, before.modules);
    base.assert_hello_serves().await;
}

#[tokio::test]
async fn a_symlink_or_dot_dot_escaping_the_allowed_dir_is_refused() {
    let allowed = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let outside = elsewhere.path().join("hello.wasm");
    std::fs::copy(HELLO, &outside).unwrap();
    let link = allowed.path().join("link.wasm");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let base = base_allowing(allowed.path()).await;
    let before = base.list().await;
    let dot_dot = format!(
        "{}/../{}/hello.wasm",
        allowed.path().display(),
        elsewhere.path().file_name().unwrap().to_str().unwrap()
    );
    for path in [link.display().to_string(), dot_dot] {
        let message = expect_error(
            base.install(&install_request("escape", "1.0.0", &path))
                .await,
            403,
            "artifact_forbidden",
        );
        assert!(message.contains(&path), "{message}");
    }
    assert_eq!(base.list().await.modules, before.modules);
    // The same bytes inside the directory install.
    let inside = allowed.path().join("hello.wasm");
    std::fs::copy(HELLO, &inside).unwrap();
    base.install_path("inside", "1.0.0", inside.to_str().unwrap())
        .await;
    let (status, _, _) = base.get("/inside").await;
    assert_eq!(status, 200);
}

fn url_request(name: &str, url: String) -> InstallRequest {
    InstallRequest {
        artifact: Some(ArtifactSource::Url(url)),
        ..InstallRequest::new(name, "1.0.0")
    }
}

#[tokio::test]
async fn a_private_address_url_is_refused_unless_its_host_is_allowed() {
    let server = serve_files(vec![("/hello.wasm", std::fs::read(HELLO).unwrap())]).await;
    let base = base_allowing(tempfile::tempdir().unwrap().path()).await;
    let before = base.list().await;
    for url in [
        format!("http://{server}/hello.wasm"),
        format!("http://localhost:{}/hello.wasm", server.port()),
        // Cloud metadata: link-local; refused before any connection.
        "http://169.254.169.254/latest/meta-data".to_string(),
        "http://10.0.0.1/m.wasm".to_string(),
        "http://[::1]/m.wasm".to_string(),
    ] {
        let message = expect_error(
            base.install(&url_request("internal", url.clone())).await,
            403,
            "artifact_forbidden",
        );
        assert!(
            message.contains("private") && message.contains("--artifact-host"),
            "{url}: {message}"
        );
    }
    assert_eq!(base.list().await.modules, before.modules);

    // Named explicitly, the local server is allowed; a host off the list is not.
    let base = TestBase::start_with(|c| c.artifact_hosts = vec!["127.0.0.1".into()]).await;
    let (status, body) = base
        .install(&url_request("local", format!("http://{server}/hello.wasm")))
        .await;
    assert_eq!(status, 201, "{body}");
    let message = expect_error(
        base.install(&url_request("other", "https://example.com/m.wasm".into()))
            .await,
        403,
        "artifact_forbidden",
    );
    assert!(
        message.contains("example.com") && message.contains("--artifact-host example.com"),
        "{message}"
    );
    // A redirect is checked like the first URL: an allowed server cannot
    // bounce the base to an internal address.
    let app = axum::Router::new().route(
        "/moved.wasm",
        axum::routing::get(|| async {
            axum::response::Redirect::temporary("http://169.254.169.254/latest/meta-data")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let message = expect_error(
        base.install(&url_request(
            "moved",
            format!("http://{redirector}/moved.wasm"),
        ))
        .await,
        403,
        "artifact_forbidden",
    );
    assert!(message.contains("169.254.169.254"), "{message}");
}

#[tokio::test]
async fn errors_never_echo_the_artifacts_bytes() {
    let allowed = tempfile::tempdir().unwrap();
    let file = allowed.path().join("shadow.wasm");
    std::fs::write(&file, SECRET).unwrap();
    let server = serve_files(vec![("/secret", SECRET.to_vec())]).await;
    let base = TestBase::start_with({
        let dir = allowed.path().to_path_buf();
        move |c| {
            c.artifact_dirs = vec![dir];
            c.artifact_hosts = vec!["127.0.0.1".into()];
        }
    })
    .await;
    let by_path = base
        .install(&install_request("a", "1.0.0", file.to_str().unwrap()))
        .await;
    let by_url = base
        .install(&url_request("b", format!("http://{server}/secret")))
        .await;
    let by_upload = base.upload("name=c&version=1.0.0", SECRET.to_vec()).await;
    for result in [by_path, by_url, by_upload] {
        let message = expect_error(result, 422, "not_wasm");
        assert!(
            message.contains(&format!("{} bytes", SECRET.len()))
                && message.contains("wasm32-wasip2"),
            "{message}"
        );
        assert_no_secret(&message);
    }
    // A wasm header of another version: named, not echoed.
    let message = expect_error(
        base.upload("name=d&version=1.0.0", b"\0asm\x02\0\0\0rest".to_vec())
            .await,
        422,
        "invalid_wasm",
    );
    assert!(!message.contains("02000000"), "{message}");
}

#[tokio::test]
async fn a_base_trusting_a_key_refuses_unsigned_and_wrongly_signed_artifacts() {
    let (secret, public) = generate_key().unwrap();
    let (other, _) = generate_key().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = berth_runtime::TrustKeys::parse(&[public.trim().to_string()]).unwrap();
    let base = TestBase::start_with({
        let dir = dir.path().to_path_buf();
        move |c| {
            c.artifact_dirs = vec![dir];
            c.trust_keys = keys;
        }
    })
    .await;
    let bytes = std::fs::read(HELLO).unwrap();
    let digest = berth_runtime::Digest::of(&bytes);
    let file = dir.path().join("hello.wasm");
    std::fs::write(&file, &bytes).unwrap();
    let path = file.to_str().unwrap();

    // Unsigned, by path and by upload.
    let message = expect_error(
        base.install(&install_request("hello", "1.0.0", path)).await,
        422,
        "unsigned_artifact",
    );
    assert!(message.contains("berth sign"), "{message}");
    expect_error(
        base.upload("name=hello&version=1.0.0", bytes.clone()).await,
        422,
        "unsigned_artifact",
    );
    // Signed by another key, beside the file and with the upload.
    let wrong = sign(&digest, &other).unwrap();
    std::fs::write(dir.path().join("hello.wasm.sig"), &wrong).unwrap();
    let message = expect_error(
        base.install(&install_request("hello", "1.0.0", path)).await,
        422,
        "bad_signature",
    );
    assert!(message.contains("--trust-key"), "{message}");
    let query = |sig: &str| {
        format!(
            "name=hello&version=1.0.0&signature={}",
            sig.trim()
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
        )
    };
    expect_error(
        base.upload(&query(&wrong), bytes.clone()).await,
        422,
        "bad_signature",
    );
    // Nothing was installed by any of it.
    assert!(base.list().await.modules.is_empty());
    let (status, _, _) = base.get("/hello").await;
    assert_eq!(status, 404);

    // Signed right: both ways install.
    let right = sign(&digest, &secret).unwrap();
    std::fs::write(dir.path().join("hello.wasm.sig"), &right).unwrap();
    base.install_path("hello", "1.0.0", path).await;
    let (status, body) = base.upload(&query(&right), bytes.clone()).await;
    assert_eq!(status, 200, "the same bytes again are unchanged: {body}");
    let (status, body) = base
        .upload(
            &query(&right).replace("name=hello", "name=copy"),
            bytes.clone(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    base.assert_hello_serves().await;
}

#[tokio::test]
async fn an_allowed_dir_that_does_not_exist_stops_the_start_naming_it() {
    let data = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(data.path());
    config.artifact_dirs = vec!["/nonexistent/artifacts".into()];
    let err = berth_base::Base::start(config)
        .await
        .err()
        .expect("a base with a missing --artifact-dir started");
    let message = err.to_string();
    assert!(
        message.contains("--artifact-dir /nonexistent/artifacts"),
        "{message}"
    );
}
