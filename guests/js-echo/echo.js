// Echo handler: re-sends every "echo" v1 body, unchanged, to "echo-out".
import { defineHandler } from "logpipe-sdk";

export const handler = defineHandler({
  messageType: "echo",
  version: 1,
  // The body text as received: never parsed, so nothing is re-serialized.
  raw: true,
  handle(body, ctx) {
    // Uncaught, a produce error (ProduceError) becomes `retry`.
    ctx.produceJson("echo-out", "echo", 1, body, ctx.key);
  },
});
