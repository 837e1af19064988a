//! One handler component and its live instance.
//!
//! By default an instance lives across records (a call costs well under a
//! microsecond plus the guest's own work). When a call traps, whatever the
//! reason, the instance's state can no longer be trusted: it is dropped and
//! the next record gets a fresh instance. With `isolation = "per-record"`
//! every record gets a fresh instance.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::Component;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::{Envelope, HandleError, LogpipeHandler, LogpipeHandlerPre};
use super::engine::Runtime;
use super::host_api::HostState;
use super::limits::{GuestLimits, LimitHit};
use super::manifest::{HandlerConfig, Isolation};
use crate::metrics::{HandlerMetrics, LimitKind};
use crate::policy::ErrorClass;

/// The result of handing one record to a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleOutcome {
    Handled,
    /// The guest returned `reject`: skip the record.
    Rejected(String),
    /// The guest returned `retry`: the record must not be committed.
    Retry(String),
    /// The call trapped (panic, deadline, memory limit, ...).
    Trapped {
        class: ErrorClass,
        reason: String,
    },
}

/// A loaded component that declared one (message type, version).
pub struct Handler {
    /// The file name without `.wasm`, used in logs.
    pub name: Arc<str>,
    pub file: PathBuf,
    /// SHA-256 of the component, with the manifest's when there is one.
    pub hash: String,
    pub message_type: String,
    pub version: u32,
    pub config: Arc<HandlerConfig>,
    pre: LogpipeHandlerPre<HostState>,
    runtime: Arc<Runtime>,
    live: Option<Live>,
    /// Shared by every version of this handler (by name).
    metrics: Arc<HandlerMetrics>,
    /// The last call trapped: the next instance is a restart.
    restart_pending: bool,
}

struct Live {
    store: Store<HostState>,
    bindings: LogpipeHandler,
}

impl Handler {
    /// Link `component` against the host. Fails if the component is not a
    /// `logpipe-handler` (missing export, or imports the host lacks). Call
    /// [`Handler::identify`] next.
    pub fn link(
        runtime: &Arc<Runtime>,
        component: &Component,
        name: &str,
        file: PathBuf,
        hash: String,
        config: HandlerConfig,
    ) -> wasmtime::Result<Self> {
        let pre = LogpipeHandlerPre::new(runtime.linker.instantiate_pre(component)?)?;
        Ok(Handler {
            name: name.into(),
            file,
            hash,
            message_type: String::new(),
            version: 0,
            config: Arc::new(config),
            pre,
            metrics: runtime.services.metrics.handler(name),
            runtime: runtime.clone(),
            live: None,
            restart_pending: false,
        })
    }

    /// Another handler of the same component, for another worker: it
    /// shares the compiled code and the metrics, and gets an instance of
    /// its own on its first record.
    pub fn fork(&self) -> Handler {
        Handler {
            name: self.name.clone(),
            file: self.file.clone(),
            hash: self.hash.clone(),
            message_type: self.message_type.clone(),
            version: self.version,
            config: self.config.clone(),
            pre: self.pre.clone(),
            runtime: self.runtime.clone(),
            live: None,
            metrics: self.metrics.clone(),
            restart_pending: false,
        }
    }

    /// Drop the live instance (its memory); the next call makes a new one.
    pub fn park(&mut self) {
        self.live = None;
    }

    /// Instantiate the component and ask which (type, version) it handles.
    pub fn identify(&mut self) -> wasmtime::Result<()> {
        let deadline = self.config.limits.deadline_ticks();
        let live = self.live()?;
        live.store.set_epoch_deadline(deadline);
        live.store.data_mut().begin_call();
        let exports = live.bindings.logpipe_handler_handler();
        let message_type = exports.call_message_type(&mut live.store)?;
        live.store.set_epoch_deadline(deadline);
        let version = exports.call_version(&mut live.store)?;
        self.message_type = message_type;
        self.version = version;
        if self.config.isolation == Isolation::PerRecord {
            self.live = None;
        }
        Ok(())
    }

    fn live(&mut self) -> wasmtime::Result<&mut Live> {
        if self.live.is_none() {
            let state = HostState::new(
                self.runtime.services.clone(),
                self.name.clone(),
                self.config.clone(),
            );
            let mut store = Store::new(self.pre.engine(), state);
            store.limiter(|state| &mut state.limiter);
            store.set_epoch_deadline(self.config.limits.deadline_ticks());
            store.epoch_deadline_callback(extend_for_host_time);
            let bindings = self.pre.instantiate(&mut store)?;
            self.live = Some(Live { store, bindings });
            if std::mem::take(&mut self.restart_pending) {
                self.metrics.restarts.inc();
            }
        }
        self.live
            .as_mut()
            .ok_or_else(|| wasmtime::format_err!("instance vanished"))
    }

    /// Linear memory of the live instance, if there is one.
    pub fn instance_memory(&self) -> Option<usize> {
        self.live
            .as_ref()
            .map(|live| live.store.data().limiter.memory)
    }

    /// Call `handle` for one record, and count its outcome and latency.
    pub fn handle(&mut self, envelope: &Envelope) -> HandleOutcome {
        let started = Instant::now();
        let outcome = self.call_handle(envelope);
        self.metrics.duration.observe(started.elapsed());
        match &outcome {
            HandleOutcome::Handled => self.metrics.handled.inc(),
            HandleOutcome::Rejected(_) => self.metrics.failed(ErrorClass::Reject).inc(),
            HandleOutcome::Retry(_) => self.metrics.failed(ErrorClass::Retry).inc(),
            HandleOutcome::Trapped { class, .. } => self.metrics.failed(*class).inc(),
        }
        outcome
    }

    fn call_handle(&mut self, envelope: &Envelope) -> HandleOutcome {
        let deadline = self.config.limits.deadline_ticks();
        let live = match self.live() {
            Ok(live) => live,
            Err(e) => {
                return HandleOutcome::Trapped {
                    class: ErrorClass::Trap,
                    reason: format!("cannot instantiate: {}", chain(&e)),
                };
            }
        };
        live.store.set_epoch_deadline(deadline);
        live.store.data_mut().start_call(&envelope.origin);
        let result = live
            .bindings
            .logpipe_handler_handler()
            .call_handle(&mut live.store, envelope);
        let stderr = live.store.data().stderr.finish_call();
        let outcome = match result {
            Ok(Ok(())) => HandleOutcome::Handled,
            Ok(Err(HandleError::Reject(reason))) => HandleOutcome::Rejected(reason),
            Ok(Err(HandleError::Retry(reason))) => HandleOutcome::Retry(reason),
            Err(error) => {
                let (class, mut reason) = self.trap_reason(&error);
                if let Some(stderr) = stderr {
                    reason = format!("{reason} (guest stderr: {stderr})");
                }
                self.live = None;
                self.restart_pending = true;
                return HandleOutcome::Trapped { class, reason };
            }
        };
        if self.config.isolation == Isolation::PerRecord {
            self.live = None;
        }
        outcome
    }

    /// Name the limit behind a trap when there is one; operators should not
    /// have to decode wasm backtraces to learn that a handler was too slow.
    fn trap_reason(&self, error: &wasmtime::Error) -> (ErrorClass, String) {
        let hit = self
            .live
            .as_ref()
            .and_then(|live| live.store.data().limiter.hit);
        if let Some(hit) = hit {
            let class = match hit {
                LimitHit::Memory { .. } | LimitHit::Table { .. } => ErrorClass::Memory,
                LimitHit::ProduceCalls { .. } | LimitHit::ProduceBytes { .. } => {
                    ErrorClass::Produce
                }
                LimitHit::StoreKey { .. }
                | LimitHit::StoreValue { .. }
                | LimitHit::StoreWrites { .. }
                | LimitHit::StoreUnavailable => ErrorClass::Store,
            };
            if hit == LimitHit::StoreUnavailable {
                return (class, chain(error));
            }
            if let Some(kind) = limit_kind(hit) {
                self.metrics.limit_hit(kind).inc();
            }
            return (class, hit.to_string());
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                self.metrics.limit_hit(LimitKind::Deadline).inc();
                (
                    ErrorClass::Deadline,
                    format!(
                        "deadline exceeded: the call ran longer than {} ms",
                        self.config.limits.call_timeout.as_millis()
                    ),
                )
            }
            // The wasm backtrace that comes with a trap spans many lines;
            // the trap code is what an operator needs in a log line.
            Some(trap) => (ErrorClass::Trap, trap.to_string()),
            None => (ErrorClass::Trap, chain(error)),
        }
    }
}

/// The metric kind of a limit; `None` for a store that cannot be read
/// (not a limit the guest ran into).
fn limit_kind(hit: LimitHit) -> Option<LimitKind> {
    Some(match hit {
        LimitHit::Memory { .. } => LimitKind::Memory,
        LimitHit::Table { .. } => LimitKind::Table,
        LimitHit::ProduceCalls { .. } => LimitKind::ProduceCalls,
        LimitHit::ProduceBytes { .. } => LimitKind::ProduceBytes,
        LimitHit::StoreKey { .. } => LimitKind::StoreKey,
        LimitHit::StoreValue { .. } => LimitKind::StoreValue,
        LimitHit::StoreWrites { .. } => LimitKind::StoreWrites,
        LimitHit::StoreUnavailable => return None,
    })
}

/// At the epoch deadline: trap if the guest itself has used its time, else
/// give it what it has left. Time spent in host functions (a broker lookup
/// inside `produce`) does not count against the guest.
fn extend_for_host_time(
    store: wasmtime::StoreContextMut<'_, HostState>,
) -> wasmtime::Result<UpdateDeadline> {
    let state = store.data();
    let budget = state.config().limits.call_timeout;
    let Some(used) = state.guest_time() else {
        return Ok(UpdateDeadline::Interrupt);
    };
    if used >= budget {
        return Ok(UpdateDeadline::Interrupt);
    }
    let left = GuestLimits {
        call_timeout: budget - used,
        ..state.config().limits
    };
    Ok(UpdateDeadline::Continue(left.deadline_ticks()))
}

/// An error and its causes on one line.
pub(crate) fn chain(error: &wasmtime::Error) -> String {
    error
        .chain()
        .map(|cause| cause.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
