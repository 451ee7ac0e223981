//! The body type of module responses, shared by the request path
//! ([`crate::LoadedModule::handle`]) and module calls ([`crate::ModuleCaller`]),
//! and the coalescing of short bodies into one known-length body.
//!
//! A guest's `wasi:http` response has no length unless it sets
//! `content-length`, so hyper would send it chunked: the head and the data
//! in one write, and the closing `0\r\n\r\n` often in a second one that
//! wakes the client (or a gateway, which then decodes and re-encodes the
//! chunks) once more. Most responses are short and complete a moment after
//! their head, so [`coalesce`] waits up to [`COALESCE_WAIT`] for the whole
//! body (at most [`COALESCE_MAX`] bytes) and, when it has it, answers with
//! a body of known length: one write, a `content-length`, nothing to
//! re-encode downstream. A body that is longer, slower or has trailers
//! streams as before, with what was gathered sent first; the head is never
//! held back longer than [`COALESCE_WAIT`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

/// The body of a response produced by a module (or by the base for one).
pub type ResponseBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// How long a response head waits for the rest of its body to be coalesced.
pub(crate) const COALESCE_WAIT: Duration = Duration::from_millis(1);

/// The longest body that is coalesced; longer ones stream.
pub(crate) const COALESCE_MAX: usize = 64 * 1024;

/// A complete body made of `bytes`, typed like a module's response body.
pub fn full_body(bytes: impl Into<bytes::Bytes>) -> ResponseBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// `body`, ending in an error instead of cleanly if `failed` is set by the
/// time it ends. wasmtime-wasi-http ends the body of a guest that went away
/// without `finish` (a trap, a deadline) as if it were complete, so a
/// client would take a cut-off body for the whole response. The request
/// path sets `failed` before the failed instance is dropped, which is what
/// ends the body: the flag is always seen.
pub(crate) fn unless_failed(body: ResponseBody, failed: Arc<AtomicBool>) -> ResponseBody {
    UnlessFailed {
        inner: body,
        failed,
    }
    .boxed_unsync()
}

struct UnlessFailed {
    inner: ResponseBody,
    failed: Arc<AtomicBool>,
}

impl Body for UnlessFailed {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) if self.failed.load(Ordering::Acquire) => {
                Poll::Ready(Some(Err(wasmtime_wasi_http::Error::InternalError(Some(
                    "the module failed before finishing its response body".into(),
                )))))
            }
            other => other,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What [`coalesce`] made of a response body.
pub(crate) enum Coalesced {
    /// The whole body, which ended in time.
    Whole(Bytes),
    /// A body still streaming (longer, slower, or with trailers), starting
    /// with what was read of it.
    Streaming(ResponseBody),
    /// The body failed before the head went out (over its size limit, or
    /// the guest failed writing it): the caller answers with an error
    /// instead of a head followed by a cut-off body.
    Failed(wasmtime_wasi_http::Error),
}

/// `body` whole, as a body of known length, if it ends within
/// [`COALESCE_WAIT`] and [`COALESCE_MAX`] bytes with no trailers; otherwise
/// the same stream, starting with what was read of it.
pub(crate) async fn coalesce(mut body: ResponseBody) -> Coalesced {
    let mut read: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut size = 0usize;
    let mut failed = None;
    let gathered = tokio::time::timeout(COALESCE_WAIT, async {
        loop {
            match body.frame().await {
                None => return true,
                Some(Ok(frame)) => {
                    let data = frame.data_ref().map_or(0, Bytes::len);
                    let trailers = !frame.is_data();
                    size += data;
                    read.push_back(frame);
                    if trailers || size > COALESCE_MAX {
                        return false;
                    }
                }
                Some(Err(e)) => {
                    failed = Some(e);
                    return false;
                }
            }
        }
    })
    .await;
    if let Some(e) = failed {
        return Coalesced::Failed(e);
    }
    if gathered == Ok(true) {
        return Coalesced::Whole(match read.len() {
            0 => Bytes::new(),
            1 => read
                .pop_front()
                .and_then(|f| f.into_data().ok())
                .unwrap_or_default(),
            _ => {
                let mut all = BytesMut::with_capacity(size);
                for frame in read {
                    if let Ok(data) = frame.into_data() {
                        all.extend_from_slice(&data);
                    }
                }
                all.freeze()
            }
        });
    }
    if read.is_empty() {
        return Coalesced::Streaming(body);
    }
    Coalesced::Streaming(Prefixed { read, rest: body }.boxed_unsync())
}

/// A body whose first frames were already read: those, then the rest.
struct Prefixed {
    read: VecDeque<Frame<Bytes>>,
    rest: ResponseBody,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(frame) = self.read.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let read: u64 = self
            .read
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let mut hint = SizeHint::new();
        let rest = self.rest.size_hint();
        hint.set_lower(rest.lower() + read);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + read);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames from a channel, as a guest's body arrives.
    struct Channel(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Channel {
        type Data = Bytes;
        type Error = wasmtime_wasi_http::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|f| f.map(|d| Ok(Frame::data(d))))
        }
    }

    fn stream(frames: Vec<Bytes>, then_wait: bool) -> ResponseBody {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        for f in frames {
            tx.try_send(f).unwrap();
        }
        if then_wait {
            // The sender outlives the wait: the body does not end in time.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx.send(Bytes::from_static(b"late")).await;
            });
        }
        Channel(rx).boxed_unsync()
    }

    #[tokio::test]
    async fn a_short_complete_body_becomes_one_known_length() {
        let Coalesced::Whole(whole) = coalesce(stream(
            vec![Bytes::from_static(b"hello, "), Bytes::from_static(b"world")],
            false,
        ))
        .await
        else {
            panic!("a complete short body was not coalesced");
        };
        assert_eq!(&whole[..], b"hello, world");
    }

    #[tokio::test]
    async fn a_slow_body_streams_with_what_was_read_first() {
        let Coalesced::Streaming(body) =
            coalesce(stream(vec![Bytes::from_static(b"first ")], true)).await
        else {
            panic!("a slow body was not left streaming");
        };
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"first late");
    }

    #[tokio::test]
    async fn a_body_over_its_size_limit_fails_before_its_head() {
        let frames = (0..20).map(|_| Bytes::from(vec![b'x'; 1024])).collect();
        let capped = http_body_util::Limited::new(stream(frames, false), 10_000)
            .map_err(|_| wasmtime_wasi_http::Error::HttpResponseBodySize(Some(10_000)))
            .boxed_unsync();
        let Coalesced::Failed(e) = coalesce(capped).await else {
            panic!("an over-limit body was not reported as failed");
        };
        assert!(
            matches!(e, wasmtime_wasi_http::Error::HttpResponseBodySize(_)),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_long_body_streams() {
        let big = Bytes::from(vec![b'x'; COALESCE_MAX + 1]);
        let Coalesced::Streaming(body) =
            coalesce(stream(vec![big.clone(), Bytes::from_static(b"!")], false)).await
        else {
            panic!("a long body was not left streaming");
        };
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), COALESCE_MAX + 2);
    }
}
