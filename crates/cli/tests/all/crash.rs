//! Crash safety: a base killed (abort, like `kill -9`) at each step of
//! install, switch, rules change and uninstall comes back with every
//! module either fully installed and serving or absent, the change either
//! whole or not made, and no truncated compile-cache entry. The kill is a
//! test-only failpoint (`BERTH_TEST_FAILPOINT`, see
//! `berth_runtime::failpoint`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_example_modules::{HELLO, HELLO_V2};
use serde_json::Value;

use crate::support::{BERTH, BaseProcess, spawn_announced};

/// A `berth base` on `dir` that aborts at `failpoint`.
fn base_failing_at(dir: &Path, failpoint: &str) -> BaseProcess {
    let mut cmd = Command::new(BERTH);
    cmd.args(["base", "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        .env("BERTH_TEST_FAILPOINT", failpoint);
    let (child, urls) = spawn_announced(&mut cmd, &["ingress", "ops API"])
        .unwrap_or_else(|stderr| panic!("berth base did not start; stderr:\n{stderr}"));
    let [ingress, ops] = <[String; 2]>::try_from(urls).expect("two addresses");
    BaseProcess::from_parts(child, ingress, ops)
}

fn run(base: &BaseProcess, args: &[&str]) -> std::process::Output {
    base.berth(args).output().unwrap()
}

fn ok(base: &BaseProcess, args: &[&str]) {
    let output = run(base, args);
    assert!(
        output.status.success(),
        "berth {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `GET /hello` on the ingress: the body, if it answered 200.
fn hello(ingress: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let addr = ingress.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /hello HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .starts_with("HTTP/1.1 200")
        .then(|| response.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// The modules the base lists: (version, state).
fn listed(base: &BaseProcess) -> Vec<(String, String)> {
    let output = run(base, &["list", "-o", "json"]);
    assert!(output.status.success());
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    let modules = list
        .as_array()
        .or_else(|| list.get("modules").and_then(Value::as_array))
        .cloned()
        .unwrap_or_default();
    modules
        .iter()
        .map(|m| {
            (
                m["version"].as_str().unwrap_or_default().to_string(),
                m["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Every artifact in the cache has the bytes its name says.
fn assert_cache_whole(dir: &Path) {
    let mut checked = 0;
    for entry in walk(&dir.join("cache")) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        if let Some(hex) = name.strip_suffix(".wasm") {
            let bytes = std::fs::read(&entry).unwrap();
            assert_eq!(
                berth_runtime::Digest::of(&bytes).hex(),
                hex,
                "truncated or corrupt cache entry {}",
                entry.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "no artifact in the cache under {}",
        dir.display()
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// What a step's operation starts from, and the operation.
struct Step {
    failpoint: &'static str,
    /// hello@2.0.0 installed (inactive) before the operation.
    with_v2: bool,
    operation: fn(&BaseProcess, &Path),
}

fn install_v2(base: &BaseProcess, _: &Path) {
    let _ = run(
        base,
        &["deploy", HELLO_V2, "--name", "hello", "--version", "2.0.0"],
    );
}

fn switch_v2(base: &BaseProcess, _: &Path) {
    let _ = run(base, &["switch", "hello", "2.0.0"]);
}

fn rules_v2(base: &BaseProcess, work: &Path) {
    let rules = work.join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - name: all\n    split: [{version: 2.0.0, weight: 100}]\n",
    )
    .unwrap();
    let _ = run(
        base,
        &["rules", "set", "hello", "-f", rules.to_str().unwrap()],
    );
}

fn uninstall_v2(base: &BaseProcess, _: &Path) {
    let _ = run(base, &["undeploy", "hello", "--version", "2.0.0"]);
}

#[test]
fn a_base_killed_at_any_step_restarts_whole() {
    let steps = [
        (
            "install:fetched",
            false,
            install_v2 as fn(&BaseProcess, &Path),
        ),
        ("install:compiled", false, install_v2),
        ("install:before-persist", false, install_v2),
        ("install:persisted", false, install_v2),
        ("switch:before-persist", true, switch_v2),
        ("switch:persisted", true, switch_v2),
        ("rules:before-persist", true, rules_v2),
        ("rules:persisted", true, rules_v2),
        ("uninstall:before-persist", true, uninstall_v2),
        ("uninstall:persisted", true, uninstall_v2),
    ]
    .map(|(failpoint, with_v2, operation)| Step {
        failpoint,
        with_v2,
        operation,
    });
    let started = Instant::now();
    for step in &steps {
        let dir = tempfile::tempdir().unwrap();
        // The state before: hello@1.0.0 serving (and 2.0.0 beside it).
        {
            let base = BaseProcess::start_at(dir.path(), &[]);
            ok(
                &base,
                &["deploy", HELLO, "--name", "hello", "--version", "1.0.0"],
            );
            if step.with_v2 {
                ok(
                    &base,
                    &[
                        "deploy",
                        HELLO_V2,
                        "--name",
                        "hello",
                        "--version",
                        "2.0.0",
                        "--no-activate",
                    ],
                );
            }
        } // killed (SIGKILL) on drop
        // The operation, killed at the step.
        let mut dying = base_failing_at(dir.path(), step.failpoint);
        (step.operation)(&dying, dir.path());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = dying.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the base did not die at its failpoint",
                step.failpoint
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!status.success(), "{}: exited {status}", step.failpoint);
        drop(dying);

        // Restarted: whole, serving, and the change all or nothing.
        let base = BaseProcess::start_at(dir.path(), &[]);
        let modules = listed(&base);
        for (version, state) in &modules {
            assert!(
                state == "active" || state == "inactive",
                "{}: hello@{version} came back {state}: {modules:?}",
                step.failpoint
            );
        }
        let body = hello(&base.ingress)
            .unwrap_or_else(|| panic!("{}: hello does not serve", step.failpoint));
        let active: Vec<&str> = modules
            .iter()
            .filter(|(_, s)| s == "active")
            .map(|(v, _)| v.as_str())
            .collect();
        assert_eq!(active.len(), 1, "{}: {modules:?}", step.failpoint);
        let serves_v2 = body.contains("version 2");
        let has_v2 = modules.iter().any(|(v, _)| v == "2.0.0");
        match step.failpoint.split(':').next().unwrap() {
            // Installed (as the default) or absent.
            "install" => assert_eq!(
                has_v2,
                active == ["2.0.0"],
                "{}: {modules:?}",
                step.failpoint
            ),
            // The default is whichever version answers.
            "switch" => assert_eq!(serves_v2, active == ["2.0.0"], "{}", step.failpoint),
            // Old rules (1.0.0 answers) or new (2.0.0 answers); 1.0.0 stays the default.
            "rules" => assert_eq!(active, ["1.0.0"], "{}", step.failpoint),
            // 2.0.0 there or not; 1.0.0 serves either way.
            _ => assert!(!serves_v2, "{}: {body}", step.failpoint),
        }
        if !step.failpoint.starts_with("rules") {
            assert_eq!(serves_v2, active == ["2.0.0"], "{}: {body}", step.failpoint);
        }
        // Where the kill came after the write, the change is there.
        if step.failpoint.ends_with(":persisted") {
            match step.failpoint {
                "install:persisted" => assert!(has_v2, "{modules:?}"),
                "switch:persisted" | "rules:persisted" => assert!(serves_v2, "{body}"),
                _ => assert!(!has_v2, "{modules:?}"),
            }
        }
        assert_cache_whole(dir.path());
    }
    eprintln!(
        "{} failpoints, each killed and restarted, in {:?}",
        steps.len(),
        started.elapsed()
    );
}
