//! `hog`: a module that misbehaves on purpose, with memory.
//!
//! - `GET /hog` allocates 1 MiB after 1 MiB without end: the base's memory
//!   limit stops it (the allocation fails and the guest aborts);
//! - `GET /hog/bytes?n=N` answers a body of N bytes (for response caps);
//! - `GET /hog/touch?mib=N` writes every page of N MiB, then answers (for
//!   memory reclaim: the pages are really resident while it runs);
//! - anything else answers a short text, so tests can see it still serves.
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

wasip2::http::proxy::export!(Hog);

struct Hog;

impl wasip2::exports::http::incoming_handler::Guest for Hog {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if let Some(n) = path.split_once("/bytes?n=").and_then(|(_, n)| n.parse::<usize>().ok()) {
            return berth_guest::http::respond(out, 200, "application/octet-stream", &vec![b'x'; n]);
        }
        if let Some(mib) = path.split_once("/touch?mib=").and_then(|(_, n)| n.parse::<usize>().ok()) {
            let block = std::hint::black_box(vec![1u8; mib << 20]);
            let body = format!("touched {mib} MiB ({} bytes)\n", block.iter().map(|&b| b as usize).sum::<usize>());
            return berth_guest::http::respond(out, 200, "text/plain", body.as_bytes());
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
