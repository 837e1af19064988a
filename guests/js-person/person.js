// Person handler: logpipe's `Person` example. Validates "person" v1 records
// and indexes each as a "person-indexed" v1 message on "people-index".
import { defineHandler, Reject } from "logpipe-sdk";

// 8-4-4-4-12 hex digits (either case), e.g. 6ba7b810-9dad-11d1-80b4-00c04fd430c8.
const CANONICAL_UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

// Only Unicode White_Space, what Rust's str::trim removes (String.prototype.trim
// also strips U+FEFF and keeps U+0085).
const BLANK = /^\p{White_Space}*$/u;

export const handler = defineHandler({
  messageType: "person",
  version: 1,
  handle(person, ctx) {
    // Bad data never becomes good: reject, so the record is skipped.
    if (person === null || typeof person !== "object" || Array.isArray(person)) {
      throw new Reject("invalid message body: expected a JSON object");
    }
    for (const field of ["uuid", "first_name", "last_name"]) {
      if (!Object.hasOwn(person, field)) {
        throw new Reject(`invalid message body: missing field \`${field}\``);
      }
      if (typeof person[field] !== "string") {
        throw new Reject(`invalid message body: field \`${field}\` must be a string`);
      }
    }
    const { uuid, first_name, last_name } = person;
    if (!CANONICAL_UUID.test(uuid)) {
      throw new Reject(`uuid ${JSON.stringify(uuid)} is not a canonical UUID`);
    }
    if (BLANK.test(first_name) || BLANK.test(last_name)) {
      throw new Reject("first_name and last_name must not be empty");
    }
    const indexed = { uuid, full_name: `${first_name} ${last_name}` };
    // A produce failure is transient: uncaught, ProduceError becomes `retry`.
    ctx.produce("people-index", "person-indexed", 1, indexed, uuid);
    ctx.debug(`indexed ${uuid} as ${JSON.stringify(indexed.full_name)}`);
  },
});
