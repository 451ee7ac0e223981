//! Scaffolding shared by the CLI tests: a real `berth base` process, the
//! `berth` binary with module builds sharing one target dir, and helpers to
//! read its output. Every test starts its bases, controllers and gateways
//! through one function each ([`BaseProcess::start_at_with_env`],
//! [`spawn_controller`], [`spawn_gateway`]), and writes deployments with
//! [`write_deployment`], so a change to how they start reaches every test.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use assert_cmd::Command as Cmd;

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A `berth base` process on free ports with its own data dir, killed on drop.
pub struct BaseProcess {
    pub child: Child,
    pub ops: String,
    pub ingress: String,
    _data: Option<tempfile::TempDir>,
}

impl BaseProcess {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A base with extra `berth base` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut base = Self::start_at(data.path(), extra);
        base._data = Some(data);
        base
    }

    /// A base on the data directory `dir` (which outlives it), on ports
    /// the system picks (see [`spawn_announced`]), reading artifact files
    /// from [`test_artifact_dirs`].
    pub fn start_at(dir: &Path, extra: &[&str]) -> Self {
        Self::start_at_with_env(dir, extra, &[])
    }

    /// The same with environment variables `env` (e.g. a test failpoint).
    pub fn start_at_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        Self::start_logged(dir, extra, env, log.path())
    }

    /// The same, with the base's log (stderr) written to `log`: the one
    /// place the tests start `berth base`.
    pub fn start_logged(dir: &Path, extra: &[&str], env: &[(&str, &str)], log: &Path) -> Self {
        let mut cmd = Command::new(BERTH);
        cmd.args(["base", "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir);
        for allowed in test_artifact_dirs() {
            cmd.arg("--artifact-dir").arg(allowed);
        }
        cmd.args(extra).envs(env.iter().copied());
        let (child, urls) = spawn_announced_logging_to(&mut cmd, &["ingress", "ops API"], log)
            .unwrap_or_else(|stderr| panic!("berth base did not start; stderr:\n{stderr}"));
        let [ingress, ops] = <[String; 2]>::try_from(urls).expect("two addresses");
        Self {
            child,
            ops,
            ingress,
            _data: None,
        }
    }

    /// A base joining the controller(s) at `controller` (`http://…`, or a
    /// comma-separated list) as `name` with `labels` (`k=v,…`),
    /// heartbeating every `interval`, with `extra` flags.
    pub fn joining(
        controller: &str,
        name: &str,
        labels: &str,
        interval: &str,
        extra: &[&str],
    ) -> Self {
        let mut args = vec![
            "--controller",
            controller,
            "--name",
            name,
            "--labels",
            labels,
            "--heartbeat-interval",
            interval,
        ];
        args.extend_from_slice(extra);
        Self::start_with(&args)
    }

    /// `berth ARGS --base <this base>`, with module builds sharing one target dir.
    pub fn berth(&self, args: &[&str]) -> Cmd {
        let mut cmd = berth(args);
        cmd.args(["--base", &self.ops]);
        cmd
    }
}

impl Drop for BaseProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The directories test bases read artifact files from (`--artifact-dir`):
/// the example modules' build output, the tests' work root and the system
/// temp dir. URLs: public hosts only; a test fetching from a local server
/// passes `--artifact-host 127.0.0.1` itself.
pub fn test_artifact_dirs() -> Vec<PathBuf> {
    vec![
        Path::new(berth_example_modules::HELLO)
            .ancestors()
            .nth(3)
            .expect("modules dir")
            .to_path_buf(),
        work_root(),
        std::env::temp_dir(),
    ]
}

/// `berth ARGS` with module builds sharing one target dir (so `wasip2`
/// compiles once for all tests).
pub fn berth(args: &[&str]) -> Cmd {
    let mut cmd = Cmd::new(BERTH);
    cmd.args(args)
        .env("CARGO_TARGET_DIR", work_root().join("target"))
        .timeout(Duration::from_secs(300));
    cmd
}

/// The environment that makes `berth base`, `controller` and `gateway`
/// run with `--insecure-no-auth`.
pub const INSECURE: (&str, &str) = ("BERTH_INSECURE_NO_AUTH", "1");

/// The one place the suite decides about authentication: the servers tests
/// start run without it, unless the test set `BERTH_INSECURE_NO_AUTH`
/// itself (the auth tests set it to `0` and pass real tokens).
pub fn insecure_unless_set(cmd: &mut Command) -> &mut Command {
    if !cmd.get_envs().any(|(key, _)| key == INSECURE.0) {
        cmd.env(INSECURE.0, INSECURE.1);
    }
    cmd
}

/// Spawns a server `cmd` (see [`insecure_unless_set`]) and waits (up to 30 s) until its stdout has shown
/// a line starting with each of `labels`; returns the child and what
/// followed each label (the address it listens on). Its stderr if it exits
/// first.
///
/// Servers are started on port 0 and say which port they got, so no test
/// probes a port free and then loses it to another test before binding it.
pub fn spawn_announced(cmd: &mut Command, labels: &[&str]) -> Result<(Child, Vec<String>), String> {
    let log = tempfile::NamedTempFile::new().unwrap();
    spawn_announced_logging_to(cmd, labels, log.path())
}

/// [`spawn_announced`] with the server's stderr (its log) written to `log`,
/// for a test that reads what the server logged.
pub fn spawn_announced_logging_to(
    cmd: &mut Command,
    labels: &[&str],
    log: &Path,
) -> Result<(Child, Vec<String>), String> {
    insecure_unless_set(cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    // Read to the end, so the server never writes into a full pipe.
    forward_lines(child.stdout.take().unwrap(), tx);
    let mut found: Vec<Option<String>> = vec![None; labels.len()];
    let deadline = Instant::now() + Duration::from_secs(30);
    while found.iter().any(Option::is_none) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let line = line.trim_start();
                for (label, slot) in labels.iter().zip(&mut found) {
                    if let Some(rest) = line.strip_prefix(label) {
                        *slot = Some(rest.trim().to_string());
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                return Err(std::fs::read_to_string(log).unwrap_or_default());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let stderr = std::fs::read_to_string(log).unwrap_or_default();
                panic!(
                    "{:?} did not start within 30 s; stderr:\n{stderr}",
                    cmd.get_program()
                );
            }
        }
    }
    Ok((child, found.into_iter().map(Option::unwrap).collect()))
}

/// Module folders live under the workspace's target dir, so the repository's
/// rust-toolchain.toml (with the wasm32-wasip2 target) applies to their builds.
pub fn work_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/cli-tests");
    std::fs::create_dir_all(&root).unwrap();
    root.canonicalize().unwrap()
}

pub fn work_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(work_root()).unwrap()
}

pub fn stdout(mut cmd: Cmd) -> String {
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `cmd`, expecting failure; returns stderr.
pub fn failure(mut cmd: Cmd) -> String {
    let output = cmd.output().unwrap();
    assert!(
        !output.status.success(),
        "expected failure, got: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

/// Lines of a child's stdout and stderr, as they come.
pub fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    forward_lines(child.stdout.take().unwrap(), tx.clone());
    forward_lines(child.stderr.take().unwrap(), tx);
    rx
}

/// Sends each line of `from` to `to` from a thread, until `from` ends.
fn forward_lines(from: impl std::io::Read + Send + 'static, to: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        BufReader::new(from)
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(to.send(l)))
    });
}

/// Waits for a line containing `needle`; returns it.
pub fn wait_for(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no line containing `{needle}` within 180 s"),
        }
    }
}

pub fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{from} not in {}", file.display());
    std::fs::write(file, text.replace(from, to)).unwrap();
}

/// `sha256:…` of the file at `path`.
pub fn file_digest(path: &str) -> String {
    berth_runtime::Digest::of(&std::fs::read(path).unwrap()).to_string()
}

/// Starts `berth controller` on 127.0.0.1:`port` (0: one the system picks)
/// with its data in `data_dir`, `extra` flags and environment `env`: the
/// one place the tests start a controller. Returns it and its `HOST:PORT`.
pub fn spawn_controller(
    port: u16,
    data_dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Child, String) {
    let mut cmd = Command::new(BERTH);
    cmd.args(["controller", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .envs(env.iter().copied());
    let (child, urls) = spawn_announced(&mut cmd, &["berth controller serving on"])
        .unwrap_or_else(|stderr| panic!("berth controller did not start:\n{stderr}"));
    let addr = urls[0].trim_start_matches("http://").to_string();
    (child, addr)
}

/// `berth controller --listen 127.0.0.1:0 EXTRA`, not started: for the
/// tests of a controller that refuses to start.
pub fn controller_command(extra: &[&str]) -> Cmd {
    let mut cmd = berth(&["controller", "--listen", "127.0.0.1:0"]);
    cmd.args(extra).env(INSECURE.0, INSECURE.1);
    cmd
}

/// Starts `berth gateway` in front of the controller at `controller`
/// (`HOST:PORT`; `http://` is put before it) with `extra` flags, its stderr going to
/// the returned file: the one place the tests start a gateway. Returns it,
/// its `HOST:PORT` and that file.
pub fn spawn_gateway(controller: &str, extra: &[&str]) -> (Child, String, tempfile::NamedTempFile) {
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let mut child = insecure_unless_set(&mut Command::new(BERTH))
        .args(["gateway", "--listen", "127.0.0.1:0", "--controller"])
        .arg(format!("http://{controller}"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .and_then(Result::ok)
            .expect("berth gateway printed its address");
        let url = line.strip_prefix("berth gateway serving on http://");
        let url = url.or_else(|| line.strip_prefix("berth gateway serving on https://"));
        if let Some(url) = url {
            break url.trim().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr, stderr)
}

/// Writes WORK/NAME.yaml: a ModuleDeployment named after its module `name`,
/// `version` from the file `artifact` pinned to `digest` (default: the
/// file's own), with `spec` as further lines under `spec:` (indent the
/// lines after the first by two spaces). Returns its path.
pub fn write_deployment(
    work: &Path,
    name: &str,
    version: &str,
    artifact: &str,
    digest: Option<&str>,
    spec: &str,
) -> PathBuf {
    let digest = digest.map_or_else(|| file_digest(artifact), str::to_string);
    let file = work.join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: {name} }}\nspec:\n  module: {{ name: {name}, version: \"{version}\", artifact: \"file:{artifact}\", digest: \"{digest}\" }}\n  {spec}\n"
        ),
    )
    .unwrap();
    file
}

/// `berth apply -f FILE --controller CONTROLLER`, not run yet.
pub fn apply_command(file: &Path, controller: &str) -> Cmd {
    berth(&[
        "apply",
        "-f",
        file.to_str().unwrap(),
        "--controller",
        controller,
    ])
}

/// The whole answer (status line, headers, body) to `GET path` at `addr`
/// (`HOST:PORT`, `http://` allowed) on a connection of its own, if any.
pub fn raw_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let addr = addr.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    Some(response)
}
