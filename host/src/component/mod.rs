//! The WebAssembly side: one engine, compiled components, and the handlers
//! they implement.
//!
//! - [`engine`]: wasmtime configuration, the epoch ticker behind per-call
//!   deadlines, and the limits every guest runs under.
//! - [`cache`]: precompiled components on disk, keyed by content hash.
//! - [`host_api`]: the `host` interface guests import (`produce`, `log`).
//! - [`guest_output`]: guest stdout/stderr into the host log.
//! - [`handler`]: one loaded component and its live instance.
//! - [`registry`]: every handler in a folder, keyed by (type, version).

pub mod bindings;
pub mod cache;
pub mod engine;
pub mod guest_output;
pub mod handler;
pub mod host_api;
pub mod registry;

pub use engine::{GuestLimits, Runtime};
pub use handler::{HandleOutcome, Handler};
pub use host_api::{MessageSink, ProduceSettings};
pub use registry::{LoadError, Registry, Route};
