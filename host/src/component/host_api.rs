//! The `host` interface guests import: `produce` and `log`.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::Level;
use super::bindings::logpipe::handler::host::Host;
use super::engine::{GuestLimiter, GuestLimits};
use super::guest_output::{GuestOutput, Stream};
use crate::envelope::{self, Format};

/// Where produced records go: the backend the records come from.
///
/// `send` queues one rendered envelope; delivery is confirmed later, before
/// the offsets of the records that produced it are committed.
pub trait MessageSink: Send + Sync {
    fn send(&self, topic: &str, key: Option<&str>, payload: Vec<u8>) -> Result<(), String>;
}

/// How guest-produced envelopes are rendered (logpipe's `DEFAULT_FORMAT`
/// and `PRODUCER_ID` settings).
#[derive(Debug, Clone)]
pub struct ProduceSettings {
    pub format: Format,
    pub producer_id: Option<String>,
}

/// What every instance's host functions share.
pub struct HostServices {
    pub sink: Arc<dyn MessageSink>,
    pub produce: ProduceSettings,
}

/// The record being handled, for log lines the guest writes.
#[derive(Debug, Clone, Default)]
pub struct RecordContext {
    pub topic: String,
    pub partition: String,
    pub offset: String,
}

/// The data of one instance's store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: GuestLimiter,
    services: Arc<HostServices>,
    handler: Arc<str>,
    pub record: RecordContext,
    pub stderr: GuestOutput,
}

impl HostState {
    /// A fresh state: WASI with nothing granted (no preopened directories,
    /// no environment, no arguments, stdin closed, no network addresses
    /// allowed); stdout and stderr go to the host log.
    pub fn new(services: Arc<HostServices>, handler: Arc<str>, limits: GuestLimits) -> Self {
        let stderr = GuestOutput::new(handler.clone(), Stream::Stderr);
        let wasi = WasiCtx::builder()
            .stdout(GuestOutput::new(handler.clone(), Stream::Stdout))
            .stderr(stderr.clone())
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: GuestLimiter::new(limits),
            services,
            handler,
            record: RecordContext::default(),
            stderr,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl Host for HostState {
    fn produce(
        &mut self,
        topic: String,
        message_type: String,
        version: u32,
        key: Option<String>,
        body_json: String,
    ) -> Result<(), String> {
        if topic.is_empty() {
            return Err("topic must not be empty".into());
        }
        let settings = &self.services.produce;
        let payload = envelope::render(
            settings.format,
            &message_type,
            version,
            &body_json,
            settings.producer_id.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        self.services.sink.send(&topic, key.as_deref(), payload)
    }

    fn log(&mut self, level: Level, text: String) {
        let handler = &*self.handler;
        let RecordContext {
            topic,
            partition,
            offset,
        } = &self.record;
        macro_rules! emit {
            ($macro:ident) => {
                tracing::$macro!(target: "guest", handler, topic, partition, offset, "{text}")
            };
        }
        match level {
            Level::Trace => emit!(trace),
            Level::Debug => emit!(debug),
            Level::Info => emit!(info),
            Level::Warn => emit!(warn),
            Level::Error => emit!(error),
        }
    }
}
