//! `berth sign` end to end: a key pair, a signature beside the artifact, a
//! base and a controller that trust the key, and a fleet base that gets the
//! signature from the controller.

use std::time::{Duration, Instant};

use berth_example_modules::{ECHO, HELLO};

use crate::support::{
    BaseProcess, apply_command, berth, failure, spawn_controller, stdout, write_deployment,
};

fn served(ingress: &str, path: &str) -> bool {
    use std::io::{Read as _, Write as _};
    let addr = ingress.trim_start_matches("http://");
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

#[test]
fn signed_artifacts_deploy_to_a_trusting_base_and_fleet_and_unsigned_ones_do_not() {
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("release.key");
    let out = stdout(berth(&["sign", "--generate-key", key.to_str().unwrap()]));
    assert!(out.contains("release.key.pub"), "{out}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the signing key is readable by others");
    // A second generate never overwrites the key.
    failure(berth(&["sign", "--generate-key", key.to_str().unwrap()]));
    let public = work.path().join("release.key.pub");

    let hello = work.path().join("hello.wasm");
    std::fs::copy(HELLO, &hello).unwrap();
    let echo = work.path().join("echo.wasm");
    std::fs::copy(ECHO, &echo).unwrap();
    let out = stdout(berth(&[
        "sign",
        hello.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]));
    assert!(out.contains("hello.wasm.sig"), "{out}");

    // A base trusting the key: the signed upload installs, the unsigned is refused.
    let base = BaseProcess::start_with(&["--trust-key", public.to_str().unwrap()]);
    stdout(base.berth(&["deploy", hello.to_str().unwrap(), "--version", "1.0.0"]));
    assert!(served(&base.ingress, "/hello"));
    let err = failure(base.berth(&["deploy", echo.to_str().unwrap(), "--version", "1.0.0"]));
    assert!(
        err.contains("not signed") && err.contains("berth sign"),
        "{err}"
    );
    assert!(!served(&base.ingress, "/echo"));
    drop(base);

    // A fleet: the controller refuses the unsigned manifest, and a base that
    // trusts the key installs the signed one with the signature the
    // controller serves beside it.
    let (mut ctl, addr) = spawn_controller(
        0,
        &work.path().join("ctl"),
        &["--trust-key", public.to_str().unwrap()],
        &[],
    );
    let controller = format!("http://{addr}");
    let trust = ["--trust-key", public.to_str().unwrap()];
    let fleet_base = BaseProcess::joining(&controller, "a", "group=online", "100ms", &trust);
    let manifest = |name: &str, file: &std::path::Path| {
        let spec = "replicas: 1\n  baseSelector: { group: online }";
        write_deployment(
            work.path(),
            name,
            "1.0.0",
            file.to_str().unwrap(),
            None,
            spec,
        )
    };
    let apply = |file: &std::path::Path| apply_command(file, &addr);
    let err = failure(apply(&manifest("echo", &echo)));
    assert!(err.contains("is not signed"), "{err}");
    stdout(apply(&manifest("hello", &hello)));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !served(&fleet_base.ingress, "/hello") {
        assert!(
            Instant::now() < deadline,
            "the signed module never served on the fleet base"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = ctl.kill();
    let _ = ctl.wait();
}
