// Test fixture: a "chaos" v1 handler that misbehaves on request; the
// JavaScript twin of tests/components/chaos (same actions and reasons, except
// where noted).
//
// The body is {"action": "...", ...}. Actions:
//
// - "ok": return.
// - "reject" / "retry": Reject("asked to reject") / Retry("asked to retry").
// - "panic": throw an uncaught Error("asked to panic"), a trap; the runtime
//   writes the error and its stack to stderr.
// - "loop": spin forever (for the time limit).
// - "alloc": allocate 1 MiB blocks (filled with 0xA5) forever (for the memory
//   limit).
// - "recurse": recurse without bound (ends in a wasm stack-overflow trap,
//   "call stack exhausted": QuickJS's own stack check does not fire first).
// - "produce-bad-json": produce "{not json" to "chaos-out" and reject with
//   "produce failed: <host error>" (or "produce failed: host accepted bad
//   JSON").
// - "produce": produce the body unchanged as "chaos" v1 to field "topic", with
//   the record's key; a produce error becomes retry.
// - "produce-to": like "produce", but a produce error becomes reject
//   "produce failed: <host error>".
// - "produce-flood": produce {} as "chaos" v1 to "chaos-out", unkeyed, forever;
//   the first produce error becomes reject "produce failed: <host error>".
// - "flaky": retry for the first "fails" calls with the same "id", then return
//   (logging "flaky ID: succeeded on call N" at info).
// - "store-add", "store-get", "store-delete", "store-scan": the store, as in
//   the Rust chaos (field "key").
// - "count": reject "count N", N being the "count" calls this instance has
//   served (1 for a fresh instance).
// - anything else: reject 'unknown action "NAME"'. That includes the Rust
//   fixture's sandbox probes "open-file", "read-env", "connect" and "print":
//   JavaScript in QuickJS has no filesystem, environment, socket or stdio API
//   to try them with.
import { defineHandler, ProduceError, Reject, Retry } from "logpipe-sdk";

// Per component instance: a fresh instance starts from zero.
let calls = 0; // "count" calls served
const flaky = new Map(); // "flaky" calls per id

// Optional string fields (as in the Rust fixture's Command).
const OPTIONAL_STRINGS = ["topic", "name", "addr", "id"];

function command(message) {
  if (message === null || typeof message !== "object" || Array.isArray(message)) {
    throw new Reject("bad chaos command: expected a JSON object");
  }
  if (typeof message.action !== "string") {
    throw new Reject("bad chaos command: field `action` must be a string");
  }
  for (const field of OPTIONAL_STRINGS) {
    if (message[field] != null && typeof message[field] !== "string") {
      throw new Reject(`bad chaos command: field \`${field}\` must be a string`);
    }
  }
  const fails = message.fails ?? 0;
  if (!Number.isInteger(fails) || fails < 0 || fails > 0xffff_ffff) {
    throw new Reject("bad chaos command: field `fails` must be a u32");
  }
  return { ...message, fails };
}

function recurse(depth) {
  return recurse(depth + 1) + 1;
}

export const handler = defineHandler({
  messageType: "chaos",
  version: 1,
  handle(message, ctx) {
    const cmd = command(message);
    switch (cmd.action) {
      case "ok":
        return;
      case "reject":
        throw new Reject("asked to reject");
      case "retry":
        throw new Retry("asked to retry");
      case "panic":
        throw new Error("asked to panic");
      case "loop":
        for (;;) {}
      case "alloc": {
        const blocks = [];
        for (;;) {
          // Non-zero fill so the pages are really written.
          blocks.push(new Uint8Array(1 << 20).fill(0xa5));
        }
      }
      case "recurse":
        throw new Reject(`recursion returned ${recurse(0)}`);
      case "produce-bad-json":
        try {
          ctx.produceJson("chaos-out", "chaos", 1, "{not json", ctx.key);
        } catch (err) {
          if (err instanceof ProduceError) throw new Reject(`produce failed: ${err.message}`);
          throw err;
        }
        throw new Reject("produce failed: host accepted bad JSON");
      case "produce":
      case "produce-to":
        if (cmd.topic == null) throw new Reject(`${cmd.action} needs a "topic" field`);
        try {
          // The body as received, byte for byte.
          ctx.produceJson(cmd.topic, "chaos", 1, ctx.bodyJson, ctx.key);
        } catch (err) {
          if (cmd.action === "produce-to" && err instanceof ProduceError) {
            throw new Reject(`produce failed: ${err.message}`);
          }
          throw err; // uncaught ProduceError: retry
        }
        return;
      case "produce-flood":
        for (;;) {
          try {
            ctx.produceJson("chaos-out", "chaos", 1, "{}");
          } catch (err) {
            if (err instanceof ProduceError) throw new Reject(`produce failed: ${err.message}`);
            throw err;
          }
        }
      case "flaky": {
        const id = cmd.id ?? "";
        const n = (flaky.get(id) ?? 0) + 1;
        flaky.set(id, n);
        if (n <= cmd.fails) throw new Retry(`flaky ${id}: failure ${n} of ${cmd.fails}`);
        ctx.info(`flaky ${id}: succeeded on call ${n}`);
        return;
      }
      case "count":
        calls += 1;
        throw new Reject(`count ${calls}`);
      case "store-add": {
        const current = ctx.store.getText(cmd.key ?? "") ?? "0";
        ctx.store.put(cmd.key ?? "", String(Number(current) + 1));
        return;
      }
      case "store-get": {
        const value = ctx.store.getText(cmd.key ?? "");
        throw new Reject(value === undefined ? "got nothing" : `got ${value}`);
      }
      case "store-delete":
        ctx.store.delete(cmd.key ?? "");
        return;
      case "store-scan":
        throw new Reject(`keys ${ctx.store.scan(cmd.key ?? "", null, 1000).map(([k]) => k).join(",")}`);
      default:
        throw new Reject(`unknown action ${JSON.stringify(cmd.action)}`);
    }
  },
});
