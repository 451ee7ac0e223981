//! Exhaustion: connection floods, slowloris headers and a huge upload are
//! refused with clear answers while the base keeps serving.

use std::time::{Duration, Instant};

use berth_example_modules::HELLO;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::TestBase;

/// Reads what the server sends until it closes (or `within` passes).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut got)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&got).into_owned())
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_at_the_header_read_timeout() {
    let base = TestBase::start_with(|c| c.header_read_timeout = Duration::from_millis(500)).await;
    base.install_path("hello", "1.0.0", HELLO).await;
    for listener in [base.url("/"), base.ops("/")] {
        let mut slow = TcpStream::connect(addr(&listener)).await.unwrap();
        let started = Instant::now();
        slow.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // One header byte every 100 ms: never done.
        let trickle = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if slow.write_all(b"x").await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), trickle).await;
        let cut = started.elapsed();
        assert!(
            cut < Duration::from_secs(3),
            "{listener}: a trickling client was kept {cut:?}"
        );
        // Meanwhile and after, the base serves.
        let (status, _, _) = base.get("/hello").await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn connections_over_the_cap_get_a_503_and_the_base_serves_on() {
    let base = TestBase::start_with(|c| c.max_connections = 4).await;
    base.install_path("hello", "1.0.0", HELLO).await;
    let ingress = addr(&base.url("/"));
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(&ingress).await.unwrap());
    }
    // Accepted in order: wait until the four hold the permits.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        let mut extra = TcpStream::connect(&ingress).await.unwrap();
        let answer = read_until_closed(&mut extra, Duration::from_secs(2))
            .await
            .unwrap_or_default();
        if answer.starts_with("HTTP/1.1 503") {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "no refusal over the cap: {answer}"
        );
    };
    assert!(
        refusal.contains("4 connections open") && refusal.contains("--max-connections"),
        "{refusal}"
    );
    drop(idle);
    // Once the idle ones are gone, requests are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = reqwest::get(base.url("/hello"))
            .await
            .map(|r| r.status().as_u16());
        if served.as_ref().is_ok_and(|s| *s == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not served after the flood: {served:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_1gb_upload_is_refused_before_its_body_is_read() {
    let base = TestBase::start().await;
    let mut stream = TcpStream::connect(addr(&base.ops("/"))).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(
            b"POST /v1/modules?name=big&version=1.0.0 HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/wasm\r\nContent-Length: 1073741824\r\n\r\n",
        )
        .await
        .unwrap();
    // Not a byte of the body is sent: the answer must not wait for it.
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head))
        .await
        .expect("the base waited for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&head[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("payload_too_large") && answer.contains("--max-artifact-bytes"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(base.list().await.modules.is_empty());
}
