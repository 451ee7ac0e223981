//! The papercuts of a newcomer's walk (issue #20), each pinned by the real
//! binary against a real base or controller: quiet guest traps under
//! `RUST_BACKTRACE=1`, readable `status`, hints that name the next command,
//! one set of output formats with JSON errors, aligned tables, and logs
//! without colours or banners where they do not belong.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_example_modules::{HELLO, HELLO_V2, HOG, PANIC, SPIN};

use crate::support::{
    BERTH, BaseProcess, berth, failure, file_digest, insecure_unless_set, spawn_announced, stdout,
    work_dir,
};

/// A `berth base` whose stderr goes to a file the test reads, with `env` set.
struct LoggedBase {
    child: std::process::Child,
    ops: String,
    log: tempfile::NamedTempFile,
    _data: tempfile::TempDir,
}

impl LoggedBase {
    fn start(env: &[(&str, &str)], extra: &[&str]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = insecure_unless_set(&mut Command::new(BERTH))
            .args(["base", "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data.path())
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .for_each(|l| drop(tx.send(l)))
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let ops = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("the base announced its ops API");
            if let Some(rest) = line.trim().strip_prefix("ops API") {
                break rest.trim().to_string();
            }
        };
        Self {
            child,
            ops,
            log,
            _data: data,
        }
    }

    fn berth(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = berth(args);
        cmd.args(["--base", &self.ops]);
        cmd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for LoggedBase {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn deploy(base: &LoggedBase, file: &str, name: &str, extra: &[&str]) {
    let mut args = vec!["deploy", file, "--name", name, "--version", "1.0.0"];
    args.extend_from_slice(extra);
    stdout(base.berth(&args));
}

#[test]
fn guest_traps_under_rust_backtrace_keep_the_log_short_and_status_readable() {
    let base = LoggedBase::start(&[("RUST_BACKTRACE", "1")], &[]);
    deploy(&base, PANIC, "panic", &[]);
    let before = base.log().lines().count();
    let rss_before = base.rss_kib();
    for _ in 0..3 {
        let _ = base.berth(&["invoke", "panic", "--path", "/boom"]).output();
    }
    let log = base.log();
    let trap_lines = log.lines().count() - before;
    // One error line plus the wasm backtrace (~15 lines) per trap; a host
    // backtrace would add ~180 lines each.
    assert!(
        trap_lines < 3 * 25,
        "{trap_lines} lines for 3 traps:\n{log}"
    );
    assert!(!log.contains("Stack backtrace"), "{log}");
    assert!(!log.contains('\x1b'), "colours in a log file:\n{log}");
    // Symbolizing host backtraces took the base from ~40 MB to ~120 MB
    // (debug build; ~240 MB in release); the traps alone cost ~3 MB.
    let grown = base.rss_kib().saturating_sub(rss_before);
    assert!(grown < 30 * 1024, "base RSS grew {grown} KiB over 3 traps");

    let status = stdout(base.berth(&["status", "panic"]));
    assert!(
        status.contains("panicked at panic/src/lib.rs")
            && status.contains("panics on purpose")
            && status.contains("at wasi:http/incoming-handler@0.2.12#handle"),
        "{status}"
    );
    assert!(
        !status.contains("std::") && !status.contains("core::"),
        "{status}"
    );
    assert!(status.contains("  version 1.0.0 (active)"), "{status}");
    assert!(status.contains("(compile cache miss)"), "{status}");
    assert!(
        status.contains("size         ") && status.contains(" KiB"),
        "{status}"
    );
    assert!(
        !status.contains(" bytes") && !status.contains(" B,"),
        "{status}"
    );
    // Every field's value starts in one column (17), `last Ns` included.
    let fields: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("    ") && !l.starts_with("     "))
        .collect();
    assert!(
        fields.iter().any(|l| l.starts_with("    last ")),
        "{status}"
    );
    for line in fields {
        let (label, value) = line.split_at(17);
        assert!(
            label.ends_with(' ') && !value.starts_with(' '),
            "misaligned `{line}` in\n{status}"
        );
    }
}

#[test]
fn memory_and_deadline_failures_print_their_text_once() {
    let base = LoggedBase::start(&[], &[]);
    deploy(&base, SPIN, "spin", &["--timeout", "200ms"]);
    deploy(&base, HOG, "hog", &["--memory-mib", "2"]);
    let _ = base.berth(&["invoke", "spin"]).output();
    let _ = base.berth(&["invoke", "hog"]).output();
    for (module, text) in [("spin", "deadline"), ("hog", "memory limit")] {
        let status = stdout(base.berth(&["status", module]));
        assert_eq!(status.matches(text).count(), 1, "{status}");
        assert!(
            status.contains("memory 2 MiB") || module == "spin",
            "{status}"
        );
    }
}

#[test]
fn hints_name_the_next_command() {
    let base = BaseProcess::start();
    let work = work_dir();
    stdout(base.berth(&["deploy", HELLO, "--name", "hello", "--version", "1.0.0"]));
    // What `berth dev` leaves behind, beside the deployed version.
    stdout(base.berth(&[
        "deploy",
        HELLO_V2,
        "--name",
        "hello",
        "--version",
        "1.0.0-dev.5",
        "--no-activate",
    ]));
    // Other bytes at a taken version: the next version and how to undeploy.
    let err = failure(base.berth(&["deploy", HELLO_V2, "--name", "hello", "--version", "1.0.0"]));
    assert!(err.contains("version_conflict"), "{err}");
    assert!(
        err.contains("hint: deploy this build as a new version: `berth deploy --version 1.0.1`"),
        "{err}"
    );
    assert!(
        err.contains("`berth undeploy hello --version 1.0.0`")
            && err.contains("`berth dev` left hello@1.0.0-dev.5 installed; remove it with `berth undeploy hello --version 1.0.0-dev.5`"),
        "{err}"
    );

    // --no-activate: no `serving at`, but how to reach it.
    let out = stdout(base.berth(&[
        "deploy",
        HELLO_V2,
        "--name",
        "hello",
        "--version",
        "2.0.0",
        "--no-activate",
    ]));
    assert!(!out.contains("serving at"), "{out}");
    assert!(
        out.contains("not serving yet")
            && out.contains("`berth rules set hello -f rules.yaml`")
            && out.contains("`berth switch hello 2.0.0`"),
        "{out}"
    );

    // A catch-all split keeps everything on 1.0.0: switch says so.
    let rules = work.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - name: all\n    split: [{version: 1.0.0, weight: 100}]\n",
    )
    .unwrap();
    stdout(base.berth(&["rules", "set", "hello", "-f", rules.to_str().unwrap()]));
    let output = base.berth(&["switch", "hello", "2.0.0"]).output().unwrap();
    assert!(output.status.success());
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(out.contains("default 1.0.0 → 2.0.0"), "{out}");
    assert!(
        err.contains("warning: rule `all` matches every request and sends it to 1.0.0 100%, so the default hello@2.0.0 serves no request")
            && err.contains("hint: see the rules with `berth rules get hello`"),
        "{err}"
    );
    let switched: serde_json::Value =
        serde_json::from_str(&stdout(base.berth(&["rollback", "hello", "-o", "json"]))).unwrap();
    assert_eq!(switched["current"], "1.0.0");
    assert!(
        switched["warnings"].as_array().unwrap().is_empty(),
        "{switched}"
    );

    // Rules from stdin that do not parse.
    let mut cmd = base.berth(&["rules", "set", "hello", "-f", "-"]);
    cmd.write_stdin("rules: [{nonsense: 1}]\n");
    let err = failure(cmd);
    assert!(
        err.contains("standard input is not a valid rules document"),
        "{err}"
    );

    // A path that does not exist.
    let err = failure(base.berth(&["deploy", "/nope.wasm"]));
    assert!(err.contains("/nope.wasm: no such file or folder"), "{err}");
    assert!(
        !err.contains("module folder\n") && !err.contains("is not a module folder"),
        "{err}"
    );

    // A module that wrote nothing yet.
    let output = base.berth(&["logs", "hello"]).output().unwrap();
    assert!(output.status.success());
    assert!(output.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "no lines yet"
    );
}

#[test]
fn one_set_of_output_formats_and_json_errors() {
    let base = BaseProcess::start();
    // `-o json` on the commands that change things.
    let deployed: serde_json::Value = serde_json::from_str(&stdout(base.berth(&[
        "deploy",
        HELLO,
        "--name",
        "hello",
        "--version",
        "1",
        "-o",
        "json",
    ])))
    .unwrap();
    assert_eq!(deployed["module"]["version"], "1");
    stdout(base.berth(&[
        "deploy",
        HELLO_V2,
        "--name",
        "hello",
        "--version",
        "2",
        "--no-activate",
    ]));
    let switched: serde_json::Value =
        serde_json::from_str(&stdout(base.berth(&["switch", "hello", "2", "-o", "json"]))).unwrap();
    assert_eq!(
        (switched["previous"].as_str(), switched["current"].as_str()),
        (Some("1"), Some("2"))
    );
    let invoked: serde_json::Value =
        serde_json::from_str(&stdout(base.berth(&["invoke", "hello", "-o", "json"]))).unwrap();
    assert_eq!(invoked["status"], 200);
    assert_eq!(invoked["body"], "Hello from berth, version 2!\n");
    assert_eq!(invoked["servedBy"], "hello@2");
    let rolled: serde_json::Value =
        serde_json::from_str(&stdout(base.berth(&["rollback", "hello", "-o", "json"]))).unwrap();
    assert_eq!(rolled["current"], "1");
    let yaml = stdout(base.berth(&["list", "-o", "yaml"]));
    assert!(
        yaml.contains("name: hello") && yaml.contains("version: '2'"),
        "{yaml}"
    );
    // `text` is the table's old name.
    let table = stdout(base.berth(&["list", "-o", "text"]));
    let titles: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        titles,
        [
            "NAME", "VERSION", "STATE", "ROUTE", "REQUESTS", "ERRORS", "DIGEST"
        ]
    );
    let wide = stdout(base.berth(&["list", "-o", "wide"]));
    assert!(
        wide.lines()
            .next()
            .unwrap()
            .ends_with("SIZE       INSTALLED"),
        "{wide}"
    );
    let removed: serde_json::Value = serde_json::from_str(&stdout(base.berth(&[
        "undeploy",
        "hello",
        "--version",
        "2",
        "-o",
        "json",
    ])))
    .unwrap();
    assert_eq!(removed["removed"][0]["version"], "2");

    // Errors under -o json: one JSON document on stdout, nothing on stderr.
    let error = json_failure(base.berth(&["switch", "hello", "9", "-o", "json"]));
    assert_eq!(error["error"]["code"], "module_not_found");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no version `9`"),
        "{error}"
    );
    let error = json_failure(berth(&[
        "list",
        "-o",
        "json",
        "--base",
        "http://127.0.0.1:1",
    ]));
    assert_eq!(error["error"]["code"], "cli_error");
    assert!(
        error["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("`berth up`"),
        "{error}"
    );
    let error = json_failure(base.berth(&["invoke", "ghost", "-o", "json"]));
    assert_eq!(error["error"]["code"], "module_not_found", "{error}");
}

fn manifest(version: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: orders }}\nspec:\n  module: {{ name: orders, version: {version}, artifact: \"file:{}\", digest: \"{}\" }}\n  replicas: 2\n  baseSelector: {{ group: online }}\n",
        HELLO,
        file_digest(HELLO)
    )
}

#[test]
fn fleet_commands_share_the_formats_and_the_table_writer() {
    let work = work_dir();
    let mut cmd = Command::new(BERTH);
    cmd.args(["controller", "--listen", "127.0.0.1:0", "--no-code"])
        .arg("--data-dir")
        .arg(work.path().join("controller"));
    let (mut controller, urls) = spawn_announced(&mut cmd, &["berth controller serving on"])
        .unwrap_or_else(|stderr| panic!("berth controller did not start:\n{stderr}"));
    let addr = urls[0].clone();
    let ctl = |args: &[&str]| {
        let mut cmd = berth(args);
        cmd.args(["--controller", &addr]);
        cmd
    };
    let _base = BaseProcess::start_with(&[
        "--controller",
        &addr,
        "--name",
        "base-with-a-long-name",
        "--heartbeat-interval",
        "200ms",
        "--labels",
        "group=online,zone=a",
    ]);
    let file = work.path().join("orders.yaml");
    std::fs::write(&file, manifest("1.0.0")).unwrap();
    let applied: serde_json::Value = serde_json::from_str(&stdout(ctl(&[
        "apply",
        "-f",
        file.to_str().unwrap(),
        "-o",
        "json",
    ])))
    .unwrap();
    assert_eq!(
        (applied["result"].as_str(), applied["generation"].as_u64()),
        (Some("created"), Some(1))
    );

    // Columns never glue together.
    let table = stdout(ctl(&["get", "deployments"]));
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("READY   UP-TO-DATE   GENERATION"),
        "{table}"
    );
    let row = table.lines().nth(1).unwrap();
    let at = header.find("GENERATION").unwrap();
    assert_eq!(&row[at..at + 1], "1", "{table}");
    assert_eq!(&row[at - 3..at], "   ", "{table}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let wide = loop {
        let wide = stdout(ctl(&["get", "bases", "-o", "wide"]));
        if wide.contains("base-with-a-long-name") || Instant::now() > deadline {
            break wide;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let header = wide.lines().next().unwrap();
    let row = wide.lines().nth(1).unwrap_or_else(|| panic!("{wide}"));
    for (title, value) in [("LABELS", "group=online,zone=a"), ("INGRESS", "127.0.0.1:")] {
        assert_eq!(
            header.find(title),
            row.find(value),
            "{title} misaligned:\n{wide}"
        );
    }

    let described: serde_json::Value = serde_json::from_str(&stdout(ctl(&[
        "describe",
        "deployment",
        "orders",
        "-o",
        "json",
    ])))
    .unwrap();
    assert_eq!(described["manifest"]["metadata"]["name"], "orders");
    // describe's conditions and events are tables from the same writer.
    let described = stdout(ctl(&["describe", "deployment", "orders"]));
    let header = described
        .lines()
        .find(|l| l.trim_start().starts_with("TYPE"))
        .unwrap_or_else(|| panic!("{described}"));
    let titles: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        titles,
        ["TYPE", "STATUS", "REASON", "MESSAGE"],
        "{described}"
    );
    let status = stdout(ctl(&["rollout", "status", "orders", "-o", "yaml"]));
    assert!(status.contains("name: orders"), "{status}");

    let error = json_failure(ctl(&["describe", "deployment", "ghost", "-o", "json"]));
    assert!(
        error["error"]["code"]
            .as_str()
            .is_some_and(|c| !c.is_empty() && c != "cli_error"),
        "{error}"
    );

    let deleted: serde_json::Value = serde_json::from_str(&stdout(ctl(&[
        "delete",
        "deployment",
        "orders",
        "-o",
        "json",
    ])))
    .unwrap();
    assert_eq!(deleted["result"], "deleted");
    let _ = controller.kill();
    let _ = controller.wait();
}

#[test]
fn log_flags_live_on_the_commands_that_log() {
    let err = failure(berth(&["new", "x", "--log-format", "json"]));
    assert!(err.contains("unexpected argument '--log-format'"), "{err}");
    let err = failure(berth(&["build", "--log-format", "json"]));
    assert!(err.contains("unexpected argument '--log-format'"), "{err}");

    // JSON logs: no human banner on stdout; the banner is a JSON log line,
    // and every line on stderr is JSON.
    let data = tempfile::tempdir().unwrap();
    let (banner, stdout_text) = json_banner(
        &["base", "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0"],
        data.path(),
        "berth base serving",
    );
    assert!(
        banner["fields"]["ops"]
            .as_str()
            .is_some_and(|o| o.starts_with("http://127.0.0.1:")),
        "{banner}"
    );
    assert!(!stdout_text.contains("berth base serving"), "{stdout_text}");
    // The controller too.
    let work = work_dir();
    let (banner, stdout_text) = json_banner(
        &["controller", "--listen", "127.0.0.1:0", "--no-code"],
        &work.path().join("controller"),
        "berth controller serving",
    );
    assert!(
        banner["fields"]["api"]
            .as_str()
            .is_some_and(|a| a.starts_with("http://127.0.0.1:")),
        "{banner}"
    );
    assert!(stdout_text.is_empty(), "{stdout_text}");
}

/// Runs `berth ARGS --log-format json --data-dir DATA` until a stderr line
/// contains `marker`, then stops it. Returns that line parsed as JSON and
/// what it printed on stdout; asserts every stderr line is JSON.
fn json_banner(args: &[&str], data: &std::path::Path, marker: &str) -> (serde_json::Value, String) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = insecure_unless_set(&mut Command::new(BERTH))
        .args(args)
        .args(["--log-format", "json"])
        .arg("--data-dir")
        .arg(data)
        .stdout(out.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let banner = loop {
        let text = std::fs::read_to_string(log.path()).unwrap();
        if let Some(line) = text.lines().find(|l| l.contains(marker)) {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "no banner in\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let log_text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        log_text
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "{log_text}"
    );
    (
        serde_json::from_str(&banner).unwrap(),
        std::fs::read_to_string(out.path()).unwrap(),
    )
}

/// Runs `berth COMMAND` on `data` until its banner lists a module; returns
/// the banner's module lines.
fn banner_modules(command: &str, data: &std::path::Path) -> Vec<String> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = insecure_unless_set(&mut Command::new(BERTH))
        .args([command, "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data)
        .stdout(out.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let modules = loop {
        let text = std::fs::read_to_string(out.path()).unwrap();
        // The module lines are written together, before `try:` (up) or at once (base).
        let modules: Vec<String> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("module "))
            .map(str::to_string)
            .collect();
        if modules.len() >= 2 {
            break modules;
        }
        assert!(Instant::now() < deadline, "no module lines in\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    modules
}

#[test]
fn a_restarted_base_does_not_repeat_an_old_install_time() {
    let data = tempfile::tempdir().unwrap();
    // `berth up` installs hello and echo now: their install time is news.
    let first = banner_modules("up", data.path());
    assert!(
        first
            .iter()
            .all(|l| l.contains(" ms install)") && l.contains(" active ")),
        "{first:?}"
    );
    // Restarted, they are reloaded: no stale install time.
    let again = banner_modules("base", data.path());
    assert!(
        again
            .iter()
            .all(|l| l.contains("(reloaded; installed 20") && !l.contains("ms install")),
        "{again:?}"
    );
}

/// Runs `cmd` (an `-o json` call that must fail): exit status non-zero,
/// nothing on stderr, and the error as one JSON document on stdout.
fn json_failure(mut cmd: assert_cmd::Command) -> serde_json::Value {
    let output = cmd.output().unwrap();
    assert!(!output.status.success());
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
