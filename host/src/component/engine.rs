//! The wasmtime engine every handler shares, and the limits guests run under.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use wasmtime::{Config, Engine, OptLevel, ResourceLimiter};

use super::cache::ComponentCache;
use super::host_api::HostServices;

/// How often the epoch advances. A deadline is a whole number of ticks, so
/// this is the resolution of `--handler-timeout-ms`.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Per-instance and per-call limits.
#[derive(Debug, Clone, Copy)]
pub struct GuestLimits {
    /// Wall-clock budget of one call into a guest.
    pub call_timeout: Duration,
    /// Linear memory an instance may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Elements any one table of an instance may grow to.
    pub max_table_elements: usize,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits {
            call_timeout: Duration::from_secs(1),
            max_memory_bytes: 64 << 20,
            max_table_elements: 20_000,
        }
    }
}

impl GuestLimits {
    /// The epoch deadline for one call, rounded up to whole ticks.
    pub fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_nanos();
        let ticks = self.call_timeout.as_nanos().div_ceil(tick);
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }
}

/// Everything the handlers of one host share.
pub struct Runtime {
    pub engine: Engine,
    pub limits: GuestLimits,
    pub cache: ComponentCache,
    pub services: Arc<HostServices>,
    _ticker: EpochTicker,
}

impl Runtime {
    pub fn new(
        limits: GuestLimits,
        cache: ComponentCache,
        services: HostServices,
    ) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Epochs cost a load and compare per loop back-edge, far less than
        // fuel, and give wall-clock deadlines.
        config.epoch_interruption(true);
        config.cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&config)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Runtime {
            engine,
            limits,
            cache,
            services: Arc::new(services),
            _ticker: ticker,
        })
    }
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`] until it
/// is dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Enforces [`GuestLimits`] on memory and tables and remembers which limit
/// was hit, so a failed record can name it.
pub struct GuestLimiter {
    limits: GuestLimits,
    pub hit: Option<LimitHit>,
}

/// A limit a guest ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Memory { wanted: usize, limit: usize },
    Table { wanted: usize, limit: usize },
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitHit::Memory { wanted, limit } => write!(
                f,
                "memory limit exceeded: tried to grow linear memory to {} MiB, limit is {} MiB",
                wanted >> 20,
                limit >> 20
            ),
            LimitHit::Table { wanted, limit } => write!(
                f,
                "table limit exceeded: tried to grow a table to {wanted} elements, limit is {limit}"
            ),
        }
    }
}

impl GuestLimiter {
    pub fn new(limits: GuestLimits) -> Self {
        GuestLimiter { limits, hit: None }
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = self.limits.max_memory_bytes;
        if desired > limit {
            let hit = LimitHit::Memory {
                wanted: desired,
                limit,
            };
            self.hit = Some(hit);
            // Trap rather than return -1: guests rarely handle a failed
            // allocation gracefully, and a trap names the reason.
            wasmtime::bail!("{hit}");
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = self.limits.max_table_elements;
        if desired > limit {
            let hit = LimitHit::Table {
                wanted: desired,
                limit,
            };
            self.hit = Some(hit);
            wasmtime::bail!("{hit}");
        }
        Ok(true)
    }
}
