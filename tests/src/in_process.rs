//! Handlers loaded in this process, without a broker: for tests of the
//! sandbox and instance lifecycle, where calling `handle` directly is the
//! most precise check.

use std::sync::{Arc, Mutex};

use logpipe_host::component::bindings::{Envelope, Origin};
use logpipe_host::component::cache::ComponentCache;
use logpipe_host::component::host_api::HostServices;
use logpipe_host::component::manifest::HandlerDefaults;
use logpipe_host::component::{
    GuestLimits, Handler, MessageSink, ProduceSettings, Produced, Registry, Route, Runtime,
    RuntimeOptions,
};
use logpipe_host::envelope::Format;
use logpipe_host::state::StateStore;
use tempfile::TempDir;

/// One produced record: (topic, key, rendered envelope).
pub type Sent = (String, Option<String>, Vec<u8>);

/// Remembers what guests produced.
#[derive(Default)]
pub struct RecordingSink {
    pub sent: Mutex<Vec<Sent>>,
}

impl MessageSink for RecordingSink {
    fn send(&self, record: Produced<'_>) -> Result<(), String> {
        self.sent.lock().map_err(|e| e.to_string())?.push((
            record.topic.to_owned(),
            record.key.map(str::to_owned),
            record.payload,
        ));
        Ok(())
    }
}

/// A registry over a folder holding `component` as `NAME.wasm`, with
/// `manifest` as `NAME.toml` when given.
pub struct Loaded {
    pub folder: TempDir,
    pub registry: Registry,
    pub sink: Arc<RecordingSink>,
}

impl Loaded {
    pub fn new(
        component: &str,
        manifest: Option<&str>,
        limits: GuestLimits,
        pooling: bool,
    ) -> Self {
        Self::from_file(&crate::component(component), manifest, limits, pooling)
    }

    /// The same for a component file anywhere.
    pub fn from_file(
        file: &std::path::Path,
        manifest: Option<&str>,
        limits: GuestLimits,
        pooling: bool,
    ) -> Self {
        let folder = tempfile::tempdir().expect("temp dir");
        std::fs::copy(file, folder.path().join("guest.wasm")).expect("copy component");
        if let Some(text) = manifest {
            std::fs::write(folder.path().join("guest.toml"), text).expect("write manifest");
        }
        let sink = Arc::new(RecordingSink::default());
        let services = HostServices {
            sink: sink.clone(),
            produce: ProduceSettings {
                format: Format::Json,
                producer_id: None,
            },
            state: Arc::new(StateStore::in_memory()),
            metrics: Arc::default(),
        };
        let options = RuntimeOptions {
            defaults: HandlerDefaults {
                limits,
                policies: Default::default(),
            },
            cache: ComponentCache::new(Some(crate::root().join("target/test-component-cache"))),
            pooling,
        };
        let runtime = Runtime::new(options, services).expect("runtime");
        let registry = Registry::load(runtime, folder.path()).expect("load handlers");
        Loaded {
            folder,
            registry,
            sink,
        }
    }

    /// The handler of (message_type, version).
    pub fn handler(&mut self, message_type: &str, version: u32) -> &mut Handler {
        match self.registry.route(message_type, Some(version)) {
            Route::Handler(handler) => handler,
            _ => panic!("no handler for {message_type} v{version}"),
        }
    }
}

/// An envelope as the host hands it to a guest.
pub fn guest_envelope(message_type: &str, body: &serde_json::Value) -> Envelope {
    raw_envelope(message_type, &body.to_string(), Some("k"))
}

/// An envelope with the body text exactly as given.
pub fn raw_envelope(message_type: &str, body: &str, key: Option<&str>) -> Envelope {
    Envelope {
        message_type: message_type.into(),
        version: 1,
        producer: None,
        key: key.map(str::to_owned),
        body: body.to_owned(),
        origin: Origin {
            source: "in-process".into(),
            partition: "0".into(),
            offset: "0".into(),
            timestamp_ms: None,
        },
    }
}
