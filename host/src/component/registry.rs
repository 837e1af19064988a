//! The handlers in service, keyed by (message type, version) and by file.
//!
//! Owned by the consume loop: changes from the folder watcher are applied
//! between two records, so a record is handled entirely by one version.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::time::Instant;

use super::engine::Runtime;
use super::handler::Handler;
use super::loader::{self, LoadError};
use super::watcher::Change;
use crate::metrics::SwapAction;

/// Where a record goes.
pub enum Route<'a> {
    Handler(&'a mut Handler),
    /// No handler declared this message type.
    UnknownType,
    /// The type is known, but not with this version.
    UnknownVersion {
        known: Vec<u32>,
    },
}

/// A file the registry serves, as the folder watcher needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedFile {
    pub file: PathBuf,
    pub hash: String,
    pub message_type: String,
    pub version: u32,
}

pub struct Registry {
    /// Kept alive with the handlers: its epoch ticker enforces their
    /// deadlines.
    runtime: Arc<Runtime>,
    types: HashMap<String, BTreeMap<u32, Handler>>,
    files: HashMap<PathBuf, (String, u32)>,
    retired: Retired,
}

/// Replaced handlers are dropped on a thread of their own: freeing an
/// instance unmaps its memory, which can take milliseconds, and must not
/// pause handling.
#[derive(Clone)]
struct Retired(Option<Sender<Handler>>);

impl Retired {
    fn start() -> Self {
        let (sender, receiver) = mpsc::channel::<Handler>();
        let spawned = std::thread::Builder::new()
            .name("handlers-retired".into())
            .spawn(move || receiver.into_iter().for_each(drop));
        Retired(spawned.ok().map(|_| sender))
    }

    fn retire(&self, handler: Handler) {
        match &self.0 {
            Some(sender) => {
                if let Err(mpsc::SendError(handler)) = sender.send(handler) {
                    drop(handler);
                }
            }
            None => drop(handler),
        }
    }
}

impl Registry {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Registry {
            runtime,
            types: HashMap::new(),
            files: HashMap::new(),
            retired: Retired::start(),
        }
    }

    /// Load every `*.wasm` file in `dir` (sorted by name). Any unusable file
    /// or a (type, version) claimed twice is an error: starting with a
    /// handler silently missing would skip its records.
    pub fn load(runtime: Arc<Runtime>, dir: &Path) -> Result<Self, LoadError> {
        let mut registry = Registry::new(runtime);
        for file in loader::component_files(dir)? {
            let handler = loader::load(&registry.runtime, &file)?;
            registry.insert(handler)?;
        }
        if registry.files.is_empty() {
            return Err(LoadError::Empty {
                dir: dir.to_path_buf(),
            });
        }
        Ok(registry)
    }

    /// The same handlers for another worker: each gets an instance of its
    /// own on its first record (see [`Handler::fork`]).
    pub fn fork(&self) -> Registry {
        let types = self
            .types
            .iter()
            .map(|(name, versions)| {
                let versions = versions.iter().map(|(v, h)| (*v, h.fork())).collect();
                (name.clone(), versions)
            })
            .collect();
        Registry {
            runtime: self.runtime.clone(),
            types,
            files: self.files.clone(),
            retired: self.retired.clone(),
        }
    }

    /// Drop every live instance (a registry whose workers handle the
    /// records keeps only the compiled components).
    pub fn park(&mut self) {
        for versions in self.types.values_mut() {
            versions.values_mut().for_each(Handler::park);
        }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Serve `handler`, replacing what its file served before (possibly
    /// another type or version). Returns the replaced handler. A (type,
    /// version) served by another file is refused and nothing changes.
    pub fn insert(&mut self, handler: Handler) -> Result<Option<Handler>, LoadError> {
        let pair = (handler.message_type.clone(), handler.version);
        if let Some(owner) = self.file_serving(&pair.0, pair.1)
            && owner != handler.file
        {
            return Err(LoadError::Duplicate {
                message_type: pair.0,
                version: pair.1,
                first: owner,
                second: handler.file,
            });
        }
        let previous = self.remove(&handler.file);
        self.files.insert(handler.file.clone(), pair.clone());
        self.types
            .entry(pair.0)
            .or_default()
            .insert(pair.1, handler);
        Ok(previous)
    }

    /// Apply a change a worker's registry shares with the logged one (see
    /// [`Registry::apply`]): same outcome, said once.
    pub fn apply_quietly(&mut self, change: Change) {
        match change {
            Change::Upsert(handler) => {
                // A refusal leaves this registry as the logged one's.
                if let Ok(Some(previous)) = self.insert(*handler) {
                    self.retired.retire(previous);
                }
            }
            Change::Remove(file) => {
                if let Some(old) = self.remove(&file) {
                    self.retired.retire(old);
                }
            }
        }
    }

    /// Apply a change from the folder watcher, and log it with how long
    /// handling was paused for it.
    pub fn apply(&mut self, change: Change) {
        let paused = Instant::now();
        match change {
            Change::Upsert(handler) => {
                let (file, new_hash) = (handler.file.clone(), handler.hash.clone());
                let pair = format!("{:?} v{}", handler.message_type, handler.version);
                let name = handler.name.clone();
                let metrics = self.runtime.services.metrics.clone();
                match self.insert(*handler) {
                    Ok(previous) => {
                        let old_hash = previous.as_ref().map(|h| h.hash[..12].to_owned());
                        if let Some(previous) = previous {
                            self.retired.retire(previous);
                        }
                        metrics.swap(&name, SwapAction::Load);
                        tracing::info!(
                            file = %file.display(),
                            old_hash = old_hash.as_deref().unwrap_or("-"),
                            new_hash = &new_hash[..12],
                            pause_us = paused.elapsed().as_micros() as u64,
                            "swapped in handler for {pair}"
                        );
                    }
                    Err(e) => {
                        metrics.swap(&name, SwapAction::Reject);
                        tracing::error!("rejected component: {e}");
                    }
                }
            }
            Change::Remove(file) => {
                if let Some(old) = self.remove(&file) {
                    let old_hash = old.hash[..12].to_owned();
                    self.runtime
                        .services
                        .metrics
                        .swap(&old.name, SwapAction::Unload);
                    self.retired.retire(old);
                    tracing::info!(
                        file = %file.display(),
                        old_hash,
                        pause_us = paused.elapsed().as_micros() as u64,
                        "removed handler"
                    );
                }
            }
        }
    }

    /// Stop serving `file`; returns its handler.
    pub fn remove(&mut self, file: &Path) -> Option<Handler> {
        let (message_type, version) = self.files.remove(file)?;
        let versions = self.types.get_mut(&message_type)?;
        let handler = versions.remove(&version);
        if versions.is_empty() {
            self.types.remove(&message_type);
        }
        handler
    }

    fn file_serving(&self, message_type: &str, version: u32) -> Option<PathBuf> {
        self.types
            .get(message_type)?
            .get(&version)
            .map(|h| h.file.clone())
    }

    pub fn handlers(&self) -> impl Iterator<Item = &Handler> {
        self.types.values().flat_map(|versions| versions.values())
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// What is served, for the folder watcher's starting point.
    pub fn served(&self) -> Vec<ServedFile> {
        self.handlers()
            .map(|h| ServedFile {
                file: h.file.clone(),
                hash: h.hash.clone(),
                message_type: h.message_type.clone(),
                version: h.version,
            })
            .collect()
    }

    /// Find the handler for a record's type and version (exact match).
    pub fn route(&mut self, message_type: &str, version: Option<u32>) -> Route<'_> {
        let Some(versions) = self.types.get_mut(message_type) else {
            return Route::UnknownType;
        };
        let known: Vec<u32> = match version {
            Some(v) if versions.contains_key(&v) => Vec::new(),
            _ => versions.keys().copied().collect(),
        };
        match version.and_then(|v| versions.get_mut(&v)) {
            Some(handler) => Route::Handler(handler),
            None => Route::UnknownVersion { known },
        }
    }
}
