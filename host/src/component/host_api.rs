//! The `host` interface guests import: `produce` and `log`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::Level;
use super::bindings::logpipe::handler::host::Host;
use super::guest_output::{GuestOutput, Stream};
use super::limits::{GuestLimiter, LimitHit};
use super::manifest::HandlerConfig;
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
    config: Arc<HandlerConfig>,
    pub record: RecordContext,
    pub stderr: GuestOutput,
    /// `produce` calls and bytes of the current `handle` call.
    produced_calls: u32,
    produced_bytes: usize,
    /// When the current call into the guest began, and how much of it was
    /// spent in host functions: the deadline counts only the guest's time.
    call_started: Option<Instant>,
    host_time: Duration,
}

impl HostState {
    /// A fresh state: WASI with nothing granted (no preopened directories,
    /// no arguments, stdin closed, no TCP, UDP or name lookups) beyond the
    /// environment variables of the handler's manifest; stdout and stderr go
    /// to the host log.
    pub fn new(services: Arc<HostServices>, handler: Arc<str>, config: Arc<HandlerConfig>) -> Self {
        let stderr = GuestOutput::new(handler.clone(), Stream::Stderr);
        let wasi = WasiCtx::builder()
            .stdout(GuestOutput::new(handler.clone(), Stream::Stdout))
            .stderr(stderr.clone())
            .envs(&config.env)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: GuestLimiter::new(config.limits),
            services,
            handler,
            config,
            record: RecordContext::default(),
            stderr,
            produced_calls: 0,
            produced_bytes: 0,
            call_started: None,
            host_time: Duration::ZERO,
        }
    }

    /// Start timing a call into the guest.
    pub fn begin_call(&mut self) {
        self.call_started = Some(Instant::now());
        self.host_time = Duration::ZERO;
    }

    /// Time the guest itself has used in the current call: wall time minus
    /// time spent in host functions (a slow broker lookup during `produce`
    /// is the host's, not the guest's).
    pub fn guest_time(&self) -> Option<Duration> {
        self.call_started
            .map(|started| started.elapsed().saturating_sub(self.host_time))
    }

    pub fn config(&self) -> &HandlerConfig {
        &self.config
    }

    /// Reset the per-call counters before a `handle` call.
    pub fn start_call(&mut self, record: RecordContext) {
        self.begin_call();
        self.record = record;
        self.produced_calls = 0;
        self.produced_bytes = 0;
        self.limiter.hit = None;
        self.stderr.start_call();
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
    ) -> wasmtime::Result<Result<(), String>> {
        let started = Instant::now();
        let result = self.produce_inner(topic, message_type, version, key, body_json);
        self.host_time += started.elapsed();
        result
    }

    fn log(&mut self, level: Level, text: String) {
        let started = Instant::now();
        self.log_line(level, &text);
        self.host_time += started.elapsed();
    }
}

impl HostState {
    fn produce_inner(
        &mut self,
        topic: String,
        message_type: String,
        version: u32,
        key: Option<String>,
        body_json: String,
    ) -> wasmtime::Result<Result<(), String>> {
        let limits = self.config.limits;
        self.produced_calls += 1;
        if self.produced_calls > limits.max_produce_calls {
            return Err(self.limiter.trap(LimitHit::ProduceCalls {
                limit: limits.max_produce_calls,
            }));
        }
        if topic.is_empty() {
            return Ok(Err("topic must not be empty".into()));
        }
        if let Some(allowed) = &self.config.allowed_topics
            && !allowed.contains(&topic)
        {
            return Ok(Err(format!(
                "topic {topic:?} is not allowed by this handler's manifest (produce.topics)"
            )));
        }
        let settings = &self.services.produce;
        let payload = match envelope::render(
            settings.format,
            &message_type,
            version,
            &body_json,
            settings.producer_id.as_deref(),
        ) {
            Ok(payload) => payload,
            Err(e) => return Ok(Err(e.to_string())),
        };
        self.produced_bytes = self.produced_bytes.saturating_add(payload.len());
        if self.produced_bytes > limits.max_produce_bytes {
            return Err(self.limiter.trap(LimitHit::ProduceBytes {
                limit: limits.max_produce_bytes,
            }));
        }
        Ok(self.services.sink.send(&topic, key.as_deref(), payload))
    }

    fn log_line(&self, level: Level, text: &str) {
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
