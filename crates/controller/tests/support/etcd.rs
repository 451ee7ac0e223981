//! A real single-member etcd for tests: the Debian `etcd` binary on free
//! loopback ports (never 2379, where a system etcd may listen), its data in
//! a temp dir; killed when dropped. A machine without etcd gets Debian's
//! `etcd-server` installed on first use, so `cargo test` needs no setup.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd member.
pub struct EtcdServer {
    child: Child,
    _dir: tempfile::TempDir,
    /// Its client endpoint, `127.0.0.1:PORT`.
    pub endpoint: String,
    peer: u16,
}

/// A port free right now on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl EtcdServer {
    /// Starts a member and waits until it answers.
    pub fn start() -> Self {
        ensure_installed();
        // A port taken between the probe and etcd's bind: try again.
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let (client, peer) = (free_port(), free_port());
            if let Some(child) = launch(dir.path(), client, peer) {
                return Self {
                    child,
                    _dir: dir,
                    endpoint: format!("127.0.0.1:{client}"),
                    peer,
                };
            }
        }
        panic!("etcd did not start (is the `etcd` binary installed? apt-get install etcd-server)");
    }

    /// Kills the member, then starts it again on the same ports and data
    /// after `down`: every client connection drops meanwhile.
    pub fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        let client = self.endpoint.rsplit_once(':').unwrap().1.parse().unwrap();
        self.child = launch(self._dir.path(), client, self.peer).expect("etcd restarts");
    }
}

/// Installs Debian's `etcd-server` (once per test process) when no `etcd`
/// runs here, saying so; a failed install names the command to run.
fn ensure_installed() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let present = Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if present {
            return;
        }
        eprintln!("etcd is missing: installing Debian's etcd-server (apt-get, once)");
        let installed = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server",
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed,
            "cannot install etcd; run `apt-get update && apt-get install -y etcd-server` as root"
        );
    });
}

/// Runs etcd with its data in `dir`; `None` if it does not answer.
fn launch(dir: &std::path::Path, client: u16, peer: u16) -> Option<Child> {
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut child = Command::new("etcd")
        .args(["--name", "test", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("test={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run `etcd`; install it with apt-get install etcd-server");
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", client)) {
            use std::io::{Read, Write};
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = stream.write_all(b"GET /health HTTP/1.0\r\n\r\n");
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            if answer.contains("\"health\":\"true\"") {
                return Some(child);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
