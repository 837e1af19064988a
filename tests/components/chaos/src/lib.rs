//! Test fixture: a "chaos" v1 handler that misbehaves on request.
//!
//! The body is `{"action": "...", ...}`; see [`Chaos::handle`] for the
//! actions. Used by the host's tests for reject/retry, traps, time, memory
//! and stack limits, produce errors and limits, and the sandbox (files,
//! environment, network, stdout/stderr).
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Calls served by this instance (see the "count" action).
static CALLS: AtomicU64 = AtomicU64::new(0);

/// Calls per id of the "flaky" action.
static FLAKY: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

use logpipe_sdk::{Context, HandleError, Handler, RawJson};

/// Fails the first `fails` calls for `id`, then succeeds, like a dependency
/// that comes back.
fn flaky(id: &str, fails: u32, ctx: &mut Context) -> Result<(), HandleError> {
    let mut seen = FLAKY.lock().unwrap_or_else(|e| e.into_inner());
    let calls = seen.entry(id.to_owned()).or_insert(0);
    *calls += 1;
    if *calls <= fails {
        return Err(HandleError::retry(format_args!(
            "flaky {id}: failure {calls} of {fails}"
        )));
    }
    ctx.info(format_args!("flaky {id}: succeeded on call {calls}"));
    Ok(())
}
use serde::Deserialize;

#[derive(Deserialize)]
struct Command {
    action: String,
    /// Destination for `produce` and `produce-to`.
    #[serde(default)]
    topic: Option<String>,
    /// Variable for `read-env`.
    #[serde(default)]
    name: Option<String>,
    /// Address for `connect`.
    #[serde(default)]
    addr: Option<String>,
    /// For `flaky`: how many calls fail before one succeeds.
    #[serde(default)]
    fails: u32,
    /// For `flaky`: which record this is (calls are counted per id).
    #[serde(default)]
    id: Option<String>,
    /// Store key for the `store-*` actions.
    #[serde(default)]
    key: Option<String>,
    /// Value for `store-put`.
    #[serde(default)]
    value: Option<String>,
    /// For `store-put`: what to do after the write (an action name).
    #[serde(default)]
    then: Option<String>,
    /// For `store-big` (value bytes) and `store-many` (writes).
    #[serde(default)]
    size: usize,
}

struct Chaos;

impl Handler for Chaos {
    const MESSAGE_TYPE: &'static str = "chaos";
    const VERSION: u32 = 1;
    // Raw, so that `produce` can forward the body byte for byte.
    type Message = RawJson;

    /// Actions:
    /// - `ok`: return `Ok`.
    /// - `reject` / `retry`: return that error ("asked to reject"/"asked to retry").
    /// - `panic`: panic (a trap, as the guest profile aborts on panic).
    /// - `loop`: spin forever (for the time limit).
    /// - `alloc`: allocate 1 MiB blocks forever (for the memory limit).
    /// - `recurse`: recurse without bound (ends in a wasm stack-overflow
    ///   trap, "call stack exhausted").
    /// - `produce-bad-json`: produce "{not json" to "chaos-out" and reject
    ///   with "produce failed: <host error>".
    /// - `produce`: produce the body unchanged as "chaos" v1 to `topic`, with
    ///   the record's key; a produce error becomes `retry`.
    /// - `produce-to`: like `produce`, but a produce error becomes reject
    ///   "produce failed: <host error>".
    /// - `produce-flood`: produce `{}` as "chaos" v1 to "chaos-out", unkeyed,
    ///   forever; the first produce error becomes reject
    ///   "produce failed: <host error>" (or the host traps the call).
    /// - `open-file`: read "/etc/passwd", list "/" and create
    ///   "/tmp/chaos-was-here"; retry "ALLOWED: <what>" if any succeeds,
    ///   else reject "denied: <first error>".
    /// - `read-env`: with a string field `name`, reject "env <name>=<value>"
    ///   if that variable is set, else reject "denied: env <name> not set".
    ///   Without `name`, retry "ALLOWED: env has <n> vars" if there are any
    ///   variables, else reject "denied: environment is empty".
    /// - `connect`: open a TCP connection to `addr` (default "127.0.0.1:9");
    ///   retry "ALLOWED: connected" on success, else reject "denied: <error>".
    /// - `print`: write "chaos stdout line" to stdout and "chaos stderr line"
    ///   to stderr, then return `Ok`.
    /// - `stamp`: produce `{"partition":P,"offset":O}` (where the record was
    ///   read) as "stamp" v1 to `topic` (default "stamps"), keyed as the
    ///   record; with an `id`, first fail like `flaky`.
    /// - `flaky`: return `retry` for the first `fails` calls with the same
    ///   `id`, then `Ok` (logging "flaky ID: succeeded on call N").
    /// - `count`: reject with "count N", N being the calls this instance has
    ///   served (1 for a fresh instance).
    /// - `store-put`: put `value` under `key`, then act as the action in
    ///   `then` would (default `ok`): a failed record's write is dropped.
    /// - `store-add`: read `key` as a decimal counter (0 when missing), add
    ///   one, store it, and log "store-add KEY = N".
    /// - `store-get`: reject "got VALUE" or "got nothing" for `key`.
    /// - `store-delete`: delete `key`.
    /// - `store-big`: put a value of `size` bytes under `key`.
    /// - `store-many`: put `size` distinct keys.
    /// - `store-scan`: reject with the keys under prefix `key`, comma-separated.
    /// - anything else: reject.
    fn handle(body: RawJson, ctx: &mut Context) -> Result<(), HandleError> {
        let cmd: Command = body
            .parse()
            .map_err(|err| HandleError::reject(format_args!("bad chaos command: {err}")))?;
        match cmd.action.as_str() {
            "ok" => Ok(()),
            "reject" => Err(HandleError::reject("asked to reject")),
            "retry" => Err(HandleError::retry("asked to retry")),
            "panic" => panic!("asked to panic"),
            "loop" => loop {
                // black_box keeps the loop observable, so it is not removed.
                black_box(());
            },
            "alloc" => {
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Non-zero fill so the pages are really written.
                    blocks.push(vec![0xA5; 1 << 20]);
                    black_box(&mut blocks);
                }
            }
            "recurse" => {
                let sum = recurse(0);
                Err(HandleError::reject(format_args!(
                    "recursion returned {sum}"
                )))
            }
            "produce-bad-json" => {
                match ctx.produce_json("chaos-out", "chaos", 1, ctx.key(), "{not json") {
                    Ok(()) => Err(HandleError::reject(
                        "produce failed: host accepted bad JSON",
                    )),
                    Err(err) => Err(HandleError::reject(format_args!("produce failed: {err}"))),
                }
            }
            "produce" => {
                let Some(topic) = cmd.topic else {
                    return Err(HandleError::reject("produce needs a \"topic\" field"));
                };
                ctx.produce_json(&topic, "chaos", 1, ctx.key(), body.as_str())?;
                Ok(())
            }
            "produce-to" => {
                let Some(topic) = cmd.topic else {
                    return Err(HandleError::reject("produce-to needs a \"topic\" field"));
                };
                ctx.produce_json(&topic, "chaos", 1, ctx.key(), body.as_str())
                    .map_err(|err| HandleError::reject(format_args!("produce failed: {err}")))
            }
            "produce-flood" => loop {
                if let Err(err) = ctx.produce_json("chaos-out", "chaos", 1, None, "{}") {
                    return Err(HandleError::reject(format_args!("produce failed: {err}")));
                }
            },
            "open-file" => open_file(),
            "read-env" => read_env(cmd.name.as_deref()),
            "connect" => connect(cmd.addr.as_deref().unwrap_or("127.0.0.1:9")),
            "flaky" => {
                let id = cmd.id.unwrap_or_default();
                flaky(&id, cmd.fails, ctx)
            }
            "stamp" => {
                // Where the record was read, for order checks.
                if let Some(id) = &cmd.id {
                    flaky(id, cmd.fails, ctx)?;
                }
                let topic = cmd.topic.as_deref().unwrap_or("stamps");
                let stamp = format!(
                    r#"{{"partition":{},"offset":{}}}"#,
                    ctx.partition(),
                    ctx.offset()
                );
                ctx.produce_json(topic, "stamp", 1, ctx.key(), &stamp)?;
                Ok(())
            }
            "count" => {
                // Calls this instance has served, to tell a long-lived
                // instance from a fresh one per record.
                let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
                Err(HandleError::reject(format_args!("count {calls}")))
            }
            "store-put" => {
                let key = cmd.key.unwrap_or_default();
                ctx.store()
                    .put(&key, cmd.value.unwrap_or_default().as_bytes());
                match cmd.then.as_deref().unwrap_or("ok") {
                    "ok" => Ok(()),
                    "reject" => Err(HandleError::reject("asked to reject after a write")),
                    "retry" => Err(HandleError::retry("asked to retry after a write")),
                    "panic" => panic!("asked to panic after a write"),
                    other => Err(HandleError::reject(format_args!("unknown then {other:?}"))),
                }
            }
            "store-add" => {
                let key = cmd.key.unwrap_or_default();
                let store = ctx.store();
                let current = store
                    .get(&key)
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                store.put(&key, (current + 1).to_string().as_bytes());
                ctx.debug(format_args!("store-add {key} = {}", current + 1));
                Ok(())
            }
            "store-get" => {
                let got = ctx.store().get(&cmd.key.unwrap_or_default());
                Err(HandleError::reject(match got {
                    Some(v) => format!("got {}", String::from_utf8_lossy(&v)),
                    None => "got nothing".to_owned(),
                }))
            }
            "store-delete" => {
                ctx.store().delete(&cmd.key.unwrap_or_default());
                Ok(())
            }
            "store-big" => {
                ctx.store()
                    .put(&cmd.key.unwrap_or_default(), &vec![b'x'; cmd.size]);
                Ok(())
            }
            "store-many" => {
                for n in 0..cmd.size {
                    ctx.store().put(&format!("many/{n}"), b"1");
                }
                Ok(())
            }
            "store-scan" => {
                let prefix = cmd.key.unwrap_or_default();
                let keys: Vec<String> = ctx
                    .store()
                    .scan(&prefix, None, 1000)
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect();
                Err(HandleError::reject(format_args!("keys {}", keys.join(","))))
            }
            "print" => {
                println!("chaos stdout line");
                eprintln!("chaos stderr line");
                Ok(())
            }
            other => Err(HandleError::reject(format_args!(
                "unknown action {other:?}"
            ))),
        }
    }
}

/// Per-frame values for `recurse`, read with volatile loads.
static FRAME_SEEDS: [u64; 32] = {
    let mut seeds = [0; 32];
    let mut i = 0;
    while i < seeds.len() {
        seeds[i] = 0x9E37_79B9_7F4A_7C15_u64.wrapping_mul(i as u64 + 1);
        i += 1;
    }
    seeds
};

/// Recurses until the wasm call stack overflows (wasmtime traps with "call
/// stack exhausted").
///
/// Each frame reads 32 values with volatile loads into separate locals
/// before the recursive call and folds them into its result after it.
/// Volatile loads cannot be moved past the call, and the fold is not
/// associative, so the call cannot become a loop and all 32 values stay live
/// across it: about 256 bytes of the native (Cranelift) stack per frame.
///
/// Nothing is kept in linear memory on purpose: an array (one indexed in a
/// loop, or whose address `black_box` takes) lives on the shadow stack, the
/// first 1 MiB of linear memory, and running out of that ends in an
/// out-of-bounds memory access trap instead of a stack overflow. The depth
/// test only keeps `unconditional_recursion` quiet; it is never true.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    macro_rules! frame {
        ($($value:ident = $index:literal),* $(,)?) => {{
            // SAFETY: valid, aligned references into an immutable static.
            $(let $value = unsafe { std::ptr::read_volatile(&FRAME_SEEDS[$index]) } ^ depth;)*
            if depth == u64::MAX {
                return 0;
            }
            let mut acc = recurse(depth + 1);
            $(acc = acc.rotate_left(7) ^ $value;)*
            acc
        }};
    }
    frame!(
        v0 = 0,
        v1 = 1,
        v2 = 2,
        v3 = 3,
        v4 = 4,
        v5 = 5,
        v6 = 6,
        v7 = 7,
        v8 = 8,
        v9 = 9,
        v10 = 10,
        v11 = 11,
        v12 = 12,
        v13 = 13,
        v14 = 14,
        v15 = 15,
        v16 = 16,
        v17 = 17,
        v18 = 18,
        v19 = 19,
        v20 = 20,
        v21 = 21,
        v22 = 22,
        v23 = 23,
        v24 = 24,
        v25 = 25,
        v26 = 26,
        v27 = 27,
        v28 = 28,
        v29 = 29,
        v30 = 30,
        v31 = 31,
    )
}

/// `open-file`: any filesystem access that works is a sandbox hole.
fn open_file() -> Result<(), HandleError> {
    let attempts: [(&str, std::io::Result<()>); 3] = [
        ("read /etc/passwd", std::fs::read("/etc/passwd").map(drop)),
        ("read_dir /", std::fs::read_dir("/").map(drop)),
        (
            "create /tmp/chaos-was-here",
            std::fs::File::create("/tmp/chaos-was-here").map(drop),
        ),
    ];
    let mut first_error = None;
    for (what, result) in attempts {
        match result {
            Ok(()) => return Err(HandleError::retry(format_args!("ALLOWED: {what}"))),
            Err(err) => {
                first_error.get_or_insert(format!("{what}: {err}"));
            }
        }
    }
    let first_error = first_error.unwrap_or_default();
    Err(HandleError::reject(format_args!("denied: {first_error}")))
}

/// `read-env`: reports what the guest can see of the environment.
fn read_env(name: Option<&str>) -> Result<(), HandleError> {
    let mut vars = std::env::vars();
    match name {
        Some(name) => match vars.find(|(key, _)| key == name) {
            Some((_, value)) => Err(HandleError::reject(format_args!("env {name}={value}"))),
            None => Err(HandleError::reject(format_args!(
                "denied: env {name} not set"
            ))),
        },
        None => match vars.count() {
            0 => Err(HandleError::reject("denied: environment is empty")),
            n => Err(HandleError::retry(format_args!(
                "ALLOWED: env has {n} vars"
            ))),
        },
    }
}

/// `connect`: a TCP connection that opens is a sandbox hole.
fn connect(addr: &str) -> Result<(), HandleError> {
    match std::net::TcpStream::connect(addr) {
        Ok(_) => Err(HandleError::retry("ALLOWED: connected")),
        Err(err) => Err(HandleError::reject(format_args!("denied: {err}"))),
    }
}

logpipe_sdk::export_handler!(Chaos);
