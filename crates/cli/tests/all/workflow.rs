//! The `berth` binary end to end: a real base process, real module builds,
//! real HTTP. new → build → deploy → invoke → dev (edit, broken edit) →
//! undeploy, plus the one-line errors of bad input.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    BERTH, BaseProcess, berth, edit, failure, lines, stdout, wait_for, work_dir, work_root,
};

#[test]
fn new_build_deploy_invoke_dev_undeploy() {
    let base = BaseProcess::start();
    let work = work_dir();
    let dir = work.path().join("greeter");
    let dir_s = dir.to_str().unwrap();

    let out = stdout(berth(&["new", "greeter", "--dir", dir_s]));
    assert!(out.contains("created module `greeter`"), "{out}");
    assert!(dir.join("berth.toml").exists() && dir.join("src/lib.rs").exists());

    let out = stdout(berth(&["build", dir_s]));
    assert!(
        out.contains("built greeter@0.1.0") && out.contains("sha256:"),
        "{out}"
    );
    let built: serde_json::Value =
        serde_json::from_str(&stdout(berth(&["build", dir_s, "-o", "json"]))).unwrap();
    assert!(Path::new(built["artifact"].as_str().unwrap()).exists());
    assert!(built["sizeBytes"].as_u64().unwrap() > 1000);

    let out = stdout(base.berth(&["deploy", dir_s]));
    assert!(out.contains("deployed greeter@0.1.0"), "{out}");
    assert!(
        out.contains("serving at http://127.0.0.1:") && out.contains("/greeter"),
        "{out}"
    );

    let out = stdout(base.berth(&["invoke", "greeter", "--path", "/x?y=1"]));
    assert_eq!(out, "Hello from greeter! You asked for /greeter/x?y=1\n");

    let listed: serde_json::Value =
        serde_json::from_str(&stdout(base.berth(&["list", "-o", "json"]))).unwrap();
    assert_eq!(listed[0]["name"], "greeter");
    assert_eq!(listed[0]["requests"], 1);
    let status = stdout(base.berth(&["status", "greeter"]));
    assert!(status.contains("requests     1 (0 failed)"), "{status}");

    // A second module may not take greeter's route: one clear line, nothing changes.
    let other = work.path().join("other");
    stdout(berth(&["new", "other", "--dir", other.to_str().unwrap()]));
    let err = failure(base.berth(&["deploy", other.to_str().unwrap(), "--route", "/greeter"]));
    assert!(
        err.contains("route_conflict") && err.contains("`greeter`"),
        "{err}"
    );

    // Every build of the module from here on is slow on purpose (a build
    // script that sleeps 1.5 s whenever src/lib.rs changed), so the second
    // save below surely lands while a build runs.
    std::fs::write(
        dir.join("build.rs"),
        "fn main() {\n    println!(\"cargo:rerun-if-changed=src/lib.rs\");\n    \
         std::thread::sleep(std::time::Duration::from_millis(1500));\n}\n",
    )
    .unwrap();
    // berth dev: redeploys on save, keeps serving through a broken edit.
    let mut dev = Command::new(BERTH)
        .args(["dev", dir_s, "--base", &base.ops])
        .env("CARGO_TARGET_DIR", work_root().join("target"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dev_lines = lines(&mut dev);
    // The first build answers no save: no save-to-serving time.
    let line = wait_for(&dev_lines, "deployed greeter@0.1.0-dev.");
    assert!(
        line.starts_with("deployed ")
            && line.contains("serving at http://")
            && !line.contains("after the save"),
        "{line}"
    );
    let lib = dir.join("src/lib.rs");
    edit(&lib, "Hello from greeter!", "Howdy from greeter!");
    let line = wait_for(&dev_lines, "redeployed greeter@0.1.0-dev.");
    assert!(line.contains("ms after the save (excluding"), "{line}");
    let out = stdout(base.berth(&["invoke", "greeter"]));
    assert_eq!(out, "Howdy from greeter! You asked for /greeter\n");

    edit(&lib, "Howdy from greeter!", "Howdy from greeter!\" broken");
    wait_for(&dev_lines, "keeps serving");
    let out = stdout(base.berth(&["invoke", "greeter"]));
    assert_eq!(
        out, "Howdy from greeter! You asked for /greeter\n",
        "a failed build changed what serves"
    );
    edit(&lib, "Howdy from greeter!\" broken", "Fixed greeter!");
    wait_for(&dev_lines, "redeployed greeter@0.1.0-dev.");
    let out = stdout(base.berth(&["invoke", "greeter"]));
    assert_eq!(out, "Fixed greeter! You asked for /greeter\n");
    // A save while a build runs is not lost: another build follows. The
    // second save comes right after the build starts, well inside its 1.5 s.
    edit(&lib, "Fixed greeter!", "Saved once!");
    wait_for(&dev_lines, "saved: building greeter");
    edit(&lib, "Saved once!", "Saved twice!");
    wait_for(&dev_lines, "redeployed greeter@0.1.0-dev.");
    wait_for(&dev_lines, "saved: building greeter");
    wait_for(&dev_lines, "redeployed greeter@0.1.0-dev.");
    let out = stdout(base.berth(&["invoke", "greeter"]));
    assert_eq!(out, "Saved twice! You asked for /greeter\n");
    let _ = dev.kill();
    let _ = dev.wait();

    // dev keeps one dev version beside the deployed 0.1.0.
    let listed: serde_json::Value =
        serde_json::from_str(&stdout(base.berth(&["list", "-o", "json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    let out = stdout(base.berth(&["undeploy", "greeter"]));
    assert!(out.contains("undeployed greeter@0.1.0"), "{out}");
    let err = failure(base.berth(&["invoke", "greeter"]));
    assert!(err.contains("no module named `greeter`"), "{err}");
    let out = stdout(base.berth(&["list"]));
    assert_eq!(out.trim(), "no modules installed");
}

#[test]
fn the_json_template_builds_and_serves() {
    let base = BaseProcess::start();
    let work = work_dir();
    let dir = work.path().join("jsonapi");
    stdout(berth(&[
        "new",
        "jsonapi",
        "--template",
        "json",
        "--dir",
        dir.to_str().unwrap(),
    ]));
    let out = stdout(base.berth(&["deploy", dir.to_str().unwrap()]));
    assert!(out.contains("/jsonapi\n"), "{out}");
    // The URL deploy printed answers: the API's index.
    let index: serde_json::Value =
        serde_json::from_str(&stdout(base.berth(&["invoke", "jsonapi"]))).unwrap();
    assert_eq!(index["module"], "jsonapi", "{index}");
    assert_eq!(index["endpoints"][0], "GET /jsonapi/items", "{index}");
    let out = stdout(base.berth(&[
        "invoke",
        "jsonapi",
        "--path",
        "/items",
        "-d",
        r#"{"name":"pen"}"#,
        "-H",
        "content-type: application/json",
    ]));
    let item: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (item["id"].as_u64(), item["name"].as_str()),
        (Some(2), Some("pen"))
    );
}

#[test]
fn bad_input_gets_one_clear_line_and_a_failing_exit() {
    let err = failure(berth(&["list", "--base", "http://127.0.0.1:1"]));
    assert!(
        err.contains("no base answers at http://127.0.0.1:1")
            && err.contains("hint: start one with `berth up`"),
        "{err}"
    );

    let err = failure(berth(&["list", "--base", "::not a url"]));
    assert!(err.contains("is not a base URL"), "{err}");

    let empty = work_dir();
    let err = failure(berth(&["build", empty.path().to_str().unwrap()]));
    assert!(
        err.contains("is not a module folder") && err.contains("berth new"),
        "{err}"
    );

    let err = failure(berth(&[
        "new",
        "Bad_Name",
        "--dir",
        empty.path().join("x").to_str().unwrap(),
    ]));
    assert!(err.contains("`Bad_Name` is not a module name"), "{err}");

    // A name that is taken on disk.
    let work = work_dir();
    let dir = work.path().join("taken");
    stdout(berth(&["new", "taken", "--dir", dir.to_str().unwrap()]));
    let err = failure(berth(&["new", "taken", "--dir", dir.to_str().unwrap()]));
    assert!(err.contains("already exists"), "{err}");

    // A build failure shows the compiler's error.
    edit(&dir.join("src/lib.rs"), "fn handle(", "fn handle(oops ");
    let output = berth(&["build", dir.to_str().unwrap()]).output().unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("error") && err.contains("the build of `taken` failed"),
        "{err}"
    );

    // A toolchain without the wasm32-wasip2 target: the exact rustup command.
    let fake_rustc = work.path().join("rustc-without-wasm");
    std::fs::write(
        &fake_rustc,
        "#!/bin/sh\necho /nonexistent/lib/rustlib/wasm32-wasip2/lib\n",
    )
    .unwrap();
    let mut perms = std::fs::metadata(&fake_rustc).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake_rustc, perms).unwrap();
    let mut cmd = berth(&["build", dir.to_str().unwrap()]);
    cmd.env("RUSTC", &fake_rustc);
    let err = failure(cmd);
    assert!(
        err.contains("the wasm32-wasip2 target is not installed")
            && err.contains("hint: run `rustup target add wasm32-wasip2`"),
        "{err}"
    );

    // A .wasm without a version.
    let wasm = work.path().join("m.wasm");
    std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
    let err = failure(berth(&[
        "deploy",
        wasm.to_str().unwrap(),
        "--base",
        "http://127.0.0.1:1",
    ]));
    assert!(err.contains("no base answers"), "{err}");
}

#[test]
fn deploying_a_bad_artifact_changes_nothing_on_the_base() {
    let base = BaseProcess::start();
    let work = work_dir();
    let wasm = work.path().join("core.wasm");
    std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
    let err = failure(base.berth(&["deploy", wasm.to_str().unwrap(), "--version", "1.0.0"]));
    assert!(err.contains("not_a_component"), "{err}");
    let err = failure(base.berth(&["deploy", wasm.to_str().unwrap()]));
    assert!(err.contains("pass --version"), "{err}");
    let out = stdout(base.berth(&["list"]));
    assert_eq!(out.trim(), "no modules installed");
}

#[test]
fn versions_switch_rollback_and_rules_from_the_cli() {
    let base = BaseProcess::start();
    let work = work_dir();
    let (v1, v2) = (
        berth_example_modules::HELLO,
        berth_example_modules::HELLO_V2,
    );
    stdout(base.berth(&["deploy", v1, "--name", "hello", "--version", "1"]));
    stdout(base.berth(&[
        "deploy",
        v2,
        "--name",
        "hello",
        "--version",
        "2",
        "--no-activate",
    ]));
    let invoke = |extra: &[&str]| {
        let mut args = vec!["invoke", "hello"];
        args.extend_from_slice(extra);
        stdout(base.berth(&args))
    };
    assert_eq!(invoke(&[]), "Hello from berth!\n");

    let rules = work.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - name: testers\n    match: [{on: header, name: x-beta, exact: \"yes\"}]\n    version: \"2\"\n",
    )
    .unwrap();
    let out = stdout(base.berth(&["rules", "set", "hello", "-f", rules.to_str().unwrap()]));
    assert!(out.contains("1 rule(s)"), "{out}");
    assert_eq!(
        invoke(&["-H", "x-beta: yes"]),
        "Hello from berth, version 2!\n"
    );
    assert_eq!(invoke(&[]), "Hello from berth!\n");
    let got: serde_json::Value = serde_json::from_str(&stdout(
        base.berth(&["rules", "get", "hello", "-o", "json"]),
    ))
    .unwrap();
    assert_eq!(got["rules"][0]["name"], "testers");

    // A bad rule set: one line naming the rule, the old rules stay.
    std::fs::write(&rules, "rules:\n  - name: gray\n    split: [{version: \"1\", weight: 50}, {version: \"2\", weight: 60}]\n").unwrap();
    let err = failure(base.berth(&["rules", "set", "hello", "-f", rules.to_str().unwrap()]));
    assert!(
        err.contains("rule #1 \"gray\": split weights sum to 110") && err.contains("invalid_rules"),
        "{err}"
    );
    assert_eq!(
        invoke(&["-H", "x-beta: yes"]),
        "Hello from berth, version 2!\n"
    );
    // A version in use cannot be undeployed.
    let err = failure(base.berth(&["undeploy", "hello", "--version", "2"]));
    assert!(err.contains("version_in_use"), "{err}");

    let out = stdout(base.berth(&["switch", "hello", "2"]));
    assert!(out.contains("default 1 → 2"), "{out}");
    assert_eq!(invoke(&[]), "Hello from berth, version 2!\n");
    let out = stdout(base.berth(&["rollback", "hello"]));
    assert!(out.contains("default 2 → 1"), "{out}");
    assert_eq!(invoke(&[]), "Hello from berth!\n");
    let err = failure(base.berth(&["switch", "hello", "9"]));
    assert!(err.contains("no version `9`"), "{err}");
}

#[test]
fn logs_follow_shows_a_module_line_within_a_second() {
    let base = BaseProcess::start();
    stdout(base.berth(&[
        "deploy",
        berth_example_modules::COUNTER,
        "--name",
        "counter",
        "--version",
        "1",
    ]));
    stdout(base.berth(&[
        "deploy",
        berth_example_modules::PANIC,
        "--name",
        "panic",
        "--version",
        "1",
    ]));

    let mut follow = Command::new(BERTH)
        .args(["logs", "counter", "--follow", "--base", &base.ops])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let followed = lines(&mut follow);
    // The first hit arrives live or from the ring: either way, the stream is up.
    stdout(base.berth(&["invoke", "counter"]));
    wait_for(&followed, "counted hit 1");
    let invoked = Instant::now();
    stdout(base.berth(&["invoke", "counter"]));
    let line = wait_for(&followed, "counted hit 2");
    let latency = invoked.elapsed();
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        latency < Duration::from_secs(1),
        "the line took {latency:?} to show"
    );
    assert!(
        line.contains("counter@1") && line.contains("info"),
        "{line}"
    );

    // Without --follow: the ring, with the request id; stderr of a trapping module too.
    let out = stdout(base.berth(&["logs", "counter", "--since", "5m"]));
    assert!(out.contains("counted hit 1"), "{out}");
    // The trap answers 500, so invoke fails.
    let err = failure(base.berth(&["invoke", "panic", "--path", "/boom"]));
    assert!(err.contains("the module answered 500"), "{err}");
    let out = stdout(base.berth(&["logs", "panic", "-o", "json"]));
    let entry: serde_json::Value = serde_json::from_str(
        out.lines()
            .find(|l| l.contains("panics on purpose"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (entry["stream"].as_str(), entry["level"].as_str()),
        (Some("stderr"), Some("error"))
    );
    assert!(
        entry["requestId"].as_str().is_some_and(|id| id.len() == 32),
        "{entry}"
    );
    let err = failure(base.berth(&["logs", "ghost"]));
    assert!(err.contains("no module named `ghost`"), "{err}");
}
