//! Turning one `.wasm` file (and its manifest) into a ready [`Handler`]:
//! read, hash, compile or load from the cache, link, and ask it which
//! (type, version) it handles. Used at start-up and by the folder watcher,
//! always off the hot path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::cache::{CacheOutcome, content_hash};
use super::engine::Runtime;
use super::handler::{Handler, chain};
use super::manifest::{self, ManifestError};

/// Why a component cannot be used. Every variant names the file(s).
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
    #[error(transparent)]
    Manifest(#[from] ManifestError),
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
}

/// What a file holds right now: the identity of a component and its
/// manifest, so an unchanged file is never reloaded.
pub fn identity_hash(wasm: &[u8], manifest: Option<&str>) -> String {
    match manifest {
        None => content_hash(wasm),
        Some(text) => {
            let mut hasher = Sha256::new();
            hasher.update(wasm);
            hasher.update(b"\0manifest\0");
            hasher.update(text.as_bytes());
            hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        }
    }
}

/// The `*.wasm` files of `dir`, sorted; hidden files are skipped.
pub fn component_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let read_dir_error = |source| LoadError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir_error)? {
        let path = entry.map_err(read_dir_error)?.path();
        let hidden = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with('.'));
        if !hidden && path.extension().is_some_and(|ext| ext == "wasm") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Load one component file into a handler.
pub fn load(runtime: &Arc<Runtime>, file: &Path) -> Result<Handler, LoadError> {
    let started = Instant::now();
    let bytes = std::fs::read(file).map_err(|source| LoadError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let manifest_text = manifest::read(file)?;
    let config = manifest::resolve(&runtime.defaults, file, manifest_text.as_deref())?;
    let component_hash = content_hash(&bytes);
    let (component, outcome) = runtime
        .cache
        .load(&runtime.engine, &bytes, &component_hash)
        .map_err(|e| LoadError::NotAComponent {
            file: file.to_path_buf(),
            reason: first_line(&e),
        })?;
    let name = file
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let hash = identity_hash(&bytes, manifest_text.as_deref());
    let mut handler = Handler::link(runtime, &component, &name, file.to_path_buf(), hash, config)
        .map_err(|e| LoadError::WrongWorld {
        file: file.to_path_buf(),
        reason: first_line(&e),
    })?;
    handler.identify().map_err(|e| LoadError::Identify {
        file: file.to_path_buf(),
        reason: first_line(&e),
    })?;
    log_loaded(&handler, outcome, started, manifest_text.is_some());
    Ok(handler)
}

fn log_loaded(handler: &Handler, outcome: CacheOutcome, started: Instant, manifest: bool) {
    tracing::info!(
        handler = %handler.name,
        message_type = %handler.message_type,
        version = handler.version,
        hash = %&handler.hash[..12],
        manifest,
        elapsed = ?started.elapsed(),
        "loaded {} ({outcome})",
        handler.file.display()
    );
}

/// The error chain on one line, whitespace collapsed and cut short: parser
/// errors and wasm backtraces span many lines.
fn first_line(error: &wasmtime::Error) -> String {
    const MAX: usize = 300;
    let text = chain(error)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
