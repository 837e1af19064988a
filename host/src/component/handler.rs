//! One handler component and its live instance.
//!
//! An instance lives across records (calls cost well under a microsecond
//! plus the guest's own work). When a call traps, whatever the reason, the
//! instance's state can no longer be trusted: it is dropped and the next
//! record gets a fresh instance.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::Component;
use wasmtime::{Store, Trap};

use super::bindings::{Envelope, HandleError, LogpipeHandler, LogpipeHandlerPre};
use super::engine::{GuestLimits, Runtime};
use super::host_api::{HostServices, HostState, RecordContext};

/// The result of handing one record to a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleOutcome {
    Handled,
    /// The guest returned `reject`: skip the record.
    Rejected(String),
    /// The guest returned `retry`: the record must not be committed.
    Retry(String),
    /// The call trapped (panic, deadline, memory limit, ...).
    Trapped(String),
}

/// A loaded component that declared one (message type, version).
pub struct Handler {
    /// The file name without `.wasm`, used in logs.
    pub name: Arc<str>,
    pub file: PathBuf,
    pub hash: String,
    pub message_type: String,
    pub version: u32,
    pre: LogpipeHandlerPre<HostState>,
    services: Arc<HostServices>,
    limits: GuestLimits,
    live: Option<Live>,
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
        runtime: &Runtime,
        linker: &wasmtime::component::Linker<HostState>,
        component: &Component,
        name: &str,
        file: PathBuf,
        hash: String,
    ) -> wasmtime::Result<Self> {
        let pre = LogpipeHandlerPre::new(linker.instantiate_pre(component)?)?;
        Ok(Handler {
            name: name.into(),
            file,
            hash,
            message_type: String::new(),
            version: 0,
            pre,
            services: runtime.services.clone(),
            limits: runtime.limits,
            live: None,
        })
    }

    /// Instantiate the component and ask which (type, version) it handles.
    pub fn identify(&mut self) -> wasmtime::Result<()> {
        let deadline = self.limits.deadline_ticks();
        let live = self.live()?;
        live.store.set_epoch_deadline(deadline);
        let exports = live.bindings.logpipe_handler_handler();
        let message_type = exports.call_message_type(&mut live.store)?;
        live.store.set_epoch_deadline(deadline);
        let version = exports.call_version(&mut live.store)?;
        self.message_type = message_type;
        self.version = version;
        Ok(())
    }

    fn live(&mut self) -> wasmtime::Result<&mut Live> {
        if self.live.is_none() {
            let state = HostState::new(self.services.clone(), self.name.clone(), self.limits);
            let mut store = Store::new(self.pre.engine(), state);
            store.limiter(|state| &mut state.limiter);
            store.set_epoch_deadline(self.limits.deadline_ticks());
            let bindings = self.pre.instantiate(&mut store)?;
            self.live = Some(Live { store, bindings });
        }
        self.live
            .as_mut()
            .ok_or_else(|| wasmtime::format_err!("instance vanished"))
    }

    /// Call `handle` for one record.
    pub fn handle(&mut self, envelope: &Envelope) -> HandleOutcome {
        let deadline = self.limits.deadline_ticks();
        let live = match self.live() {
            Ok(live) => live,
            Err(e) => return HandleOutcome::Trapped(format!("cannot instantiate: {}", chain(&e))),
        };
        live.store.set_epoch_deadline(deadline);
        live.store.data().stderr.start_call();
        live.store.data_mut().record = RecordContext {
            topic: envelope.origin.source.clone(),
            partition: envelope.origin.partition.clone(),
            offset: envelope.origin.offset.clone(),
        };
        let result = live
            .bindings
            .logpipe_handler_handler()
            .call_handle(&mut live.store, envelope);
        let stderr = live.store.data().stderr.finish_call();
        match result {
            Ok(Ok(())) => HandleOutcome::Handled,
            Ok(Err(HandleError::Reject(reason))) => HandleOutcome::Rejected(reason),
            Ok(Err(HandleError::Retry(reason))) => HandleOutcome::Retry(reason),
            Err(error) => {
                let mut reason = self.trap_reason(&error);
                if let Some(stderr) = stderr {
                    reason = format!("{reason} (guest stderr: {stderr})");
                }
                self.live = None;
                HandleOutcome::Trapped(reason)
            }
        }
    }

    /// Name the limit behind a trap when there is one; operators should not
    /// have to decode wasm backtraces to learn that a handler was too slow.
    fn trap_reason(&self, error: &wasmtime::Error) -> String {
        let hit = self
            .live
            .as_ref()
            .and_then(|live| live.store.data().limiter.hit);
        if let Some(hit) = hit {
            return hit.to_string();
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => format!(
                "deadline exceeded: the call ran longer than {} ms",
                self.limits.call_timeout.as_millis()
            ),
            // The wasm backtrace that comes with a trap spans many lines;
            // the trap code is what an operator needs in a log line.
            Some(trap) => trap.to_string(),
            None => chain(error),
        }
    }
}

/// An error and its causes on one line.
pub(crate) fn chain(error: &wasmtime::Error) -> String {
    error
        .chain()
        .map(|cause| cause.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
