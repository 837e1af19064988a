//! The limits a guest runs under, and the limiter that enforces the memory
//! and table ones and remembers which limit was hit, so that a failed record
//! can name it.

use std::time::Duration;

use wasmtime::ResourceLimiter;

use super::engine::EPOCH_TICK;

/// Per-call and per-instance limits of one handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    /// Wall-clock budget of one call into a guest.
    pub call_timeout: Duration,
    /// Linear memory an instance may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Elements any one table of an instance may grow to.
    pub max_table_elements: usize,
    /// `produce` calls allowed during one `handle` call.
    pub max_produce_calls: u32,
    /// Rendered envelope bytes `produce` may send during one `handle` call.
    pub max_produce_bytes: usize,
    /// Longest store key, in bytes.
    pub max_store_key_bytes: usize,
    /// Largest store value, in bytes.
    pub max_store_value_bytes: usize,
    /// Store `put` and `delete` calls allowed during one `handle` call.
    pub max_store_writes: u32,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits {
            call_timeout: Duration::from_secs(1),
            max_memory_bytes: 64 << 20,
            max_table_elements: 20_000,
            max_produce_calls: 1_000,
            max_produce_bytes: 16 << 20,
            max_store_key_bytes: 1024,
            max_store_value_bytes: 1 << 20,
            max_store_writes: 1_000,
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

/// A limit a guest ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Memory {
        wanted: usize,
        limit: usize,
    },
    Table {
        wanted: usize,
        limit: usize,
    },
    ProduceCalls {
        limit: u32,
    },
    ProduceBytes {
        limit: usize,
    },
    StoreKey {
        len: usize,
        limit: usize,
    },
    StoreValue {
        len: usize,
        limit: usize,
    },
    StoreWrites {
        limit: u32,
    },
    /// The store could not be read (not the guest's fault).
    StoreUnavailable,
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
            LimitHit::ProduceCalls { limit } => write!(
                f,
                "produce limit exceeded: more than {limit} produce calls in one handle call"
            ),
            LimitHit::ProduceBytes { limit } => write!(
                f,
                "produce limit exceeded: more than {limit} bytes produced in one handle call"
            ),
            LimitHit::StoreKey { len, limit } => write!(
                f,
                "store limit exceeded: a key of {len} bytes, limit is {limit} (max_key_bytes)"
            ),
            LimitHit::StoreValue { len, limit } => write!(
                f,
                "store limit exceeded: a value of {len} bytes, limit is {limit} (max_value_bytes)"
            ),
            LimitHit::StoreUnavailable => write!(f, "store unavailable"),
            LimitHit::StoreWrites { limit } => write!(
                f,
                "store limit exceeded: more than {limit} writes in one handle call (max_writes)"
            ),
        }
    }
}

/// Enforces [`GuestLimits`] on memory and tables; the host API records
/// produce limit hits here too.
pub struct GuestLimiter {
    limits: GuestLimits,
    pub hit: Option<LimitHit>,
    /// Linear memory of the instance, in bytes (the largest size granted).
    pub memory: usize,
}

impl GuestLimiter {
    pub fn new(limits: GuestLimits) -> Self {
        GuestLimiter {
            limits,
            hit: None,
            memory: 0,
        }
    }

    /// A store read failed: end the call, classed as a store failure.
    pub fn store_failure(&mut self, reason: String) -> wasmtime::Error {
        self.hit = Some(LimitHit::StoreUnavailable);
        wasmtime::format_err!("store unavailable: {reason}")
    }

    /// Record `hit` and turn it into the trap that ends the call.
    pub fn trap(&mut self, hit: LimitHit) -> wasmtime::Error {
        self.hit = Some(hit);
        wasmtime::format_err!("{hit}")
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
            // Trap rather than return -1: guests rarely handle a failed
            // allocation gracefully, and a trap names the reason.
            return Err(self.trap(LimitHit::Memory {
                wanted: desired,
                limit,
            }));
        }
        self.memory = self.memory.max(desired);
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
            return Err(self.trap(LimitHit::Table {
                wanted: desired,
                limit,
            }));
        }
        Ok(true)
    }
}
