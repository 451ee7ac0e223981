//! `berth controller`, `apply`, `get`, `describe`, `delete` against a real
//! controller process.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    BERTH, BaseProcess, berth, failure, free_port, stdout, wait_for_port, work_dir,
};

fn manifest(replicas: &str, version: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: orders }}\nspec:\n  module: {{ name: orders, version: {version}, artifact: \"https://example.invalid/orders.wasm\", digest: \"sha256:{}\" }}\n  replicas: {replicas}\n  baseSelector: {{ group: online }}\n",
        "ab".repeat(32)
    )
}

#[test]
fn apply_get_describe_delete_through_a_controller_process() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &[]);
    let file = work.path().join("orders.yaml");
    let file_s = file.to_str().unwrap();

    std::fs::write(&file, manifest("3", "1.0.0")).unwrap();
    assert_eq!(
        stdout(ctl.berth(&["apply", "-f", file_s])).trim(),
        "ModuleDeployment/orders created (generation 1)"
    );
    std::fs::write(&file, manifest("three", "1.0.0")).unwrap();
    let err = failure(ctl.berth(&["apply", "-f", file_s]));
    assert!(
        err.contains("spec.replicas: invalid type: string \"three\", expected u32"),
        "{err}"
    );
    std::fs::write(&file, manifest("3", "2.0.0")).unwrap();
    assert_eq!(
        stdout(ctl.berth(&["apply", "-f", file_s])).trim(),
        "ModuleDeployment/orders updated (generation 2)"
    );

    let table = stdout(ctl.berth(&["get", "deployments", "-o", "wide"]));
    assert!(
        table.contains("orders") && table.contains("2.0.0") && table.contains("group=online"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(ctl.berth(&["get", "deployments", "-o", "json"]))).unwrap();
    assert_eq!(json[0]["generation"], 2);
    let described = stdout(ctl.berth(&["describe", "deployment", "orders"]));
    assert!(described.contains("History:     1.0.0"), "{described}");
    assert!(stdout(ctl.berth(&["delete", "deployment", "orders"])).contains("deleted"));
    assert_eq!(
        stdout(ctl.berth(&["get", "deployments"])).trim(),
        "no deployments"
    );
    let err = failure(ctl.berth(&["describe", "deployment", "orders"]));
    assert!(err.contains("no ModuleDeployment named `orders`"), "{err}");
    // With the controller gone: one clear line.
    let after = ctl.berth(&["get", "deployments"]);
    drop(ctl);
    let err = failure(after);
    assert!(
        err.contains("no controller answers") && err.contains("berth controller"),
        "{err}"
    );
}

#[test]
fn bases_register_heartbeat_and_go_not_ready_when_they_stop() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &["--heartbeat-timeout", "1s"]);
    let controller = ctl.addr.clone();
    let url = format!("http://{controller}");
    let base = BaseProcess::start_with(&[
        "--controller",
        &url,
        "--name",
        "base-a",
        "--labels",
        "group=online,zone=a",
        "--heartbeat-interval",
        "200ms",
    ]);
    stdout(base.berth(&[
        "deploy",
        berth_example_modules::HELLO,
        "--name",
        "hello",
        "--version",
        "1",
    ]));

    let bases = || -> serde_json::Value {
        let cmd = ctl.berth(&["get", "bases", "-o", "json"]);
        serde_json::from_str(&stdout(cmd)).unwrap()
    };
    // Registered, Ready, labelled, and reporting what it runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b = bases();
        if b[0]["heartbeat"]["modules"] == serde_json::json!(["hello@1"]) {
            assert_eq!(b[0]["state"], "Ready");
            assert_eq!(b[0]["heartbeat"]["name"], "base-a");
            assert_eq!(b[0]["heartbeat"]["labels"]["zone"], "a");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the base never reported hello@1: {b}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cmd = ctl.berth(&["get", "bases"]);
    let table = stdout(cmd);
    assert!(
        table.contains("base-a") && table.contains("Ready") && table.contains("group=online"),
        "{table}"
    );

    // The base stops; within the timeout (+ margin) it is NotReady.
    drop(base);
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(bases()[0]["state"], "NotReady");
    drop(ctl);
}

/// A `berth controller` process on a free port with its own store, killed on drop.
struct ControllerProcess {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    addr: String,
}

impl ControllerProcess {
    fn start(work: &std::path::Path, extra: &[&str]) -> Self {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(BERTH)
            .args(["controller", "--listen", &addr])
            .args(extra)
            .arg("--data-dir")
            .arg(work.join("controller"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, "berth controller");
        Self { child, addr }
    }
}

impl ControllerProcess {
    /// `berth ARGS --controller <this controller>`.
    fn berth(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = berth(args);
        cmd.args(["--controller", &self.addr]);
        cmd
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the base at `ingress` (`http://host:port`) answers 200 at `path`.
fn serves(ingress: &str, path: &str) -> bool {
    body(ingress, path).is_some()
}

/// The body of a 200 answer at `path`, if any.
fn body(ingress: &str, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let addr = ingress.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200").then_some(response)
}

/// Waits until `count(&bases)` equals `want`.
fn eventually(what: &str, want: usize, count: impl Fn() -> usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = count();
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {got}, expected {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn deployments_are_placed_scaled_and_rescheduled_onto_bases() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &["--heartbeat-timeout", "1s"]);
    let controller = ctl.addr.clone();
    let url = format!("http://{controller}");
    let base = |name: &str, group: &str| {
        let labels = format!("group={group}");
        BaseProcess::start_with(&[
            "--controller",
            &url,
            "--name",
            name,
            "--labels",
            &labels,
            "--heartbeat-interval",
            "200ms",
        ])
    };
    let mut online: Vec<Option<BaseProcess>> = ["a", "b", "c"]
        .iter()
        .map(|n| Some(base(n, "online")))
        .collect();
    let batch = base("d", "batch");
    let serving = |bases: &[Option<BaseProcess>]| {
        bases
            .iter()
            .flatten()
            .filter(|b| serves(&b.ingress, "/hello"))
            .count()
    };

    let digest = berth_runtime::Digest::of(&std::fs::read(berth_example_modules::HELLO).unwrap())
        .to_string();
    let file = work.path().join("hello.yaml");
    let apply = |replicas: u32| {
        std::fs::write(
            &file,
            format!(
                "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: hello }}\nspec:\n  module: {{ name: hello, version: 1.0.0, artifact: \"file:{}\", digest: \"{digest}\" }}\n  replicas: {replicas}\n  baseSelector: {{ group: online }}\n",
                berth_example_modules::HELLO
            ),
        )
        .unwrap();
        let cmd = ctl.berth(&["apply", "-f", file.to_str().unwrap()]);
        stdout(cmd);
    };

    apply(2);
    eventually("online bases serving hello", 2, || serving(&online));
    assert!(
        !serves(&batch.ingress, "/hello"),
        "a base outside the selector got a replica"
    );
    apply(3);
    eventually("online bases serving hello", 3, || serving(&online));
    let describe = || {
        let cmd = ctl.berth(&["describe", "deployment", "hello"]);
        stdout(cmd)
    };
    eventually("status of 3 replicas", 1, || {
        usize::from(describe().contains("3 desired, 3 ready, 3 updated, 0 unschedulable"))
    });
    // More replicas than matching bases: the rest is unschedulable, and said so.
    apply(4);
    eventually("status with one unschedulable replica", 1, || {
        usize::from(describe().contains("4 desired, 3 ready, 3 updated, 1 unschedulable"))
    });
    assert_eq!(serving(&online), 3);
    apply(1);
    eventually("online bases serving hello", 1, || serving(&online));

    // The base running the replica dies: another takes it over.
    let running = online
        .iter()
        .position(|b| b.as_ref().is_some_and(|b| serves(&b.ingress, "/hello")))
        .unwrap();
    online[running] = None;
    eventually("online bases serving hello after a base died", 1, || {
        serving(&online)
    });
    assert!(!serves(&batch.ingress, "/hello"));
    drop(ctl);
}

#[test]
fn a_version_change_rolls_out_in_batches_waiting_for_confirmation() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &["--heartbeat-timeout", "2s"]);
    let controller = ctl.addr.clone();
    let url = format!("http://{controller}");
    let bases: Vec<BaseProcess> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| {
            BaseProcess::start_with(&[
                "--controller",
                &url,
                "--name",
                n,
                "--labels",
                "group=online",
                "--heartbeat-interval",
                "150ms",
            ])
        })
        .collect();
    let on_v2 = || {
        bases
            .iter()
            .filter(|b| body(&b.ingress, "/hello").is_some_and(|t| t.contains("version 2")))
            .count()
    };
    let on_v1 = || {
        bases
            .iter()
            .filter(|b| body(&b.ingress, "/hello").is_some_and(|t| t.contains("Hello from berth!")))
            .count()
    };
    let file = work.path().join("hello.yaml");
    let apply = |artifact: &str, version: &str| {
        let digest = berth_runtime::Digest::of(&std::fs::read(artifact).unwrap()).to_string();
        std::fs::write(
            &file,
            format!(
                "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: hello }}\nspec:\n  module: {{ name: hello, version: {version}, artifact: \"file:{artifact}\", digest: \"{digest}\" }}\n  replicas: 4\n  baseSelector: {{ group: online }}\n  strategy: {{ batches: 2, needConfirm: true }}\n"
            ),
        )
        .unwrap();
        let cmd = ctl.berth(&["apply", "-f", file.to_str().unwrap()]);
        stdout(cmd);
    };
    let rollout = |action: &str| {
        let cmd = ctl.berth(&["rollout", action, "hello"]);
        stdout(cmd)
    };

    apply(berth_example_modules::HELLO, "1.0.0");
    eventually("bases on v1", 4, on_v1);
    apply(berth_example_modules::HELLO_V2, "2.0.0");
    // The first batch (2 of 4) moves, then the rollout waits for confirmation.
    eventually("bases on v2 in batch 1", 2, on_v2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rollout("status").contains("waiting for `berth rollout confirm hello`") {
        assert!(
            Instant::now() < deadline,
            "the rollout never waited for confirmation: {}",
            rollout("status")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        (on_v2(), on_v1()),
        (2, 2),
        "batch 2 started without confirmation"
    );
    rollout("confirm");
    eventually("bases on v2 after confirming", 4, on_v2);
    eventually("rollout finished", 1, || {
        usize::from(rollout("status").contains("no rollout in progress"))
    });

    // Undo goes back to 1.0.0, in batches too.
    rollout("undo");
    eventually("bases back on v1 in batch 1", 2, on_v1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rollout("status").contains("waiting for") {
        assert!(
            Instant::now() < deadline,
            "undo never reached its confirmation"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    rollout("confirm");
    eventually("bases on v1 after undo", 4, on_v1);
    drop(ctl);
}

#[test]
fn a_rollout_whose_artifact_fails_stops_and_the_old_version_keeps_serving() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &[]);
    let controller = ctl.addr.clone();
    let url = format!("http://{controller}");
    let bases: Vec<BaseProcess> = ["a", "b"]
        .iter()
        .map(|n| {
            BaseProcess::start_with(&[
                "--controller",
                &url,
                "--name",
                n,
                "--heartbeat-interval",
                "150ms",
            ])
        })
        .collect();
    let on_v1 = || {
        bases
            .iter()
            .filter(|b| body(&b.ingress, "/hello").is_some_and(|t| t.contains("Hello from berth!")))
            .count()
    };
    let file = work.path().join("hello.yaml");
    let apply = |artifact: &str, version: &str, digest_of: &str| {
        let digest = berth_runtime::Digest::of(&std::fs::read(digest_of).unwrap()).to_string();
        std::fs::write(
            &file,
            format!(
                "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: hello }}\nspec:\n  module: {{ name: hello, version: {version}, artifact: \"file:{artifact}\", digest: \"{digest}\" }}\n  replicas: 2\n  strategy: {{ batches: 2 }}\n"
            ),
        )
        .unwrap();
        let cmd = ctl.berth(&["apply", "-f", file.to_str().unwrap()]);
        stdout(cmd);
    };
    apply(
        berth_example_modules::HELLO,
        "1.0.0",
        berth_example_modules::HELLO,
    );
    eventually("bases on v1", 2, on_v1);
    // v2 whose digest does not match its artifact: every install fails.
    apply(
        berth_example_modules::HELLO_V2,
        "2.0.0",
        berth_example_modules::HELLO,
    );
    let status = || {
        let cmd = ctl.berth(&["rollout", "status", "hello"]);
        stdout(cmd)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !status().contains("FAILED") {
        assert!(
            Instant::now() < deadline,
            "the rollout never failed: {}",
            status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = status();
    assert!(
        line.contains("cannot run hello@2.0.0") && line.contains("digest_mismatch"),
        "{line}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(on_v1(), 2, "the old version stopped serving");
    drop(ctl);
}

#[test]
fn a_base_that_comes_back_drops_what_was_unassigned_while_it_was_down() {
    let work = work_dir();
    let ctl = ControllerProcess::start(work.path(), &[]);
    let controller = ctl.addr.clone();
    let url = format!("http://{controller}");
    let data = work.path().join("base-data");
    let args = [
        "--controller",
        url.as_str(),
        "--name",
        "a",
        "--heartbeat-interval",
        "150ms",
    ];
    let base = BaseProcess::start_at(&data, &args);
    let digest = berth_runtime::Digest::of(&std::fs::read(berth_example_modules::HELLO).unwrap())
        .to_string();
    let file = work.path().join("hello.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: hello }}\nspec:\n  module: {{ name: hello, version: 1.0.0, artifact: \"file:{}\", digest: \"{digest}\" }}\n  replicas: 1\n",
            berth_example_modules::HELLO
        ),
    )
    .unwrap();
    stdout(ctl.berth(&["apply", "-f", file.to_str().unwrap()]));
    eventually("base serving hello", 1, || {
        usize::from(serves(&base.ingress, "/hello"))
    });

    // Down, the deployment goes away; back up (same data dir), hello goes too.
    drop(base);
    stdout(ctl.berth(&["delete", "deployment", "hello"]));
    let base = BaseProcess::start_at(&data, &args);
    eventually("base serving hello after coming back", 0, || {
        usize::from(serves(&base.ingress, "/hello"))
    });
    drop(ctl);
}
