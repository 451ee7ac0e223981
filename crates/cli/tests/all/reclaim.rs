//! Memory comes back: a real `berth base` process installs, serves and
//! uninstalls 500 modules with distinct digests, and its resident memory
//! ends where it started (within 10% or 20 MB).

use crate::support::BaseProcess;

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
    let base = BaseProcess::start();
    let pid = base.child.id();
    let client = reqwest::Client::new();
    let (ops, ingress) = (base.ops.clone(), base.ingress.clone());
    let hello = std::fs::read(berth_example_modules::HELLO).unwrap();
    let cycle = |i: usize| {
        let (client, bytes) = (client.clone(), variant(&hello, i));
        let (ops, ingress) = (ops.clone(), ingress.clone());
        async move {
            let name = format!("m{i}");
            let response = client
                .post(format!("{ops}/v1/modules?name={name}&version=1"))
                .header("content-type", "application/wasm")
                .body(bytes)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
            let response = client
                .get(format!("{ingress}/{name}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.text().await.unwrap(), "Hello from berth!\n");
            let response = client
                .delete(format!("{ops}/v1/modules/{name}"))
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
    drop(base);
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
