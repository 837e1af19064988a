//! Rust bindings for `wit/logpipe.wit`, generated at compile time.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "logpipe-handler",
    imports: {
        // `produce` may end the call with a trap when a per-call produce
        // limit is exceeded; everything else is an error the guest sees.
        "logpipe:handler/host.produce": trappable,
        // Store calls trap on a store limit or a database error.
        "logpipe:handler/store": trappable,
    },
});

pub use exports::logpipe::handler::handler::{Envelope, HandleError, Origin};
pub use logpipe::handler::host::Level;
