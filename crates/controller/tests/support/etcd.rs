//! A real etcd for tests: the Debian `etcd` binary on free loopback ports
//! (never 2379, where a system etcd may listen), its data in a temp dir;
//! killed when dropped. [`EtcdServer`] is one member, [`EtcdCluster`] three
//! (or any number) that elect a raft leader among themselves, for the
//! high-availability tests. A machine without etcd gets Debian's
//! `etcd-server` installed on first use, so `cargo test` needs no setup.

#![allow(dead_code)] // each test binary uses a part

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

/// One member of an [`EtcdCluster`].
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A running etcd cluster on loopback, killed when dropped.
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster answers.
    pub fn start(n: usize) -> Self {
        ensure_installed();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let members = (0..n)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client: free_port(),
                    peer: free_port(),
                    child: None,
                })
                .collect();
            let mut cluster = Self { members, dir };
            if cluster.launch_all() {
                return cluster;
            }
        }
        panic!("an etcd cluster did not start (is `etcd` installed? apt-get install etcd-server)");
    }

    /// Every member's client endpoint, `127.0.0.1:PORT`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect()
    }

    /// Member `i`'s client endpoint.
    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client)
    }

    /// `etcd://` and every endpoint, as `--store` takes it.
    pub fn store(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills every member, then starts them all again on their ports and
    /// data, and waits until the cluster answers.
    pub fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        assert!(self.launch_all(), "the etcd cluster did not come back");
    }

    fn launch_all(&mut self) -> bool {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let initial = initial.join(",");
        for m in &mut self.members {
            let client_url = format!("http://127.0.0.1:{}", m.client);
            let peer_url = format!("http://127.0.0.1:{}", m.peer);
            let child = Command::new("etcd")
                .args(["--name", &m.name, "--data-dir"])
                .arg(self.dir.path().join(&m.name))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-token", "berth-test"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot run `etcd`; install it with apt-get install etcd-server");
            m.child = Some(child);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0..self.members.len() {
            loop {
                let m = &mut self.members[i];
                let exited = m
                    .child
                    .as_mut()
                    .is_none_or(|c| c.try_wait().unwrap().is_some());
                if exited || Instant::now() > deadline {
                    for j in 0..self.members.len() {
                        self.kill(j);
                    }
                    return false;
                }
                if healthy(m.client) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        true
    }
}

/// Whether the member with client port `client` says it is healthy.
fn healthy(client: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", client)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(b"GET /health HTTP/1.0\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
