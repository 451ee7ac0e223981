//! Guest output captured per module: stdout, stderr and `berth:base/log`.
//!
//! Each instance's WASI stdout and stderr are line-buffered streams that
//! hand every complete line, tagged with the stream and the request id, to
//! the module's [`LogSink`] (the base keeps a bounded ring per module
//! version). A partial last line is handed over when the instance ends.
//! Without a sink, output goes to the base's own stdout/stderr.

use std::io::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Where a captured line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
    /// `berth:base/log` at this level (`trace` … `error`).
    Log(&'static str),
}

/// One captured line.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Where it came from.
    pub source: LogSource,
    /// The text, without the trailing newline.
    pub message: String,
    /// The request it was written during.
    pub request_id: Option<String>,
}

/// Receives a module's captured lines.
pub trait LogSink: Send + Sync + 'static {
    /// One line.
    fn line(&self, line: LogLine);
}

/// A line-buffered guest stdout or stderr.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    source: LogSource,
    sink: Option<Arc<dyn LogSink>>,
    /// Shared by the clones the WASI context holds, so a reused (`pooled`)
    /// instance tags its lines with the request it serves now.
    request_id: Arc<Mutex<Option<String>>>,
    partial: Arc<Mutex<Vec<u8>>>,
}

impl GuestOutput {
    pub(crate) fn new(
        source: LogSource,
        sink: Option<Arc<dyn LogSink>>,
        request_id: Option<String>,
    ) -> Self {
        Self {
            source,
            sink,
            request_id: Arc::new(Mutex::new(request_id)),
            partial: Arc::default(),
        }
    }

    /// Tags the lines from now on with `request_id` (a reused instance).
    pub(crate) fn set_request_id(&self, request_id: Option<String>) {
        *self.request_id.lock().expect("output lock") = request_id;
    }

    fn emit(&self, bytes: &[u8]) {
        let message = String::from_utf8_lossy(bytes)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        match &self.sink {
            Some(sink) => sink.line(LogLine {
                source: self.source,
                message,
                request_id: self.request_id.lock().expect("output lock").clone(),
            }),
            None => {
                let line = format!("{message}\n");
                let _ = match self.source {
                    LogSource::Stderr => std::io::stderr().write_all(line.as_bytes()),
                    _ => std::io::stdout().write_all(line.as_bytes()),
                };
            }
        }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut partial = self.partial.lock().expect("output lock");
        partial.extend_from_slice(bytes);
        while let Some(i) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=i).collect();
            self.emit(&line);
        }
        // A guest that never writes a newline still cannot grow this without end.
        if partial.len() > 64 * 1024 {
            let line = std::mem::take(&mut *partial);
            self.emit(&line);
        }
    }

    /// Hands over a last line without a newline (when the instance ends).
    pub(crate) fn finish(&self) {
        let rest = std::mem::take(&mut *self.partial.lock().expect("output lock"));
        if !rest.is_empty() {
            self.emit(&rest);
        }
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
