//! The interfaces guests import: `host` (`produce`, `log`) and `store`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::logpipe::handler::host::Host;
use super::bindings::logpipe::handler::store::Host as StoreHost;
use super::bindings::{Level, Origin};
use super::guest_output::{GuestOutput, Stream};
use super::limits::{GuestLimiter, LimitHit};
use super::manifest::HandlerConfig;
use crate::envelope::{self, Format};
use crate::metrics::{HandlerMetrics, Metrics};
use crate::state::{Namespace, StateStore};

/// One record a guest produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced<'a> {
    pub topic: &'a str,
    pub key: Option<&'a str>,
    /// The rendered envelope.
    pub payload: Vec<u8>,
    /// The record being handled when it was produced.
    pub origin: &'a RecordContext,
    /// Which `produce` call of that `handle` call it came from (1 for the
    /// first).
    pub seq: u32,
}

impl Produced<'_> {
    /// `{source}/{partition}/{offset}/{n}`: the same every time the record
    /// is handled. Formatted only by sinks that need it (the outbox).
    pub fn id(&self) -> String {
        let RecordContext {
            topic,
            partition,
            offset,
        } = self.origin;
        format!("{topic}/{partition}/{offset}/{}", self.seq)
    }
}

/// Where produced records go: the backend the records come from, directly
/// or through the outbox.
///
/// `send` queues one rendered envelope; it is delivered or stored before the
/// offset of the record that produced it is committed.
pub trait MessageSink: Send + Sync {
    fn send(&self, record: Produced<'_>) -> Result<(), String>;
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
    pub state: Arc<StateStore>,
    pub metrics: Arc<Metrics>,
}

/// The record being handled, for log lines the guest writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    metrics: Arc<HandlerMetrics>,
    config: Arc<HandlerConfig>,
    namespace: Namespace,
    pub record: RecordContext,
    pub stderr: GuestOutput,
    /// `produce` calls and bytes of the current `handle` call.
    produced_calls: u32,
    produced_bytes: usize,
    /// Store writes of the current `handle` call.
    store_writes: u32,
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
        let namespace = config
            .store_namespace
            .clone()
            .unwrap_or_else(|| handler.clone());
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: GuestLimiter::new(config.limits),
            metrics: services.metrics.handler(&handler),
            services,
            handler,
            config,
            namespace,
            record: RecordContext::default(),
            stderr,
            produced_calls: 0,
            produced_bytes: 0,
            store_writes: 0,
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
    pub fn start_call(&mut self, origin: &Origin) {
        self.begin_call();
        // clone_from reuses the previous record's buffers: no allocation
        // per record once they are large enough.
        self.record.topic.clone_from(&origin.source);
        self.record.partition.clone_from(&origin.partition);
        self.record.offset.clone_from(&origin.offset);
        self.produced_calls = 0;
        self.produced_bytes = 0;
        self.store_writes = 0;
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
        let result =
            self.timed(|state| state.produce_inner(topic, message_type, version, key, body_json));
        match &result {
            Ok(Ok(())) => self.metrics.produced.inc(),
            Ok(Err(_)) => self.metrics.produce_errors.inc(),
            // A limit trap: counted as a limit hit when the call ends.
            Err(_) => {}
        }
        result
    }

    fn log(&mut self, level: Level, text: String) {
        self.timed(|state| state.log_line(level, &text));
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
        Ok(self.services.sink.send(Produced {
            topic: &topic,
            key: key.as_deref(),
            payload,
            origin: &self.record,
            seq: self.produced_calls,
        }))
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

impl StoreHost for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let result = self.timed(|state| state.services.state.get(&state.namespace, &key));
        result.map_err(|e| self.limiter.store_failure(e.to_string()))
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        self.check_write(&key, Some(value.len()))?;
        self.services.state.write(&self.namespace, key, Some(value));
        Ok(())
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.check_write(&key, None)?;
        self.services.state.write(&self.namespace, key, None);
        Ok(())
    }

    fn scan(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        let result = self.timed(|state| {
            let namespace = &state.namespace;
            (state.services.state).scan(namespace, &prefix, after.as_deref(), limit)
        });
        result.map_err(|e| self.limiter.store_failure(e.to_string()))
    }
}

impl HostState {
    /// Run a host function, counting its time as the host's, not the
    /// guest's (see [`HostState::guest_time`]).
    fn timed<T>(&mut self, call: impl FnOnce(&mut Self) -> T) -> T {
        let started = Instant::now();
        let result = call(self);
        self.host_time += started.elapsed();
        result
    }

    /// Enforce the store limits on one write; exceeding one ends the call.
    fn check_write(&mut self, key: &str, value_len: Option<usize>) -> wasmtime::Result<()> {
        let limits = self.config.limits;
        self.store_writes += 1;
        if self.store_writes > limits.max_store_writes {
            return Err(self.limiter.trap(LimitHit::StoreWrites {
                limit: limits.max_store_writes,
            }));
        }
        if key.len() > limits.max_store_key_bytes {
            return Err(self.limiter.trap(LimitHit::StoreKey {
                len: key.len(),
                limit: limits.max_store_key_bytes,
            }));
        }
        if let Some(len) = value_len
            && len > limits.max_store_value_bytes
        {
            return Err(self.limiter.trap(LimitHit::StoreValue {
                len,
                limit: limits.max_store_value_bytes,
            }));
        }
        Ok(())
    }
}
