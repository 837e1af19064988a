//! No-op handler for `logpipe-host bench`: takes every "echo" v1 record and
//! does nothing with it, so a run measures the host and the call itself.
//! It declares echo's (type, version) so that the bench can run it and the
//! echo guest on the same records, each from its own handlers folder.
use logpipe_sdk::{Context, HandleError, Handler, RawJson};

struct Noop;

impl Handler for Noop {
    const MESSAGE_TYPE: &'static str = "echo";
    const VERSION: u32 = 1;
    // RawJson: the body is not parsed, so the guest's own work is nil.
    type Message = RawJson;

    fn handle(_body: RawJson, _ctx: &mut Context) -> Result<(), HandleError> {
        Ok(())
    }
}

logpipe_sdk::export_handler!(Noop);
