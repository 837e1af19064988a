// Types of logpipe.js (the "logpipe-sdk" module), for editors and tsc --checkJs.

/** Why a handler did not accept a record: throw `Reject` or `Retry`. */
export class HandleError extends Error {
  readonly reason: string;
  /** The WIT `handle-error` value the component returns. */
  readonly payload: { tag: "reject" | "retry"; val: string };
}
/** The message is bad and will never succeed: the record is skipped. */
export class Reject extends HandleError {
  constructor(reason: unknown);
}
/** The message may succeed later: the record is not committed. */
export class Retry extends HandleError {
  constructor(reason: unknown);
}
/** The host refused a produce (or the body could not be serialized);
 * uncaught in `handle`, it becomes `retry`. */
export class ProduceError extends Error {
  constructor(reason: unknown);
  readonly reason: string;
}

export type Level = "trace" | "debug" | "info" | "warn" | "warning" | "error";

/** The WIT `envelope` record, as the bindings pass it. */
export interface Envelope {
  messageType: string;
  version: number;
  producer: string | null | undefined;
  key: string | null | undefined;
  body: string;
  origin: {
    source: string;
    partition: string;
    offset: string;
    timestampMs: number | null | undefined;
  };
}

/** The record being handled, and what a handler may do with the host. */
export class Context {
  constructor(envelope: Envelope, hostApi?: HostApi);
  readonly messageType: string;
  readonly version: number;
  readonly producer: string | undefined;
  readonly key: string | undefined;
  readonly source: string;
  readonly partition: string;
  readonly offset: string;
  readonly timestampMs: number | undefined;
  /** The body as received (compact JSON text). */
  readonly bodyJson: string;
  /** The handler's key-value store. */
  readonly store: Store;
  /** JSON.stringify(body), then produceJson; throws ProduceError. */
  produce(topic: string, messageType: string, version: number, body: unknown, key?: string | null): void;
  /** Send JSON text as is; throws ProduceError. */
  produceJson(topic: string, messageType: string, version: number, bodyJson: string, key?: string | null): void;
  log(level: Level, text: unknown): void;
  trace(text: unknown): void;
  debug(text: unknown): void;
  info(text: unknown): void;
  warn(text: unknown): void;
  error(text: unknown): void;
}

/** The handler's key-value store (WIT `interface store`): writes commit
 * with the record's offset, or are dropped if it is not handled. */
export class Store {
  get(key: string): Uint8Array | undefined;
  put(key: string, value: Uint8Array | string): void;
  delete(key: string): void;
  scan(prefix?: string, after?: string | null, limit?: number): [string, Uint8Array][];
  getText(key: string): string | undefined;
  getJson(key: string): unknown;
  putJson(key: string, value: unknown): void;
}

/** The WIT `host` interface (for a fake one in tests). */
export interface HostApi {
  produce(topic: string, messageType: string, version: number, key: string | null, bodyJson: string): void;
  log(level: "trace" | "debug" | "info" | "warn" | "error", text: string): void;
}

export interface HandlerSpec<M = any> {
  /** The envelope `type` this handler takes (non-empty). */
  messageType: string;
  /** The envelope `version` this handler takes (0..=4294967295). */
  version: number;
  /** Pass the body text as `message` instead of JSON.parse(body). */
  raw?: boolean;
  /** Return to accept; throw Reject or Retry otherwise. Must be synchronous. */
  handle(message: M, ctx: Context): void;
}

/** The WIT `handler` export: `export const handler = defineHandler({...})`. */
export interface HandlerExport {
  messageType(): string;
  version(): number;
  handle(envelope: Envelope): void;
}

export function defineHandler<M = any>(spec: HandlerSpec<M>): HandlerExport;

/** Parse the body and call `spec.handle` (what the export does per record). */
export function dispatch(spec: { handle: HandlerSpec["handle"]; raw?: boolean }, envelope: Envelope, hostApi?: HostApi): void;
