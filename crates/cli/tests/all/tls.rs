//! TLS on the listeners (`--tls-cert`/`--tls-key`) with a self-signed
//! certificate for 127.0.0.1 made by the `openssl` command: a base serves
//! its ops API and ingress over https to a CLI given the certificate as its
//! CA (`BERTH_CA_FILE`, `--ca-file`), refuses plain HTTP on those ports, a
//! CLI without the CA fails saying what to pass, a bad key or half a pair
//! refuses to start naming the file, a base joins a controller over
//! https, and a gateway serves its front door over https.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_example_modules::HELLO;

use crate::support::{
    BaseProcess, berth, failure, raw_get, spawn_controller, spawn_gateway, stdout, work_dir,
};

/// The environment variable naming the CA file clients trust.
const CA: &str = "BERTH_CA_FILE";

/// Writes a self-signed P-256 certificate for IP 127.0.0.1 and its key to
/// `dir/NAME.crt` and `dir/NAME.key`; returns their paths.
fn self_signed(dir: &Path, name: &str) -> (String, String) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=berth-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            // A server's own certificate is not a CA's (webpki refuses one).
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-days",
            "1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command");
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        cert.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    )
}

#[test]
fn a_base_serves_https_to_a_cli_that_trusts_its_certificate_and_refuses_plain_http() {
    let work = work_dir();
    let (cert, key) = self_signed(work.path(), "base");
    let base = BaseProcess::start_with(&["--tls-cert", &cert, "--tls-key", &key]);
    assert!(base.ops.starts_with("https://127.0.0.1:"), "{}", base.ops);
    assert!(
        base.ingress.starts_with("https://127.0.0.1:"),
        "{}",
        base.ingress
    );

    // With the certificate as CA: deploy, status and invoke over https.
    let mut deploy = base.berth(&["deploy", HELLO, "--name", "hello", "--version", "1.0.0"]);
    deploy.env(CA, &cert);
    stdout(deploy);
    let mut status = base.berth(&["status", "hello"]);
    status.env(CA, &cert);
    let status = stdout(status);
    assert!(
        status.contains("1.0.0") && status.contains("active"),
        "{status}"
    );
    let mut invoke = base.berth(&["invoke", "hello"]);
    invoke.env_remove(CA).args(["--ca-file", &cert]);
    let answer = stdout(invoke);
    assert!(answer.to_lowercase().contains("hello"), "{answer}");

    // Plain HTTP to either TLS port gets no HTTP answer.
    for addr in [&base.ops, &base.ingress] {
        let plain = raw_get(addr.trim_start_matches("https://"), "/v1/health");
        assert!(
            !plain.as_deref().unwrap_or("").starts_with("HTTP/1.1"),
            "plain HTTP to {addr} was answered: {plain:?}"
        );
    }

    // Without the CA: refused, saying what to pass.
    let mut list = base.berth(&["list"]);
    list.env_remove(CA);
    let err = failure(list);
    assert!(err.contains("not trusted"), "{err}");
    assert!(
        err.contains("--ca-file") && err.contains("BERTH_CA_FILE"),
        "{err}"
    );
}

#[test]
fn a_bad_key_a_mismatched_key_or_half_a_pair_refuses_to_start_naming_the_file() {
    let work = work_dir();
    let (cert, key) = self_signed(work.path(), "one");
    let (_, other_key) = self_signed(work.path(), "two");
    let garbage = work.path().join("garbage.key");
    std::fs::write(&garbage, "this is not a key\n").unwrap();
    let garbage = garbage.to_str().unwrap();
    let data = work.path().join("data");
    let start = |tls: &[&str]| {
        let mut cmd = berth(&["base", "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0"]);
        cmd.arg("--data-dir")
            .arg(&data)
            .arg("--insecure-no-auth")
            .args(tls)
            .timeout(Duration::from_secs(30));
        failure(cmd)
    };

    let err = start(&["--tls-cert", &cert, "--tls-key", garbage]);
    assert!(
        err.contains(garbage) && err.contains("holds no private key"),
        "{err}"
    );
    let err = start(&["--tls-cert", &cert, "--tls-key", &other_key]);
    assert!(
        err.contains(&other_key) && err.contains("does not match the certificate"),
        "{err}"
    );
    let missing = work.path().join("missing.crt");
    let err = start(&["--tls-cert", missing.to_str().unwrap(), "--tls-key", &key]);
    assert!(
        err.contains("missing.crt") && err.contains("cannot read the TLS certificate file"),
        "{err}"
    );
    let err = start(&["--tls-cert", &cert]);
    assert!(
        err.contains("--tls-cert was given without --tls-key"),
        "{err}"
    );
    // A CA file that holds no certificate is named too.
    let mut list = berth(&[
        "list",
        "--base",
        "https://127.0.0.1:1",
        "--ca-file",
        garbage,
    ]);
    list.timeout(Duration::from_secs(30));
    let err = failure(list);
    assert!(
        err.contains(garbage) && err.contains("holds no PEM certificate"),
        "{err}"
    );
}

#[test]
fn a_base_joins_a_controller_over_https() {
    let work = work_dir();
    let (cert, key) = self_signed(work.path(), "controller");
    let (mut controller, url) = spawn_controller(
        0,
        &work.path().join("controller"),
        &["--tls-cert", &cert, "--tls-key", &key],
        &[],
    );
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let base = BaseProcess::start_at_with_env(
        &work.path().join("base"),
        &[
            "--controller",
            &url,
            "--name",
            "secure",
            "--labels",
            "group=online",
            "--heartbeat-interval",
            "200ms",
        ],
        &[(CA, &cert)],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut get = berth(&["get", "bases", "--controller", &url]);
        get.env(CA, &cert);
        let bases = stdout(get);
        if bases.contains("secure") && bases.contains("Ready") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the base never joined over https: {bases}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut get = berth(&["get", "bases", "--controller", &url]);
    get.env_remove(CA);
    let err = failure(get);
    assert!(
        err.contains("not trusted") && err.contains("--ca-file"),
        "{err}"
    );
    drop(base);
    let _ = controller.kill();
    let _ = controller.wait();
}

#[test]
fn a_gateway_serves_its_front_door_over_https() {
    let work = work_dir();
    let (cert, key) = self_signed(work.path(), "gateway");
    let (mut controller, ctl) = spawn_controller(0, &work.path().join("controller"), &[], &[]);
    let (mut gateway, addr, _log) = spawn_gateway(&ctl, &["--tls-cert", &cert, "--tls-key", &key]);
    let pem = std::fs::read(&cert).unwrap();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("https://{addr}/metrics");
    let metrics = runtime.block_on(async {
        let answer = trusting.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        answer.text().await.unwrap()
    });
    // OpenMetrics text (no series yet: nothing was proxied).
    assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");
    // A client without the certificate is refused; plain HTTP gets no answer.
    let refused = runtime.block_on(reqwest::Client::new().get(&url).send());
    let err = refused.expect_err("an untrusted certificate");
    let hint = berth_api::tls::untrusted_hint(&err).expect("a TLS refusal");
    assert!(hint.contains("--ca-file"), "{hint}");
    let plain = raw_get(&addr, "/metrics");
    assert!(
        !plain.as_deref().unwrap_or("").starts_with("HTTP/1.1"),
        "plain HTTP was answered: {plain:?}"
    );
    for child in [&mut gateway, &mut controller] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
