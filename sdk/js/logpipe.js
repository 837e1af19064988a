// Write logpipe-host message handlers in JavaScript.
//
// A handler is a WebAssembly component targeting the `logpipe-handler` world
// in wit/logpipe.wit, built with componentize-qjs (QuickJS, see
// scripts/guests/js.sh). This module hides the generated bindings: describe
// the handler with `defineHandler` and export the result as `handler` (the
// name of the WIT interface the component exports):
//
//     import { defineHandler, Reject } from "logpipe-sdk";
//
//     export const handler = defineHandler({
//       messageType: "greeting",
//       version: 1,
//       handle(message, ctx) {
//         if (typeof message?.name !== "string") throw new Reject("a greeting needs a name");
//         ctx.info(`hello, ${message.name}`);
//       },
//     });
//
// Outcomes of `handle(message, ctx)`:
//
// - returning (any value) is `ok`: the record may be committed once
//   everything it produced is delivered;
// - `throw new Reject(reason)`: the record is bad and is skipped;
// - `throw new Retry(reason)`: the record may succeed later and is not
//   committed;
// - an uncaught `ProduceError` (the host refused a `ctx.produce`) becomes
//   `retry` with the host's reason;
// - anything else thrown (TypeError, `new Error(...)`, ...) traps the
//   instance; the runtime writes the error and its stack to stderr, which
//   the host logs. The host treats a trap like `retry` and replaces the
//   instance.
//
// `message` is the body parsed with JSON.parse; a body that is not valid
// JSON is rejected ("invalid message body: ...") without calling `handle`.
// JSON.parse turns numbers into doubles (123456789012345678901234567890 and
// 1.50 do not survive a parse/stringify round trip): to forward a body
// unchanged use `ctx.bodyJson`, and pass `raw: true` to `defineHandler` to
// get the body text as `message` and skip the parse altogether.
//
// `handle` must be synchronous: the component is built without the
// component-model async ABI, so there is no event loop to settle a Promise.
//
// The QuickJS runtime has no `console`; this module installs one that writes
// to the host log (console.log/info -> info, debug, warn, error, trace) during
// a `handle` call. There is no filesystem, network, clock or environment:
// everything beyond computing goes through `ctx`.

import host from "logpipe:handler/host@0.1.0";
import storeApi from "logpipe:handler/store@0.1.0";

const U32_MAX = 0xffff_ffff;

/** Why a handler did not accept a record: throw `Reject` or `Retry`. */
export class HandleError extends Error {
  constructor(tag, reason) {
    reason = String(reason);
    super(reason);
    this.reason = reason;
    // The WIT `handle-error` value. componentize-qjs lowers an exception
    // thrown out of an export that returns `result` through its own
    // `payload` property.
    this.payload = { tag, val: reason };
  }
}

/** The message is bad and will never succeed: the host logs a warning, skips
 * the record and commits past it. */
export class Reject extends HandleError {
  constructor(reason) {
    super("reject", reason);
    this.name = "Reject";
  }
}

/** The message may succeed later: the host logs an error and does not commit
 * the record. */
export class Retry extends HandleError {
  constructor(reason) {
    super("retry", reason);
    this.name = "Retry";
  }
}

/** `ctx.produce` / `ctx.produceJson` sent nothing. `err.message` (also
 * `err.reason`) is the host's reason verbatim, or "cannot serialize message:
 * ..." when `produce` could not turn the body into JSON. Uncaught in
 * `handle`, it becomes `retry`; catch it to reject instead. */
export class ProduceError extends Error {
  constructor(reason) {
    reason = String(reason);
    super(reason);
    this.name = "ProduceError";
    this.reason = reason;
  }
}

const LEVELS = new Set(["trace", "debug", "info", "warn", "error"]);

function level(name) {
  const lower = typeof name === "string" ? name.toLowerCase() : name;
  if (lower === "warning") return "warn";
  if (!LEVELS.has(lower)) {
    throw new TypeError(
      `unknown log level ${JSON.stringify(name)}: use "trace", "debug", "info", "warn" or "error"`,
    );
  }
  return lower;
}

function text(value) {
  return typeof value === "string" ? value : String(value);
}

function checkVersion(version, what) {
  if (!Number.isInteger(version) || version < 0 || version > U32_MAX) {
    throw new TypeError(`${what} must be an integer in 0..=4294967295, got ${String(version)}`);
  }
}

/** The record being handled, and what a handler may do with the host.
 *
 * Read-only fields: `messageType`, `version` (always the handler's own);
 * `producer` (the envelope's sending application) or undefined; `key` (the
 * record key, invalid UTF-8 replaced by U+FFFD) or undefined; `source` (Kafka
 * topic or Kinesis stream); `partition` (Kafka partition as decimal text, or
 * Kinesis shard id); `offset` (Kafka offset as decimal text, or Kinesis
 * sequence number); `timestampMs` (ms since the epoch) or undefined;
 * `bodyJson` (the envelope `message` as received: compact JSON text). */
export class Context {
  constructor(envelope, hostApi = host) {
    const origin = envelope.origin ?? {};
    this.messageType = envelope.messageType;
    this.version = envelope.version;
    this.producer = envelope.producer ?? undefined;
    this.key = envelope.key ?? undefined;
    this.source = origin.source;
    this.partition = origin.partition;
    this.offset = origin.offset;
    this.timestampMs = origin.timestampMs ?? undefined;
    this.bodyJson = envelope.body;
    Object.defineProperty(this, "_host", { value: hostApi });
    /** The handler's key-value store (see `Store`). */
    this.store = new Store();
    Object.freeze(this);
  }

  /** Send `body` (anything JSON.stringify accepts) as a logpipe message of
   * `messageType`/`version` to `topic`, with record key `key` (undefined or
   * null: unkeyed). Throws ProduceError if the body cannot be serialized or
   * the host refuses it. Delivery is confirmed by the host before the current
   * record is committed. */
  produce(topic, messageType, version, body, key) {
    let bodyJson;
    try {
      bodyJson = JSON.stringify(body);
    } catch (err) {
      throw new ProduceError(`cannot serialize message: ${err?.message ?? err}`);
    }
    if (bodyJson === undefined) {
      throw new ProduceError(`cannot serialize message: ${typeof body} is not JSON`);
    }
    this.produceJson(topic, messageType, version, bodyJson, key);
  }

  /** Like `produce`, with the body given as JSON text, sent as is (the host
   * rejects text that is not JSON). */
  produceJson(topic, messageType, version, bodyJson, key) {
    checkVersion(version, "version");
    try {
      this._host.produce(text(topic), text(messageType), version, key == null ? null : text(key), text(bodyJson));
    } catch (err) {
      // The bindings throw an Error whose own `payload` is the WIT
      // `result::err` string (and `message` the same text).
      if (err !== null && typeof err === "object" && Object.hasOwn(err, "payload")) {
        throw new ProduceError(err.payload);
      }
      throw err;
    }
  }

  /** Write a line to the host's log, tagged with this handler and record.
   * `level`: "trace", "debug", "info", "warn" ("warning") or "error". */
  log(lvl, line) {
    this._host.log(level(lvl), text(line));
  }

  trace(line) {
    this._host.log("trace", text(line));
  }

  debug(line) {
    this._host.log("debug", text(line));
  }

  info(line) {
    this._host.log("info", text(line));
  }

  warn(line) {
    this._host.log("warn", text(line));
  }

  error(line) {
    this._host.log("error", text(line));
  }
}

/** UTF-8 bytes of a string (the runtime has no TextEncoder). */
function utf8Encode(value) {
  const bytes = [];
  for (const ch of String(value)) {
    const c = ch.codePointAt(0);
    if (c < 0x80) bytes.push(c);
    else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(bytes);
}

/** The string of UTF-8 bytes (invalid sequences become U+FFFD). */
function utf8Decode(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    const n = b < 0x80 ? 0 : b >= 0xf0 ? 3 : b >= 0xe0 ? 2 : b >= 0xc0 ? 1 : -1;
    let c = n === 0 ? b : n === 1 ? b & 31 : n === 2 ? b & 15 : b & 7;
    let ok = n >= 0 && i + n < bytes.length + (n === 0 ? 1 : 0);
    for (let k = 1; ok && k <= n; k++) {
      const next = bytes[i + k];
      if ((next & 0xc0) !== 0x80) ok = false;
      else c = (c << 6) | (next & 63);
    }
    out += ok ? String.fromCodePoint(c) : "\ufffd";
    i += ok ? n + 1 : 1;
  }
  return out;
}

/** The handler's key-value store, kept by the host with the consumer's
 * offsets (WIT `interface store`): writes made while handling a record are
 * committed with its offset, or dropped if the record is not handled; reads
 * see the handler's own writes at once. Keys are strings (ordered by their
 * UTF-8 bytes), values bytes; the `Text` and `Json` variants convert. Get it
 * as `ctx.store`. */
export class Store {
  constructor(api = storeApi) {
    Object.defineProperty(this, "_api", { value: api });
  }

  /** The value under `key` (Uint8Array), or undefined. */
  get(key) {
    return this._api.get(text(key)) ?? undefined;
  }

  /** Store `value` (Uint8Array, or a string stored as UTF-8). */
  put(key, value) {
    this._api.put(text(key), typeof value === "string" ? utf8Encode(value) : value);
  }

  /** Remove `key` (a missing key is fine). */
  delete(key) {
    this._api.delete(text(key));
  }

  /** Up to `limit` [key, value] pairs whose key starts with `prefix`, in key
   * order, after the key `after` when given. */
  scan(prefix = "", after = undefined, limit = 100) {
    return this._api.scan(text(prefix), after == null ? null : text(after), limit);
  }

  /** The value under `key` as text, or undefined. */
  getText(key) {
    const value = this.get(key);
    return value === undefined ? undefined : utf8Decode(value);
  }

  /** The value under `key` parsed as JSON, or undefined. */
  getJson(key) {
    const value = this.getText(key);
    return value === undefined ? undefined : JSON.parse(value);
  }

  /** Store `value` as JSON under `key`. */
  putJson(key, value) {
    this.put(key, JSON.stringify(value));
  }
}

function parse(body) {
  try {
    return JSON.parse(body);
  } catch (err) {
    throw new Reject(`invalid message body: ${err?.message ?? err}`);
  }
}

/** Parse the body and call `spec.handle`; returns, or throws a HandleError
 * (an uncaught ProduceError becomes Retry) or whatever else `handle` threw.
 * Exported for tests with a fake `hostApi` ({ produce, log }); outside a
 * component (e.g. in Node) map the "logpipe:handler/host@0.1.0" import to a
 * stub module first, e.g. with a `module.register` resolve hook. */
export function dispatch(spec, envelope, hostApi = host) {
  const ctx = new Context(envelope, hostApi);
  const message = spec.raw ? envelope.body : parse(envelope.body);
  let result;
  try {
    result = spec.handle(message, ctx);
  } catch (err) {
    if (err instanceof ProduceError) throw new Retry(err.reason);
    throw err;
  }
  if (result !== null && typeof result === "object" && typeof result.then === "function") {
    throw new TypeError("handle returned a Promise: handlers must be synchronous (no async/await)");
  }
}

/** Describe a handler and get the object to export as `handler`:
 *
 *     export const handler = defineHandler({ messageType, version, handle, raw });
 *
 * - `messageType` (non-empty string), `version` (integer 0..=4294967295):
 *   the (type, version) pair this handler takes; dispatch is by exact match.
 * - `handle(message, ctx)`: see the top of this file.
 * - `raw` (default false): pass the body text as `message` instead of
 *   parsing it. */
export function defineHandler({ messageType, version, handle, raw = false }) {
  if (typeof messageType !== "string" || messageType === "") {
    throw new TypeError("defineHandler: messageType must be a non-empty string");
  }
  checkVersion(version, "defineHandler: version");
  if (typeof handle !== "function") {
    throw new TypeError("defineHandler: handle must be a function (message, ctx) => void");
  }
  const spec = { handle, raw: Boolean(raw) };
  return Object.freeze({
    messageType: () => messageType,
    version: () => version,
    handle: (envelope) => dispatch(spec, envelope),
  });
}

// QuickJS has no console: route one to the host log (only usable inside a
// `handle` call; the build snapshot has no host to log to).
if (typeof globalThis.console === "undefined") {
  const line = (args) => args.map((arg) => (typeof arg === "string" ? arg : safeInspect(arg))).join(" ");
  const to = (lvl) => (...args) => host.log(lvl, line(args));
  globalThis.console = {
    log: to("info"),
    info: to("info"),
    debug: to("debug"),
    trace: to("trace"),
    warn: to("warn"),
    error: to("error"),
  };
}

function safeInspect(value) {
  if (value instanceof Error) {
    const stack = typeof value.stack === "string" ? value.stack.trimEnd() : "";
    return stack ? `${value}\n${stack}` : String(value);
  }
  try {
    const json = JSON.stringify(value);
    if (json !== undefined) return json;
  } catch {
    // cyclic or BigInt: fall through
  }
  return String(value);
}
