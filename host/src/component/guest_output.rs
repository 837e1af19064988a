//! Guest stdout and stderr, written to the host's log line by line under
//! the handler's name.
//!
//! Standard toolchains print the useful part of a crash here (a Rust panic
//! message, a Python traceback) while the trap itself only says
//! `unreachable`, so the last stderr lines of a failed call are also kept
//! for the failure reason.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line kept; longer output is split so a guest cannot make the
/// host buffer without bound.
const MAX_LINE: usize = 4096;
/// Lines of the current call remembered for a failure reason.
const RECENT_LINES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One output stream of one instance. Clones share the buffer.
#[derive(Clone)]
pub struct GuestOutput {
    inner: Arc<Mutex<Buffer>>,
}

struct Buffer {
    handler: Arc<str>,
    stream: Stream,
    partial: Vec<u8>,
    recent: VecDeque<String>,
}

impl GuestOutput {
    pub fn new(handler: Arc<str>, stream: Stream) -> Self {
        GuestOutput {
            inner: Arc::new(Mutex::new(Buffer {
                handler,
                stream,
                partial: Vec::new(),
                recent: VecDeque::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forget what earlier calls printed.
    pub fn start_call(&self) {
        self.lock().recent.clear();
    }

    /// Log a pending partial line and return the last lines this call
    /// printed, joined with " | ".
    pub fn finish_call(&self) -> Option<String> {
        let mut buffer = self.lock();
        buffer.emit_partial();
        (!buffer.recent.is_empty()).then(|| Vec::from(buffer.recent.clone()).join(" | "))
    }

    fn append(&self, bytes: &[u8]) {
        let mut buffer = self.lock();
        for &byte in bytes {
            if byte == b'\n' {
                buffer.emit_partial();
            } else {
                buffer.partial.push(byte);
                if buffer.partial.len() >= MAX_LINE {
                    buffer.emit_partial();
                }
            }
        }
    }
}

impl Buffer {
    fn emit_partial(&mut self) {
        if self.partial.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&self.partial).trim_end().to_owned();
        self.partial.clear();
        let handler = &*self.handler;
        match self.stream {
            Stream::Stdout => tracing::info!(target: "guest", handler, stream = "stdout", "{line}"),
            Stream::Stderr => tracing::warn!(target: "guest", handler, stream = "stderr", "{line}"),
        }
        if self.recent.len() == RECENT_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
