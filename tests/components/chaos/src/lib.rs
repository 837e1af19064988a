//! Test fixture: a "chaos" v1 handler that misbehaves on request.
//!
//! The body is `{"action": "...", ...}`; see [`Chaos::handle`] for the
//! actions. Used by the host's tests for reject/retry, traps, time and
//! memory limits and produce errors.
use std::hint::black_box;

use logpipe_sdk::{Context, HandleError, Handler, RawJson};
use serde::Deserialize;

#[derive(Deserialize)]
struct Command {
    action: String,
    /// Destination for `produce`.
    #[serde(default)]
    topic: Option<String>,
}

struct Chaos;

impl Handler for Chaos {
    const MESSAGE_TYPE: &'static str = "chaos";
    const VERSION: u32 = 1;
    // Raw, so that `produce` can forward the body byte for byte.
    type Message = RawJson;

    /// Actions:
    /// - `ok`: return `Ok`.
    /// - `reject` / `retry`: return that error ("asked to reject"/"asked to retry").
    /// - `panic`: panic (a trap, as the guest profile aborts on panic).
    /// - `loop`: spin forever (for the time limit).
    /// - `alloc`: allocate 1 MiB blocks forever (for the memory limit).
    /// - `produce-bad-json`: produce "{not json" to "chaos-out" and reject
    ///   with "produce failed: <host error>".
    /// - `produce`: produce the body unchanged as "chaos" v1 to `topic`, with
    ///   the record's key; a produce error becomes `retry`.
    /// - anything else: reject.
    fn handle(body: RawJson, ctx: &mut Context) -> Result<(), HandleError> {
        let cmd: Command = body
            .parse()
            .map_err(|err| HandleError::reject(format_args!("bad chaos command: {err}")))?;
        match cmd.action.as_str() {
            "ok" => Ok(()),
            "reject" => Err(HandleError::reject("asked to reject")),
            "retry" => Err(HandleError::retry("asked to retry")),
            "panic" => panic!("asked to panic"),
            "loop" => loop {
                // black_box keeps the loop observable, so it is not removed.
                black_box(());
            },
            "alloc" => {
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Non-zero fill so the pages are really written.
                    blocks.push(vec![0xA5; 1 << 20]);
                    black_box(&mut blocks);
                }
            }
            "produce-bad-json" => {
                match ctx.produce_json("chaos-out", "chaos", 1, ctx.key(), "{not json") {
                    Ok(()) => Err(HandleError::reject(
                        "produce failed: host accepted bad JSON",
                    )),
                    Err(err) => Err(HandleError::reject(format_args!("produce failed: {err}"))),
                }
            }
            "produce" => {
                let Some(topic) = cmd.topic else {
                    return Err(HandleError::reject("produce needs a \"topic\" field"));
                };
                ctx.produce_json(&topic, "chaos", 1, ctx.key(), body.as_str())?;
                Ok(())
            }
            other => Err(HandleError::reject(format_args!(
                "unknown action {other:?}"
            ))),
        }
    }
}

logpipe_sdk::export_handler!(Chaos);
