//! Rust bindings for `wit/logpipe.wit`, generated at compile time.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "logpipe-handler",
});

pub use exports::logpipe::handler::handler::{Envelope, HandleError, Origin};
pub use logpipe::handler::host::Level;
