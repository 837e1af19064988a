"""Echo handler: re-sends every "echo" v1 body, unchanged, to "echo-out"."""
from logpipe_sdk import MessageHandler, export


@export
class Echo(MessageHandler):
    MESSAGE_TYPE = "echo"
    VERSION = 1

    def handle(self, message, ctx):
        # ctx.body_json is the body text as received: nothing is re-serialized.
        # A produce error (ProduceError) left uncaught becomes `retry`.
        ctx.produce_json("echo-out", "echo", 1, ctx.body_json, key=ctx.key)
