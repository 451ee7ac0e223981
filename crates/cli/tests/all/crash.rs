//! Crash safety: a base killed (abort, like `kill -9`) at each step of
//! install, switch, rules change and uninstall comes back with every
//! module either fully installed and serving or absent, the change either
//! whole or not made, and no truncated compile-cache entry. The kill is a
//! test-only failpoint (`BERTH_TEST_FAILPOINT`, see
//! `berth_runtime::failpoint`).

use std::path::Path;
use std::time::{Duration, Instant};

use berth_example_modules::{HELLO, HELLO_V2};
use serde_json::Value;

use crate::support::{BaseProcess, apply_command, spawn_controller, write_deployment};

/// A `berth base` on `dir` that aborts at `failpoint`.
fn base_failing_at(dir: &Path, failpoint: &str) -> BaseProcess {
    BaseProcess::start_at_with_env(dir, &[], &[("BERTH_TEST_FAILPOINT", failpoint)])
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

/// A `berth controller` on `port` (0: any) with its state in `dir`,
/// aborting at `failpoint` when given; returns it and its `HOST:PORT`.
fn controller(dir: &Path, port: u16, failpoint: Option<&str>) -> (std::process::Child, String) {
    let env: Vec<_> = failpoint
        .map(|step| ("BERTH_TEST_FAILPOINT", step))
        .into_iter()
        .collect();
    spawn_controller(port, dir, &[], &env)
}

fn apply(addr: &str, work: &Path, artifact: &str, version: &str) -> std::process::Output {
    let spec = "replicas: 1\n  baseSelector: { group: online }";
    let file = write_deployment(work, "hello", version, artifact, None, spec);
    apply_command(&file, addr).output().unwrap()
}

/// The stored deployments (`berth get deployments -o json`).
fn deployments(addr: &str) -> Vec<Value> {
    let output = crate::support::berth(&["get", "deployments", "-o", "json", "--controller", addr])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    value.as_array().cloned().unwrap_or_default()
}

fn wait_dead(child: &mut std::process::Child, what: &str) {
    wait_dead_within(child, what, Duration::from_secs(30), String::new);
}

/// Waits up to `limit` for `child` to die at its failpoint; `state` says
/// what it was doing if it did not.
fn wait_dead_within(
    child: &mut std::process::Child,
    what: &str,
    limit: Duration,
    state: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "{what}: exited {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: did not die at its failpoint within {limit:?}; {}",
            state()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_controller_killed_at_apply_or_rollout_restarts_whole() {
    // Apply: the deployment is stored whole or not at all.
    for (step, stored) in [("apply:before-store", false), ("apply:stored", true)] {
        let work = tempfile::tempdir().unwrap();
        let (mut dying, addr) = controller(&work.path().join("ctl"), 0, Some(step));
        let _ = apply(&addr, work.path(), HELLO, "1.0.0");
        wait_dead(&mut dying, step);
        let (mut ctl, addr) = controller(&work.path().join("ctl"), 0, None);
        let listed = deployments(&addr);
        assert_eq!(listed.len(), usize::from(stored), "{step}: {listed:?}");
        if stored {
            assert_eq!(listed[0]["manifest"]["spec"]["module"]["version"], "1.0.0");
        }
        let _ = ctl.kill();
        let _ = ctl.wait();
    }

    // Rollout: killed as it records progress, restarted on its port, the
    // rollout finishes and the base serves the new version.
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("ctl");
    let (mut first, addr) = controller(&dir, 0, None);
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let url = format!("http://{addr}");
    let base = BaseProcess::joining(&url, "a", "group=online", "100ms", &[]);
    assert!(apply(&addr, work.path(), HELLO, "1.0.0").status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while hello(&base.ingress).is_none_or(|b| b.contains("version 2")) {
        assert!(Instant::now() < deadline, "hello@1.0.0 never served");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = first.kill();
    let _ = first.wait();
    let (mut dying, addr) = controller(&dir, port, Some("rollout:stored"));
    let applied = apply(&addr, work.path(), HELLO_V2, "2.0.0");
    assert!(
        applied.status.success(),
        "apply of 2.0.0: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    // The first rollout step is stored once the base runs 2.0.0: a fetch,
    // a compile and a heartbeat, slow on a machine busy with other tests
    // (CI once took over 30 s here).
    wait_dead_within(
        &mut dying,
        "rollout:stored",
        Duration::from_secs(90),
        || {
            let describe =
                crate::support::berth(&["describe", "deployment", "hello", "--controller", &addr])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
            format!(
                "the base serves {:?}; the controller says:\n{describe}",
                hello(&base.ingress)
            )
        },
    );
    let (mut ctl, addr) = controller(&dir, port, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hello(&base.ingress).is_some_and(|b| b.contains("version 2")) {
        assert!(
            Instant::now() < deadline,
            "the rollout did not finish after the restart: {:?}",
            deployments(&addr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let listed = deployments(&addr);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["manifest"]["spec"]["module"]["version"], "2.0.0");
    let _ = ctl.kill();
    let _ = ctl.wait();
}
