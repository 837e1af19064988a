//! Handler costs, in process (no broker): compile time off the hot path,
//! and the per-record cost of a long-lived instance versus a fresh instance
//! per record, with and without the pooling allocator.
//!
//! Needs the guests: `scripts/build-guests`, then
//! `cargo bench -p logpipe-host --bench handlers`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logpipe_host::component::bindings::{Envelope, Origin};
use logpipe_host::component::cache::ComponentCache;
use logpipe_host::component::host_api::HostServices;
use logpipe_host::component::manifest::HandlerDefaults;
use logpipe_host::component::{
    HandleOutcome, MessageSink, ProduceSettings, Produced, Registry, Route, Runtime, RuntimeOptions,
};
use logpipe_host::envelope::Format;
use logpipe_host::state::StateStore;

struct Discard;

impl MessageSink for Discard {
    fn send(&self, _: Produced<'_>) -> Result<(), String> {
        Ok(())
    }
}

fn target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

fn runtime(pooling: bool) -> Arc<Runtime> {
    let services = HostServices {
        sink: Arc::new(Discard),
        produce: ProduceSettings {
            format: Format::Json,
            producer_id: None,
        },
        state: Arc::new(StateStore::in_memory()),
        metrics: Arc::default(),
    };
    let options = RuntimeOptions {
        defaults: HandlerDefaults::default(),
        cache: ComponentCache::new(None),
        pooling,
    };
    Runtime::new(options, services).expect("runtime")
}

fn envelope(message_type: &str, body: &str) -> Envelope {
    Envelope {
        message_type: message_type.into(),
        version: 1,
        producer: None,
        key: Some("key-1".into()),
        body: body.into(),
        origin: Origin {
            source: "bench".into(),
            partition: "0".into(),
            offset: "0".into(),
            timestamp_ms: None,
        },
    }
}

/// Mean cost of one `handle` call of `component` (message `message_type`)
/// in a folder with `manifest`, and the instance's linear memory after.
fn per_call(
    component: &Path,
    manifest: Option<&str>,
    pooling: bool,
    message_type: &str,
    body: &str,
    calls: u32,
) -> (Duration, Option<usize>) {
    let folder = tempfile::tempdir().expect("temp dir");
    std::fs::copy(component, folder.path().join("h.wasm")).expect("copy component");
    if let Some(text) = manifest {
        std::fs::write(folder.path().join("h.toml"), text).expect("manifest");
    }
    let mut registry = Registry::load(runtime(pooling), folder.path()).expect("load");
    let Route::Handler(handler) = registry.route(message_type, Some(1)) else {
        panic!("no handler for {message_type}");
    };
    let record = envelope(message_type, body);
    for _ in 0..calls / 10 {
        assert_eq!(handler.handle(&record), HandleOutcome::Handled);
    }
    let started = Instant::now();
    for _ in 0..calls {
        let outcome = handler.handle(&record);
        debug_assert_eq!(outcome, HandleOutcome::Handled);
    }
    (started.elapsed() / calls, handler.instance_memory())
}

fn compile_time(component: &Path) -> Duration {
    let bytes = std::fs::read(component).expect("read component");
    let runtime = runtime(false);
    let rounds = 3;
    let started = Instant::now();
    for _ in 0..rounds {
        runtime
            .engine
            .precompile_component(&bytes)
            .expect("compile");
    }
    started.elapsed() / rounds
}

fn main() {
    let echo = target().join("handlers/echo.wasm");
    let person = target().join("handlers/person.wasm");
    let chaos = target().join("test-components/chaos.wasm");
    for file in [&echo, &person, &chaos] {
        assert!(
            file.is_file(),
            "{} missing: run scripts/build-guests",
            file.display()
        );
    }
    println!("compile (Cranelift, off the hot path; cached afterwards)");
    for (name, file) in [("echo", &echo), ("person", &person), ("chaos", &chaos)] {
        let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        println!("  {name:<8} {size:>8} B  {:>10.1?}", compile_time(file));
    }
    let per_record = Some("isolation = \"per-record\"\n");
    let ok = r#"{"action":"ok"}"#;
    let store_add = r#"{"action":"store-add","key":"counter"}"#;
    let echo_body = r#"{"text":"hello","n":[1,2,3]}"#;
    println!("per-record cost of handle()");
    let rows = [
        (
            "chaos ok, reused instance",
            &chaos,
            None,
            false,
            "chaos",
            ok,
            200_000,
        ),
        (
            "chaos store-add (get + put, staged), reused",
            &chaos,
            None,
            false,
            "chaos",
            store_add,
            200_000,
        ),
        (
            "chaos ok, fresh instance (on-demand)",
            &chaos,
            per_record,
            false,
            "chaos",
            ok,
            5_000,
        ),
        (
            "chaos ok, fresh instance (pooling)",
            &chaos,
            per_record,
            true,
            "chaos",
            ok,
            20_000,
        ),
        (
            "echo + produce, reused instance",
            &echo,
            None,
            false,
            "echo",
            echo_body,
            200_000,
        ),
        (
            "echo + produce, fresh instance (pooling)",
            &echo,
            per_record,
            true,
            "echo",
            echo_body,
            20_000,
        ),
    ];
    for (label, file, manifest, pooling, message_type, body, calls) in rows {
        let (cost, _) = per_call(file, manifest, pooling, message_type, body, calls);
        println!("  {label:<44} {:>10.2} µs", cost.as_secs_f64() * 1e6);
    }
    per_language(per_record, echo_body);
}

/// The echo guest of every language built into target/guests/.
fn per_language(per_record: Option<&str>, body: &str) {
    println!("echo guest per language (reused instance; fresh instance with --pooling)");
    println!(
        "  {:<8} {:>10} {:>10} {:>12} {:>14} {:>12}",
        "language", "size", "compile", "handle()", "fresh+handle", "memory"
    );
    for language in ["rust", "python", "js", "c"] {
        let file = target().join("guests").join(language).join("echo.wasm");
        if !file.is_file() {
            println!("  {language:<8} not built (scripts/build-guests)");
            continue;
        }
        // Interpreted guests cost far more per call: fewer rounds.
        let (reused_calls, fresh_calls) = match language {
            "python" | "js" => (20_000, 300),
            _ => (200_000, 20_000),
        };
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let compile = {
            let bytes = std::fs::read(&file).expect("read component");
            let started = Instant::now();
            runtime(false)
                .engine
                .precompile_component(&bytes)
                .expect("compile");
            started.elapsed()
        };
        let (reused, memory) = per_call(&file, None, false, "echo", body, reused_calls);
        let (fresh, _) = per_call(&file, per_record, true, "echo", body, fresh_calls);
        println!(
            "  {language:<8} {:>8} KB {:>8.0?} {:>9.2} µs {:>11.1} µs {:>9} KiB",
            size / 1024,
            compile,
            reused.as_secs_f64() * 1e6,
            fresh.as_secs_f64() * 1e6,
            memory.unwrap_or(0) / 1024
        );
    }
}
