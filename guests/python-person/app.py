"""Person handler: logpipe's `Person` example. Validates "person" v1 records
and indexes each as a "person-indexed" v1 message on "people-index"."""
import json
import re

from logpipe_sdk import MessageHandler, Reject, export

# 8-4-4-4-12 hex digits (either case), e.g. 6ba7b810-9dad-11d1-80b4-00c04fd430c8.
# Spelled out: \d and str.isdigit() would accept non-ASCII digits.
CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

# Unicode White_Space, what Rust's str::trim removes. str.strip() with no
# argument also strips U+001C..U+001F, which are not whitespace there.
WHITESPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005" \
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def quote(text):
    return json.dumps(text, ensure_ascii=False)


@export
class People(MessageHandler):
    MESSAGE_TYPE = "person"
    VERSION = 1

    def handle(self, message, ctx):
        # Bad data never becomes good: reject, so the record is skipped.
        if not isinstance(message, dict):
            raise Reject("invalid message body: expected a JSON object")
        for field in ("uuid", "first_name", "last_name"):
            if field not in message:
                raise Reject(f"invalid message body: missing field `{field}`")
            if not isinstance(message[field], str):
                raise Reject(f"invalid message body: field `{field}` must be a string")
        uuid = message["uuid"]
        if not CANONICAL_UUID.fullmatch(uuid):
            raise Reject(f"uuid {quote(uuid)} is not a canonical UUID")
        first_name, last_name = message["first_name"], message["last_name"]
        if not first_name.strip(WHITESPACE) or not last_name.strip(WHITESPACE):
            raise Reject("first_name and last_name must not be empty")
        indexed = {"uuid": uuid, "full_name": f"{first_name} {last_name}"}
        # A produce failure is transient: uncaught, ProduceError becomes `retry`.
        ctx.produce("people-index", "person-indexed", 1, indexed, key=uuid)
        ctx.debug(f"indexed {uuid} as {quote(indexed['full_name'])}")
