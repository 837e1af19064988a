//! The WebAssembly side: one engine, compiled components, and the handlers
//! they implement.
//!
//! - [`engine`]: wasmtime configuration, the linker, the epoch ticker.
//! - [`limits`]: per-call and per-instance limits, and which one was hit.
//! - [`cache`]: precompiled components on disk, keyed by content hash.
//! - [`manifest`]: `NAME.toml` beside `NAME.wasm`: grants and overrides.
//! - [`host_api`]: the `host` interface guests import (`produce`, `log`).
//! - [`guest_output`]: guest stdout/stderr into the host log.
//! - [`handler`]: one loaded component and its live instance.
//! - [`loader`]: one file to a ready handler (off the hot path).
//! - [`registry`]: the handlers in service, by (type, version) and file.
//! - [`watcher`]: the handlers folder, watched for hot swaps.

pub mod bindings;
pub mod cache;
pub mod engine;
pub mod guest_output;
pub mod handler;
pub mod host_api;
pub mod limits;
pub mod loader;
pub mod manifest;
pub mod registry;
pub mod watcher;

pub use engine::{Runtime, RuntimeOptions};
pub use handler::{HandleOutcome, Handler};
pub use host_api::{MessageSink, ProduceSettings, Produced};
pub use limits::GuestLimits;
pub use loader::LoadError;
pub use registry::{Registry, Route};
