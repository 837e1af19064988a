//! Echo handler: re-sends every "echo" v1 body, byte for byte, to "echo-out".
use logpipe_sdk::{Context, HandleError, Handler, RawJson};

struct Echo;

impl Handler for Echo {
    const MESSAGE_TYPE: &'static str = "echo";
    const VERSION: u32 = 1;
    // RawJson keeps the body text as received: nothing is re-serialized.
    type Message = RawJson;

    fn handle(body: RawJson, ctx: &mut Context) -> Result<(), HandleError> {
        ctx.produce_json("echo-out", "echo", 1, ctx.key(), body.as_str())
            .map_err(HandleError::retry)
    }
}

logpipe_sdk::export_handler!(Echo);
