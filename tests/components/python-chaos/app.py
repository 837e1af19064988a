"""Test fixture: a "chaos" v1 handler that misbehaves on request; the Python
twin of tests/components/chaos (same actions and reasons, except where
noted).

The body is {"action": "...", ...}. Actions:

- "ok": return.
- "reject" / "retry": Reject("asked to reject") / Retry("asked to retry").
- "panic": raise an uncaught RuntimeError("asked to panic"), a trap; the
  traceback goes to stderr.
- "loop": spin forever (for the time limit).
- "alloc": allocate 1 MiB blocks (filled with 0xA5) forever (for the memory
  limit).
- "recurse": recurse without bound. Python raises RecursionError long before
  the wasm stack runs out, so this is an uncaught exception (a trap with
  "RecursionError" on stderr), not "call stack exhausted".
- "produce-bad-json": produce "{not json" to "chaos-out" and reject with
  "produce failed: <host error>" (or "produce failed: host accepted bad
  JSON").
- "produce": produce the body unchanged as "chaos" v1 to field "topic", with
  the record's key; a produce error becomes retry.
- "produce-to": like "produce", but a produce error becomes reject
  "produce failed: <host error>".
- "produce-flood": produce {} as "chaos" v1 to "chaos-out", unkeyed, forever;
  the first produce error becomes reject "produce failed: <host error>".
- "open-file": read /etc/passwd, list / and create /tmp/chaos-was-here; retry
  "ALLOWED: <what>" if any succeeds, else reject "denied: <first error>".
- "read-env": with a string field "name", reject "env NAME=VALUE" if set,
  else "denied: env NAME not set"; without it, retry "ALLOWED: env has N vars"
  if there are any, else reject "denied: environment is empty".
- "connect": TCP connect to field "addr" (default "127.0.0.1:9"); retry
  "ALLOWED: connected" on success, else reject "denied: <error>".
- "print": write "chaos stdout line" to stdout, "chaos stderr line" to stderr.
- "flaky": retry for the first "fails" calls with the same "id", then return
  (logging "flaky ID: succeeded on call N" at info).
- "store-add": read field "key" as a decimal counter (0 when missing), add
  one, store it; "store-get": reject "got VALUE" or "got nothing";
  "store-delete": delete it; "store-scan": reject "keys K1,K2,..." for the
  keys under prefix "key" (the same actions as the Rust chaos).
- "count": reject "count N", N being the "count" calls this instance has
  served (1 for a fresh instance).
- anything else: reject "unknown action 'NAME'".
"""
# Everything a call may need must be imported here, at build time: the
# component has no filesystem to import modules from at run time.
import encodings.idna  # noqa: F401  socket.getaddrinfo encodes host names with it
import os
import socket
import sys

from logpipe_sdk import MessageHandler, ProduceError, Reject, Retry, export

# Per component instance: a fresh instance starts from zero.
CALLS = 0  # "count" calls served
FLAKY = {}  # "flaky" calls per id

# Optional fields and their types (as in the Rust fixture's Command).
OPTIONAL_STRINGS = ("topic", "name", "addr", "id")


def command(message):
    if not isinstance(message, dict):
        raise Reject("bad chaos command: expected a JSON object")
    action = message.get("action")
    if not isinstance(action, str):
        raise Reject("bad chaos command: field `action` must be a string")
    for field in OPTIONAL_STRINGS:
        if not isinstance(message.get(field), (str, type(None))):
            raise Reject(f"bad chaos command: field `{field}` must be a string")
    fails = message.get("fails", 0)
    if fails is None:
        fails = 0
    if not isinstance(fails, int) or isinstance(fails, bool) or not 0 <= fails < 2**32:
        raise Reject("bad chaos command: field `fails` must be a u32")
    return action, message, fails


def recurse(depth):
    return recurse(depth + 1) + 1


def open_file():
    def read_passwd():
        with open("/etc/passwd", "rb") as f:
            f.read()

    def list_root():
        os.listdir("/")

    def create_tmp():
        with open("/tmp/chaos-was-here", "w"):
            pass

    first_error = None
    for what, attempt in (
        ("read /etc/passwd", read_passwd),
        ("read_dir /", list_root),
        ("create /tmp/chaos-was-here", create_tmp),
    ):
        try:
            attempt()
        except OSError as err:
            if first_error is None:
                first_error = f"{what}: {err}"
        else:
            raise Retry(f"ALLOWED: {what}")
    raise Reject(f"denied: {first_error}")


def read_env(name):
    if name is not None:
        value = os.environ.get(name)
        if value is not None:
            raise Reject(f"env {name}={value}")
        raise Reject(f"denied: env {name} not set")
    if os.environ:
        raise Retry(f"ALLOWED: env has {len(os.environ)} vars")
    raise Reject("denied: environment is empty")


def connect(addr):
    host, _, port = addr.rpartition(":")
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=1)
    except (OSError, ValueError) as err:
        raise Reject(f"denied: {err}") from None
    sock.close()
    raise Retry("ALLOWED: connected")


@export
class Chaos(MessageHandler):
    MESSAGE_TYPE = "chaos"
    VERSION = 1

    def handle(self, message, ctx):
        global CALLS
        action, cmd, fails = command(message)
        if action == "ok":
            return
        if action == "reject":
            raise Reject("asked to reject")
        if action == "retry":
            raise Retry("asked to retry")
        if action == "panic":
            raise RuntimeError("asked to panic")
        if action == "loop":
            while True:
                pass
        if action == "alloc":
            blocks = []
            while True:
                # Non-zero fill so the pages are really written.
                blocks.append(bytearray(b"\xa5") * (1 << 20))
        if action == "recurse":
            raise Reject(f"recursion returned {recurse(0)}")
        if action == "produce-bad-json":
            try:
                ctx.produce_json("chaos-out", "chaos", 1, "{not json", key=ctx.key)
            except ProduceError as err:
                raise Reject(f"produce failed: {err}") from None
            raise Reject("produce failed: host accepted bad JSON")
        if action in ("produce", "produce-to"):
            topic = cmd.get("topic")
            if topic is None:
                raise Reject(f'{action} needs a "topic" field')
            try:
                # The body as received, byte for byte.
                ctx.produce_json(topic, "chaos", 1, ctx.body_json, key=ctx.key)
            except ProduceError as err:
                if action == "produce-to":
                    raise Reject(f"produce failed: {err}") from None
                raise  # uncaught ProduceError: retry
            return
        if action == "produce-flood":
            while True:
                try:
                    ctx.produce_json("chaos-out", "chaos", 1, "{}")
                except ProduceError as err:
                    raise Reject(f"produce failed: {err}") from None
        if action == "open-file":
            open_file()
        if action == "read-env":
            read_env(cmd.get("name"))
        if action == "connect":
            connect(cmd.get("addr") or "127.0.0.1:9")
        if action == "print":
            print("chaos stdout line", flush=True)
            print("chaos stderr line", file=sys.stderr, flush=True)
            return
        if action == "flaky":
            id_ = cmd.get("id") or ""
            calls = FLAKY[id_] = FLAKY.get(id_, 0) + 1
            if calls <= fails:
                raise Retry(f"flaky {id_}: failure {calls} of {fails}")
            ctx.info(f"flaky {id_}: succeeded on call {calls}")
            return
        if action == "count":
            CALLS += 1
            raise Reject(f"count {CALLS}")
        key = cmd.get("key") or ""
        if action == "store-add":
            current = ctx.store.get(key)
            ctx.store.put(key, str(int(current or b"0") + 1))
            return
        if action == "store-get":
            value = ctx.store.get(key)
            raise Reject("got nothing" if value is None else f"got {value.decode()}")
        if action == "store-delete":
            ctx.store.delete(key)
            return
        if action == "store-scan":
            keys = [k for k, _ in ctx.store.scan(key, None, 1000)]
            raise Reject("keys " + ",".join(keys))
        raise Reject(f"unknown action {action!r}")
