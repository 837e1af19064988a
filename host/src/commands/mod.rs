//! The subcommands, one file each. They take parsed CLI arguments and
//! return the process exit code; errors carry `anyhow` context for the
//! operator.

pub mod bench;
pub mod config;
pub mod dev;
pub mod handlers;
pub mod offsets;
pub mod produce;
pub mod run;
pub mod run_kinesis;
pub mod store;

/// Exit status when a record failed and its partition or shard was stopped.
pub const EXIT_RECORD_FAILED: u8 = 3;
