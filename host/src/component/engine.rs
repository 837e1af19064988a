//! The wasmtime engine and linker every handler shares, and the epoch
//! ticker behind per-call deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::bindings::LogpipeHandler;
use super::cache::ComponentCache;
use super::host_api::{HostServices, HostState};
use super::manifest::HandlerDefaults;

/// How often the epoch advances. A deadline is a whole number of ticks, so
/// this is the resolution of `--handler-timeout-ms`.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The largest linear memory any handler may be granted (by a manifest).
/// With the pooling allocator every slot reserves this much address space.
pub const MAX_HANDLER_MEMORY: usize = 1 << 30;

/// Instances the pooling allocator has room for, across all handlers.
const POOL_INSTANCES: u32 = 256;

/// How the engine is built.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Limits and policies of handlers without a manifest override.
    pub defaults: HandlerDefaults,
    pub cache: ComponentCache,
    /// Use wasmtime's pooling instance allocator: instantiation reuses
    /// pre-reserved slots, which makes fresh instances cheap.
    pub pooling: bool,
}

/// Everything the handlers of one host share.
pub struct Runtime {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    /// Limits and policies of handlers without a manifest override.
    pub defaults: HandlerDefaults,
    pub cache: ComponentCache,
    pub services: Arc<HostServices>,
    _ticker: EpochTicker,
}

impl Runtime {
    pub fn new(options: RuntimeOptions, services: HostServices) -> wasmtime::Result<Arc<Self>> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Epochs cost a load and compare per loop back-edge, far less than
        // fuel, and give wall-clock deadlines.
        config.epoch_interruption(true);
        config.cranelift_opt_level(OptLevel::Speed);
        if options.pooling {
            let mut pool = PoolingAllocationConfig::new();
            pool.total_component_instances(POOL_INSTANCES)
                .total_core_instances(POOL_INSTANCES * 4)
                .total_memories(POOL_INSTANCES * 2)
                .total_tables(POOL_INSTANCES * 4)
                .max_memory_size(MAX_HANDLER_MEMORY);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config)?;
        let linker = host_linker(&engine)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Arc::new(Runtime {
            engine,
            linker,
            defaults: options.defaults,
            cache: options.cache,
            services: Arc::new(services),
            _ticker: ticker,
        }))
    }
}

/// The linker every handler is instantiated with: our `host` interface plus
/// WASI preview 2, which components built by standard toolchains import
/// even when they never use it. What WASI may reach is decided per store
/// (see `HostState::new`): nothing unless a manifest grants it.
fn host_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    LogpipeHandler::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
    Ok(linker)
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
