//! logpipe-host: runs logpipe message handlers as sandboxed WebAssembly
//! components over Kafka and Kinesis.
//!
//! Reading order for newcomers: `main.rs` and [`cli`] (the command line) →
//! [`commands`] (one file per subcommand) → [`kafka::consumer`] (the consume
//! loop and its offset rule; [`kinesis::source`] is its Kinesis twin) → [`dispatch`] (what happens to one record) →
//! [`envelope`] (the wire format) → [`component`] (the Wasm side) →
//! [`offsets`] (the SQLite store).

pub mod cli;
pub mod commands;
pub mod component;
pub mod config;
pub mod dispatch;
pub mod envelope;
pub mod kafka;
pub mod kinesis;
pub mod logging;
pub mod metrics;
pub mod offsets;
pub mod outbox;
pub mod policy;
pub mod progress;
pub mod state;
