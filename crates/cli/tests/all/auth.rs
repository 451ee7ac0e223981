//! Authentication and audit against real `berth base` and `berth
//! controller` processes started without `--insecure-no-auth`: generated
//! tokens (0600, printed once), 401 / 403 that change nothing, scoped
//! tokens minted with `berth token`, the join token of bases, and `berth
//! audit`.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use berth_example_modules::HELLO;

use crate::support::{BERTH, INSECURE, berth, failure, file_digest, stdout, work_dir};

/// A server process with authentication on, its stdout in a file; killed on drop.
struct Secured {
    child: Child,
    out: tempfile::NamedTempFile,
}

impl Drop for Secured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Secured {
    /// `berth ARGS` with auth on (no BERTH_TOKEN), once its stdout has a
    /// line starting with `ready`; returns it and what follows that label.
    fn start(args: &[&str], env: &[(&str, &str)], ready: &str) -> (Self, String) {
        let out = tempfile::NamedTempFile::new().unwrap();
        let err = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(BERTH)
            .args(args)
            .env(INSECURE.0, "0")
            .env_remove("BERTH_TOKEN")
            .env_remove("BERTH_JOIN_TOKEN")
            .envs(env.iter().copied())
            .stdout(out.reopen().unwrap())
            .stderr(err.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut server = Self { child, out };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = server.stdout();
            if let Some(rest) = text
                .lines()
                .find_map(|l| l.trim_start().strip_prefix(ready))
            {
                return (server, rest.trim().to_string());
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "berth {args:?} exited ({status}):\n{text}\n{}",
                    std::fs::read_to_string(err.path()).unwrap()
                );
            }
            assert!(Instant::now() < deadline, "no `{ready}` line in:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.out.path()).unwrap()
    }
}

/// A base on `data` with auth on; returns it and its ops API `http://…`.
fn secured_base(data: &Path, extra: &[&str]) -> (Secured, String) {
    let mut args = vec!["base", "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    args.extend(["--data-dir", data.to_str().unwrap()]);
    Secured::start(&args, &[], "ops API")
}

/// `berth ARGS` sending `token` (none: no token at all, not even the
/// user's config file).
fn as_token(token: Option<&str>, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = berth(args);
    cmd.env_remove("BERTH_TOKEN")
        .env("XDG_CONFIG_HOME", empty_config());
    if let Some(token) = token {
        cmd.env("BERTH_TOKEN", token);
    }
    cmd
}

fn empty_config() -> PathBuf {
    let dir = crate::support::work_root().join("no-config");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One raw HTTP/1.1 request: its status and body.
fn raw(url: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn read_token(path: &Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

#[test]
fn a_base_generates_its_admin_token_once_and_scopes_decide_what_a_token_may_do() {
    let work = work_dir();
    let data = work.path().join("base");
    let (base, ops) = secured_base(&data, &[]);
    // Generated at first start: printed once, kept 0600, stored hashed.
    let admin = read_token(&data.join("admin.token"));
    assert!(admin.starts_with("berth_"), "{admin}");
    let printed = base.stdout();
    assert!(
        printed.contains(&format!("export BERTH_TOKEN={admin}")),
        "{printed}"
    );
    let stored = std::fs::read_to_string(data.join("tokens.json")).unwrap();
    assert!(!stored.contains(&admin), "tokens.json holds hashes only");

    // Liveness is open; the rest needs a token: 401 without or with a wrong one.
    assert_eq!(raw(&ops, "GET", "/v1/health", None, "").0, 200);
    let (status, body) = raw(&ops, "GET", "/v1/modules", None, "");
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("\"unauthorized\"") && body.contains("`read` scope"),
        "{body}"
    );
    assert_eq!(
        raw(&ops, "GET", "/v1/modules", Some("berth_wrong"), "").0,
        401
    );
    // So does the CLI with no token, naming how to get one.
    let err = failure(as_token(None, &["list", "--base", &ops]));
    assert!(err.contains("needs a token with the `read` scope"), "{err}");
    assert!(err.contains("BERTH_TOKEN"), "{err}");

    // The admin mints a read and a deploy token.
    let mint = |scope: &str, name: &str| {
        let out = stdout(as_token(
            Some(&admin),
            &[
                "token", "create", "--scope", scope, "--name", name, "--base", &ops, "-o", "json",
            ],
        ));
        let info: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(info["scope"], scope);
        info["token"].as_str().unwrap().to_string()
    };
    let read = mint("read", "ci");
    let deploy = mint("deploy", "release");
    let err = failure(as_token(
        Some(&read),
        &[
            "token", "create", "--scope", "admin", "--name", "sneaky", "--base", &ops,
        ],
    ));
    assert!(err.contains("needs `admin`"), "{err}");

    // read: lists, but a deploy is refused with 403 and changes nothing.
    assert!(
        stdout(as_token(Some(&read), &["list", "--base", &ops])).contains("no modules")
            || stdout(as_token(
                Some(&read),
                &["list", "--base", &ops, "-o", "json"]
            ))
            .contains("\"modules\": []")
    );
    let err = failure(as_token(
        Some(&read),
        &[
            "deploy",
            HELLO,
            "--name",
            "hello",
            "--version",
            "1.0.0",
            "--base",
            &ops,
        ],
    ));
    assert!(
        err.contains("token `ci` has the `read` scope but this call needs `deploy`"),
        "{err}"
    );
    assert!(err.contains("berth token create --scope deploy"), "{err}");
    let (status, body) = raw(
        &ops,
        "POST",
        "/v1/modules/hello/switch",
        Some(&read),
        r#"{"version":"1.0.0"}"#,
    );
    assert_eq!(status, 403, "{body}");
    let listed = stdout(as_token(
        Some(&read),
        &["list", "--base", &ops, "-o", "json"],
    ));
    assert!(
        !listed.contains("hello"),
        "a refused call changes nothing: {listed}"
    );

    // deploy: installs (the CLI reads BERTH_TOKEN); admin: everything.
    stdout(as_token(
        Some(&deploy),
        &[
            "deploy",
            HELLO,
            "--name",
            "hello",
            "--version",
            "1.0.0",
            "--base",
            &ops,
        ],
    ));
    let err = failure(as_token(Some(&deploy), &["audit", "--base", &ops]));
    assert!(err.contains("needs `admin`"), "{err}");
    let tokens = stdout(as_token(Some(&admin), &["token", "list", "--base", &ops]));
    assert!(
        tokens.contains("ci") && tokens.contains("release") && !tokens.contains(&read),
        "{tokens}"
    );

    // The audit log: who did what, with which result.
    let audit = stdout(as_token(
        Some(&admin),
        &["audit", "--base", &ops, "-o", "json"],
    ));
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |who: &str, action: &str, status: u64| {
        records.iter().any(|r| {
            r["who"] == who
                && r["action"].as_str().unwrap().starts_with(action)
                && r["status"] == status
        })
    };
    assert!(find("ci", "POST /v1/modules", 403), "{audit}");
    assert!(find("release", "POST /v1/modules", 201), "{audit}");
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "POST /v1/modules/hello/switch" && r["target"] == "hello"),
        "the target is what the path names: {audit}"
    );
    assert!(find("admin", "POST /v1/tokens", 201), "{audit}");
    assert!(
        records
            .iter()
            .all(|r| !r["requestId"].as_str().unwrap().is_empty()),
        "{audit}"
    );
    assert!(
        !records
            .iter()
            .any(|r| r["action"].as_str().unwrap().starts_with("GET")),
        "reads are not audited: {audit}"
    );
    let on_disk = std::fs::read_to_string(data.join("audit.log")).unwrap();
    assert_eq!(on_disk.lines().count(), records.len());
    drop(base);

    // A second start prints no token again; the minted ones still work,
    // also from the config file instead of BERTH_TOKEN.
    let (again, ops) = secured_base(&data, &[]);
    let printed = again.stdout();
    assert!(!printed.contains("BERTH_TOKEN"), "{printed}");
    let config = work.path().join("config");
    std::fs::create_dir_all(config.join("berth")).unwrap();
    std::fs::write(config.join("berth/token"), format!("{read}\n")).unwrap();
    let mut cmd = berth(&["list", "--base", &ops]);
    cmd.env_remove("BERTH_TOKEN")
        .env("XDG_CONFIG_HOME", &config);
    assert!(stdout(cmd).contains("hello"));
}

#[test]
fn an_operator_supplied_admin_token_replaces_generation() {
    let work = work_dir();
    let data = work.path().join("base");
    let file = work.path().join("admin.secret");
    std::fs::write(&file, "operator-chosen-token\n").unwrap();
    let (base, ops) = secured_base(&data, &["--token-file", file.to_str().unwrap()]);
    assert!(!base.stdout().contains("BERTH_TOKEN"), "{}", base.stdout());
    assert!(!data.join("admin.token").exists());
    assert_eq!(
        raw(
            &ops,
            "GET",
            "/v1/modules",
            Some("operator-chosen-token"),
            ""
        )
        .0,
        200
    );
    assert_eq!(raw(&ops, "GET", "/v1/modules", None, "").0, 401);
}

#[test]
fn a_controller_takes_only_bases_with_its_join_token() {
    let work = work_dir();
    let data = work.path().join("controller");
    let (controller, url) = Secured::start(
        &[
            "controller",
            "--listen",
            "127.0.0.1:0",
            "--no-code",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
        "berth controller serving on",
    );
    let admin = read_token(&data.join("admin.token"));
    let join = read_token(&data.join("join.token"));
    let printed = controller.stdout();
    assert!(
        printed.contains(&format!("BERTH_TOKEN={admin}"))
            && printed.contains(&format!("BERTH_JOIN_TOKEN={join}")),
        "{printed}"
    );
    let ctl = |token: Option<&str>, args: &[&str]| {
        let mut cmd = as_token(token, args);
        cmd.args(["--controller", &url]);
        cmd
    };

    // A heartbeat without the join token (or with a read token) is refused
    // and registers nothing.
    let beat =
        r#"{"name":"intruder","capacityModules":1,"ingress":"127.0.0.1:1","ops":"127.0.0.1:2"}"#;
    let (status, body) = raw(&url, "PUT", "/v1/bases/intruder", None, beat);
    assert_eq!(status, 401, "{body}");
    let read = {
        let out = stdout(ctl(
            Some(&admin),
            &[
                "token", "create", "--scope", "read", "--name", "viewer", "-o", "json",
            ],
        ));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (status, body) = raw(&url, "PUT", "/v1/bases/intruder", Some(&read), beat);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("needs `fleet`"), "{body}");
    let bases = stdout(ctl(Some(&read), &["get", "bases", "-o", "json"]));
    assert!(!bases.contains("intruder"), "{bases}");

    // `berth base --controller` without a join token does not start.
    let err = Command::new(BERTH)
        .args(["base", "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0"])
        .args(["--controller", &url, "--data-dir"])
        .arg(work.path().join("no-join"))
        .env(INSECURE.0, "0")
        .env_remove("BERTH_JOIN_TOKEN")
        .output()
        .unwrap();
    assert!(!err.status.success());
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(stderr.contains("--join-token"), "{stderr}");

    // With it, a base joins and runs what is applied with a deploy token.
    let base_data = work.path().join("member");
    let (_base, _ops) = secured_base(
        &base_data,
        &[
            "--controller",
            &url,
            "--join-token",
            &join,
            "--name",
            "member",
            "--labels",
            "group=online",
            "--heartbeat-interval",
            "100ms",
        ],
    );
    let manifest = work.path().join("hello.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: hello }}\nspec:\n  module: {{ name: hello, version: 1.0.0, artifact: \"file:{HELLO}\", digest: \"{}\" }}\n  replicas: 1\n  baseSelector: {{ group: online }}\n  route: {{ pathPrefix: /hello }}\n",
            file_digest(HELLO)
        ),
    )
    .unwrap();
    let manifest = manifest.to_str().unwrap();
    let err = failure(ctl(Some(&read), &["apply", "-f", manifest]));
    assert!(err.contains("needs `deploy`"), "{err}");
    assert!(
        stdout(ctl(Some(&read), &["get", "deployments", "-o", "json"])).trim() == "[]",
        "a refused apply changes nothing"
    );
    stdout(ctl(Some(&admin), &["apply", "-f", manifest]));
    // Ready means the base also fetched the artifact from the controller
    // with its join token.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = stdout(ctl(Some(&read), &["describe", "deployment", "hello"]));
        if shown.contains("1 desired, 1 ready") {
            break;
        }
        assert!(Instant::now() < deadline, "never ready:\n{shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let bases = stdout(ctl(Some(&read), &["get", "bases"]));
    assert!(bases.contains("member"), "{bases}");

    // A gateway needs the join token too; with it, it reads the endpoint
    // table and serves the module (the data plane needs no token).
    let refused = Command::new(BERTH)
        .args(["gateway", "--listen", "127.0.0.1:0", "--controller", &url])
        .env(INSECURE.0, "0")
        .env_remove("BERTH_JOIN_TOKEN")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--join-token"), "{stderr}");
    let (_gateway, front) = Secured::start(
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--controller",
            &url,
            "--join-token",
            &join,
        ],
        &[],
        "berth gateway serving on",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = raw(&front, "GET", "/hello", None, "");
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never served /hello: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The controller's audit log has both applies.
    let audit = stdout(ctl(Some(&admin), &["audit", "--since", "10m"]));
    assert!(
        audit.contains("viewer") && audit.contains("POST /v1/apply") && audit.contains("403"),
        "{audit}"
    );
    assert!(
        audit
            .lines()
            .any(|l| l.contains("admin") && l.contains("POST /v1/apply") && l.contains("201")),
        "{audit}"
    );
}

#[test]
fn berth_up_runs_open_on_loopback_and_says_so() {
    let work = work_dir();
    let data = work.path().join("up");
    let (up, ops) = Secured::start(
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--ops",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
        "ops API",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !up.stdout().contains("auth     none") {
        assert!(Instant::now() < deadline, "{}", up.stdout());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!data.join("admin.token").exists());
    assert!(stdout(as_token(None, &["list", "--base", &ops])).contains("hello"));
    let err = failure(as_token(
        None,
        &[
            "up",
            "--ops",
            "0.0.0.0:0",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            work.path().join("wide").to_str().unwrap(),
        ],
    ));
    assert!(err.contains("loopback only"), "{err}");
}
