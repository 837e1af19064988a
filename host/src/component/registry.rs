//! All handlers of a `--handlers` folder, keyed by (message type, version).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use wasmtime::component::{HasSelf, Linker};

use super::bindings::LogpipeHandler;
use super::cache::content_hash;
use super::engine::Runtime;
use super::handler::{Handler, chain};
use super::host_api::HostState;

/// Why a handlers folder cannot be used. Every variant names the file(s).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read handlers folder {}: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("no handler components (*.wasm) in {}", dir.display())]
    Empty { dir: PathBuf },
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid WebAssembly component: {reason}", file.display())]
    NotAComponent { file: PathBuf, reason: String },
    #[error(
        "{} is not a logpipe handler (world logpipe:handler/logpipe-handler): {reason}",
        file.display()
    )]
    WrongWorld { file: PathBuf, reason: String },
    #[error("{} failed to say which message type and version it handles: {reason}", file.display())]
    Identify { file: PathBuf, reason: String },
    #[error(
        "{} and {} both handle type {message_type:?} version {version}; remove one",
        first.display(),
        second.display()
    )]
    Duplicate {
        message_type: String,
        version: u32,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("cannot set up the host functions: {0}")]
    Linker(String),
}

/// Where a record goes.
pub enum Route<'a> {
    Handler(&'a mut Handler),
    /// No handler declared this message type.
    UnknownType,
    /// The type is known, but not with this version.
    UnknownVersion {
        known: &'a [u32],
    },
}

/// The loaded handlers, and the runtime they run in (which must live as
/// long as they do: its epoch ticker enforces their deadlines).
pub struct Registry {
    runtime: Runtime,
    handlers: Vec<Handler>,
    by_pair: HashMap<(String, u32), usize>,
    versions: HashMap<String, Vec<u32>>,
}

impl Registry {
    /// Load every `*.wasm` file in `dir` (sorted by name). Any unusable file
    /// or a (type, version) claimed twice is an error: starting with a
    /// handler silently missing would skip its records.
    pub fn load(runtime: Runtime, dir: &Path) -> Result<Self, LoadError> {
        let linker = host_linker(&runtime)?;
        let mut handlers = Vec::new();
        for file in component_files(dir)? {
            handlers.push(load_one(&runtime, &linker, &file)?);
        }
        let mut registry = Registry {
            runtime,
            handlers: Vec::new(),
            by_pair: HashMap::new(),
            versions: HashMap::new(),
        };
        for handler in handlers {
            registry.insert(handler)?;
        }
        if registry.handlers.is_empty() {
            return Err(LoadError::Empty {
                dir: dir.to_path_buf(),
            });
        }
        Ok(registry)
    }

    fn insert(&mut self, handler: Handler) -> Result<(), LoadError> {
        let pair = (handler.message_type.clone(), handler.version);
        if let Some(&existing) = self.by_pair.get(&pair) {
            return Err(LoadError::Duplicate {
                message_type: pair.0,
                version: pair.1,
                first: self.handlers[existing].file.clone(),
                second: handler.file,
            });
        }
        let versions = self.versions.entry(pair.0.clone()).or_default();
        versions.push(pair.1);
        versions.sort_unstable();
        self.by_pair.insert(pair, self.handlers.len());
        self.handlers.push(handler);
        Ok(())
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn handlers(&self) -> &[Handler] {
        &self.handlers
    }

    /// Find the handler for a record's type and version (exact match).
    pub fn route(&mut self, message_type: &str, version: Option<u32>) -> Route<'_> {
        let Some(known) = self.versions.get(message_type) else {
            return Route::UnknownType;
        };
        let index = version.and_then(|v| self.by_pair.get(&(message_type.to_owned(), v)));
        match index {
            Some(&i) => Route::Handler(&mut self.handlers[i]),
            None => Route::UnknownVersion { known },
        }
    }
}

/// The linker every handler is instantiated with: our `host` interface plus
/// WASI preview 2, which components built by standard toolchains import
/// even when they never use it. What WASI may reach is decided per store
/// (see `HostState::new`): nothing.
fn host_linker(runtime: &Runtime) -> Result<Linker<HostState>, LoadError> {
    let mut linker = Linker::new(&runtime.engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
        .map_err(|e| LoadError::Linker(e.to_string()))?;
    LogpipeHandler::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
        .map_err(|e| LoadError::Linker(e.to_string()))?;
    Ok(linker)
}

fn component_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let read_dir_error = |source| LoadError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir_error)? {
        let path = entry.map_err(read_dir_error)?.path();
        if path.extension().is_some_and(|ext| ext == "wasm") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn load_one(
    runtime: &Runtime,
    linker: &Linker<HostState>,
    file: &Path,
) -> Result<Handler, LoadError> {
    let started = Instant::now();
    let bytes = std::fs::read(file).map_err(|source| LoadError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let hash = content_hash(&bytes);
    let (component, outcome) = runtime
        .cache
        .load(&runtime.engine, &bytes, &hash)
        .map_err(|e| LoadError::NotAComponent {
            file: file.to_path_buf(),
            reason: first_line(&e),
        })?;
    let name = file
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut handler = Handler::link(runtime, linker, &component, &name, file.to_path_buf(), hash)
        .map_err(|e| LoadError::WrongWorld {
        file: file.to_path_buf(),
        reason: first_line(&e),
    })?;
    handler.identify().map_err(|e| LoadError::Identify {
        file: file.to_path_buf(),
        reason: first_line(&e),
    })?;
    tracing::info!(
        handler = %handler.name,
        message_type = %handler.message_type,
        version = handler.version,
        hash = %&handler.hash[..12],
        elapsed = ?started.elapsed(),
        "loaded {} ({outcome})",
        file.display()
    );
    Ok(handler)
}

/// The error chain, cut to its first line (wasm backtraces span many).
fn first_line(error: &wasmtime::Error) -> String {
    chain(error).lines().next().unwrap_or_default().to_owned()
}
