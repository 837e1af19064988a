//! Test fixture: a "swap" v1 handler built in two variants, for testing
//! that a handler can be replaced while records flow.
//!
//! Every record becomes one "swap-out" v1 message on "swap-out":
//! `{"marker": "v1" | "v2", "partition": "...", "offset": "...", "body": <input body>}`,
//! keyed by the input partition, so the outputs of one input partition land
//! in one output partition, in order. `marker` is "v2" when built with the
//! `v2` feature, else "v1". A produce error becomes `retry`.
use logpipe_sdk::{Context, HandleError, Handler, RawJson};
use serde::Serialize;

/// Which build handled the record.
const MARKER: &str = if cfg!(feature = "v2") { "v2" } else { "v1" };

#[derive(Serialize)]
struct SwapOut<'a> {
    marker: &'static str,
    partition: &'a str,
    offset: &'a str,
    /// The input body, embedded unchanged.
    body: RawJson,
}

logpipe_sdk::message!(SwapOut<'_>, "swap-out", 1);

struct Swap;

impl Handler for Swap {
    const MESSAGE_TYPE: &'static str = "swap";
    const VERSION: u32 = 1;
    type Message = RawJson;

    fn handle(body: RawJson, ctx: &mut Context) -> Result<(), HandleError> {
        let out = SwapOut {
            marker: MARKER,
            partition: ctx.partition(),
            offset: ctx.offset(),
            body,
        };
        ctx.produce("swap-out", &out, Some(ctx.partition()))
            .map_err(HandleError::retry)
    }
}

logpipe_sdk::export_handler!(Swap);
