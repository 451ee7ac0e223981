//! Memory comes back: a real `berth base` process installs, serves and
//! uninstalls 500 modules with distinct digests, and its resident memory
//! ends where it started (within 10% or 20 MB).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Resident set size of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// `wasm` plus a custom section: the same module, another digest.
fn variant(wasm: &[u8], tag: usize) -> Vec<u8> {
    let name = b"berth-test";
    let payload = tag.to_le_bytes();
    let content_len = 1 + name.len() + payload.len();
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.push(content_len as u8); // < 128: one LEB byte
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_gives_the_memory_back() {
    let data = tempfile::tempdir().unwrap();
    let (ingress, ops) = (free_port(), free_port());
    let mut child = Command::new(BERTH)
        .args([
            "base",
            "--listen",
            &format!("127.0.0.1:{ingress}"),
            "--ops",
            &format!("127.0.0.1:{ops}"),
        ])
        .arg("--data-dir")
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("http://127.0.0.1:{ops}/v1/health"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "base did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hello = std::fs::read(berth_example_modules::HELLO).unwrap();
    let cycle = |i: usize| {
        let (client, bytes) = (client.clone(), variant(&hello, i));
        async move {
            let name = format!("m{i}");
            let response = client
                .post(format!(
                    "http://127.0.0.1:{ops}/v1/modules?name={name}&version=1"
                ))
                .header("content-type", "application/wasm")
                .body(bytes)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
            let response = client
                .get(format!("http://127.0.0.1:{ingress}/{name}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.text().await.unwrap(), "Hello from berth!\n");
            let response = client
                .delete(format!("http://127.0.0.1:{ops}/v1/modules/{name}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    };
    // Warm up allocators and caches, then take the baseline.
    for i in 0..30 {
        cycle(i).await;
    }
    let before = rss(pid);
    for i in 1000..1500 {
        cycle(i).await;
    }
    let after = rss(pid);
    let _ = child.kill();
    let _ = child.wait();
    let allowed = (before + before / 10).max(before + (20 << 20));
    assert!(
        after <= allowed,
        "RSS grew from {} MB to {} MB over 500 install/uninstall cycles",
        before >> 20,
        after >> 20
    );
    eprintln!(
        "base RSS: {} MB before, {} MB after 500 cycles",
        before >> 20,
        after >> 20
    );
}
