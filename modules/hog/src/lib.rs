//! `hog`: a module that misbehaves on purpose, with memory.
//!
//! - `GET /hog` allocates 1 MiB after 1 MiB without end: the base's memory
//!   limit stops it (the allocation fails and the guest aborts);
//! - `GET /hog/bytes?n=N` answers a body of N bytes (for response caps);
//! - `GET /hog/chunks?n=N` answers N bytes written 1 KiB at a time, so the
//!   head and the first writes leave before a response cap cuts the body;
//! - `GET /hog/touch?mib=N` writes every page of N MiB, then answers (for
//!   memory reclaim: the pages are really resident while it runs);
//! - `GET /hog/scatter?pages=N` writes one byte in every other page of 2N
//!   pages fresh from `memory.grow`, N runs of written memory with a clean
//!   page between each, and says how many of those bytes were not zero
//!   before it wrote them (memory left over from an earlier instance);
//! - anything else answers a short text, so tests can see it still serves.
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hog);

struct Hog;

impl wasip2::exports::http::incoming_handler::Guest for Hog {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if let Some(n) = path.split_once("/bytes?n=").and_then(|(_, n)| n.parse::<usize>().ok()) {
            return berth_guest::http::respond(out, 200, "application/octet-stream", &vec![b'x'; n]);
        }
        if let Some(n) = path.split_once("/chunks?n=").and_then(|(_, n)| n.parse::<usize>().ok()) {
            return respond_in_chunks(out, n);
        }
        if let Some(mib) = path.split_once("/touch?mib=").and_then(|(_, n)| n.parse::<usize>().ok()) {
            let block = std::hint::black_box(vec![1u8; mib << 20]);
            let body = format!("touched {mib} MiB ({} bytes)\n", block.iter().map(|&b| b as usize).sum::<usize>());
            return berth_guest::http::respond(out, 200, "text/plain", body.as_bytes());
        }
        if let Some(pages) = path.split_once("/scatter?pages=").and_then(|(_, n)| n.parse::<usize>().ok()) {
            return scatter(out, pages);
        }
        if path.ends_with("/hog") {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Touch every page so the memory is really used.
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        berth_guest::http::respond(out, 200, "text/plain", b"hog is fine\n");
    }
}

/// Writes one byte in every other page of `2 * pages` pages of memory
/// fresh from `memory.grow`, and answers how many were not zero before.
/// Grown memory is zero by the wasm spec, so a byte that is not was left
/// by an earlier instance. (Not through the allocator: it would zero the
/// block itself, writing every page.)
fn scatter(out: ResponseOutparam, pages: usize) {
    const PAGE: usize = 4096;
    const WASM_PAGE: usize = 65536;
    let old = core::arch::wasm32::memory_grow(0, (2 * pages * PAGE).div_ceil(WASM_PAGE));
    if old == usize::MAX {
        return berth_guest::http::respond(out, 500, "text/plain", b"memory.grow failed\n");
    }
    let base = (old * WASM_PAGE) as *mut u8;
    let mut stale = 0;
    for page in 0..pages {
        // SAFETY: the grown pages are this instance's and nothing else
        // (not the allocator: it only ever grows memory further) uses them.
        unsafe {
            let byte = base.add(2 * page * PAGE);
            stale += usize::from(byte.read_volatile() != 0);
            byte.write_volatile(1);
        }
    }
    let body = format!("scattered {pages} pages, {stale} not zero before\n");
    berth_guest::http::respond(out, 200, "text/plain", body.as_bytes());
}

/// Answers 200 with `n` bytes written 1 KiB at a time; stops quietly when
/// the base closes the stream (a response cap).
fn respond_in_chunks(out: ResponseOutparam, n: usize) {
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("stream is taken once");
    let chunk = [b'x'; 1024];
    let mut left = n;
    while left > 0 {
        let len = left.min(chunk.len());
        if stream.blocking_write_and_flush(&chunk[..len]).is_err() {
            return;
        }
        left -= len;
    }
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}
