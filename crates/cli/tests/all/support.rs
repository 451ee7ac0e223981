//! Scaffolding shared by the CLI tests: a real `berth base` process, the
//! `berth` binary with module builds sharing one target dir, and helpers to
//! read its output.

use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
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

    /// A base on the data directory `dir` (which outlives it).
    ///
    /// Ports come from [`free_port`], which another test may take between
    /// our probe and the base's bind; a base that exits at start is
    /// therefore retried on fresh ports, and its stderr shown if it keeps
    /// failing.
    pub fn start_at(dir: &Path, extra: &[&str]) -> Self {
        let mut last_error = String::new();
        for _ in 0..3 {
            let (ingress, ops) = (free_port(), free_port());
            let log = tempfile::NamedTempFile::new().unwrap();
            let mut child = Command::new(BERTH)
                .args([
                    "base",
                    "--listen",
                    &format!("127.0.0.1:{ingress}"),
                    "--ops",
                    &format!("127.0.0.1:{ops}"),
                ])
                .arg("--data-dir")
                .arg(dir)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(log.reopen().unwrap())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if TcpStream::connect(("127.0.0.1", ops)).is_ok() {
                    return Self {
                        child,
                        ops: format!("http://127.0.0.1:{ops}"),
                        ingress: format!("http://127.0.0.1:{ingress}"),
                        _data: None,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    last_error = std::fs::read_to_string(log.path()).unwrap_or_default();
                    break;
                }
                assert!(Instant::now() < deadline, "berth base did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("berth base failed to start three times; last stderr:\n{last_error}");
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

/// `berth ARGS` with module builds sharing one target dir (so `wasip2`
/// compiles once for all tests).
pub fn berth(args: &[&str]) -> Cmd {
    let mut cmd = Cmd::new(BERTH);
    cmd.args(args)
        .env("CARGO_TARGET_DIR", work_root().join("target"))
        .timeout(Duration::from_secs(300));
    cmd
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx.send(l)))
    });
    std::thread::spawn(move || {
        BufReader::new(err)
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx2.send(l)))
    });
    rx
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
