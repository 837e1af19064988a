//! Watching `--handlers DIR` and preparing changes off the hot path.
//!
//! A file is acted on only once its size and modification time (and its
//! manifest's) have been stable for the settle time, so a component copied
//! in slowly is never loaded half-written; `cp x.wasm dir/.x.tmp && mv
//! dir/.x.tmp dir/x.wasm` is still the recommended way to deploy. Loading
//! (compile or cache, link, identify) and validation happen on this thread;
//! the consume loop receives finished [`Change`]s and applies them between
//! two records. `notify` events wake the watcher at once; a periodic rescan
//! covers file systems where events are lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use notify::{RecursiveMode, Watcher as _};

use super::engine::Runtime;
use super::handler::Handler;
use super::loader::{self, identity_hash};
use super::manifest;
use super::registry::ServedFile;

/// A change for the registry, ready to apply.
pub enum Change {
    /// Serve this handler for its file (new or changed).
    Upsert(Box<Handler>),
    /// The file is gone: stop serving it.
    Remove(PathBuf),
}

impl Change {
    /// The same change for another worker's registry.
    pub fn fork(&self) -> Change {
        match self {
            Change::Upsert(handler) => Change::Upsert(Box::new(handler.fork())),
            Change::Remove(file) => Change::Remove(file.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// How long a file must stay unchanged before it is loaded.
    pub settle: Duration,
    /// Full rescan interval, in case file-system events are missed.
    pub rescan: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            settle: Duration::from_millis(300),
            rescan: Duration::from_secs(2),
        }
    }
}

/// The running watcher; stops when dropped.
pub struct FolderWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _events: Option<notify::RecommendedWatcher>,
}

impl Drop for FolderWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Size and modification time of a component and of its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observation {
    wasm: (u64, Option<SystemTime>),
    manifest: Option<(u64, Option<SystemTime>)>,
}

fn observe(path: &Path) -> Option<Observation> {
    let stat = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    Some(Observation {
        wasm: stat(path)?,
        manifest: stat(&manifest::manifest_path(path)),
    })
}

struct Tracked {
    seen: Option<Observation>,
    since: Instant,
    /// The observation last acted on (loaded, found unchanged, or rejected).
    acted: Option<Observation>,
    /// What the registry serves for this file.
    served: Option<(String, (String, u32))>,
}

struct FolderState {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    options: WatchOptions,
    files: HashMap<PathBuf, Tracked>,
    /// (type, version) → file serving it.
    pairs: HashMap<(String, u32), PathBuf>,
    changes: Sender<Change>,
}

/// Start watching `dir`, which the registry currently serves as `served`.
pub fn watch(
    runtime: Arc<Runtime>,
    dir: &Path,
    served: Vec<ServedFile>,
    options: WatchOptions,
) -> std::io::Result<(FolderWatcher, Receiver<Change>)> {
    let (changes, received) = mpsc::channel();
    let (wake, woken) = mpsc::channel::<()>();
    let events = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Our own scan opens and reads the folder, which inotify reports as
        // access events: waking on those would rescan in a busy loop.
        let is_access = matches!(&event, Ok(e) if e.kind.is_access());
        if !is_access {
            let _ = wake.send(());
        }
    }) {
        Ok(mut watcher) => match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => Some(watcher),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "no file events, rescanning only: {e}");
                None
            }
        },
        Err(e) => {
            tracing::warn!("no file events, rescanning only: {e}");
            None
        }
    };
    let mut state = FolderState {
        runtime,
        dir: dir.to_path_buf(),
        options,
        files: HashMap::new(),
        pairs: HashMap::new(),
        changes,
    };
    for file in served {
        let pair = (file.message_type, file.version);
        state.pairs.insert(pair.clone(), file.file.clone());
        state.files.insert(
            file.file,
            Tracked {
                seen: None,
                since: Instant::now(),
                acted: None,
                served: Some((file.hash, pair)),
            },
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = thread::Builder::new()
        .name("handlers-watch".into())
        .spawn(move || state.run(&woken, &flag))?;
    Ok((
        FolderWatcher {
            stop,
            thread: Some(thread),
            _events: events,
        },
        received,
    ))
}

impl FolderState {
    fn run(&mut self, woken: &Receiver<()>, stop: &AtomicBool) {
        let mut next_rescan = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            let pending = self.files.values().any(|t| t.seen != t.acted);
            // Wake often enough to notice stop and settled files; otherwise
            // sleep until an event or the next rescan.
            let wait = if pending {
                self.options.settle / 3
            } else {
                next_rescan.saturating_duration_since(Instant::now())
            }
            .min(Duration::from_millis(200));
            let event = match woken.recv_timeout(wait) {
                Ok(()) => true,
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => false,
            };
            if event || pending || Instant::now() >= next_rescan {
                if !self.scan() {
                    return;
                }
                next_rescan = Instant::now() + self.options.rescan;
            }
        }
    }

    /// One pass over the folder. Returns false once nobody listens.
    fn scan(&mut self) -> bool {
        let present = match loader::component_files(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!("{e}");
                return true;
            }
        };
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|f| !present.contains(f))
            .cloned()
            .collect();
        for file in gone {
            if !self.forget(&file) {
                return false;
            }
        }
        for file in present {
            if !self.check(&file) {
                return false;
            }
        }
        true
    }

    fn forget(&mut self, file: &Path) -> bool {
        let Some(tracked) = self.files.remove(file) else {
            return true;
        };
        let Some((_, pair)) = tracked.served else {
            return true;
        };
        self.pairs.remove(&pair);
        tracing::info!(
            file = %file.display(), message_type = %pair.0, version = pair.1,
            "component removed; its records now follow the unknown type/version rule"
        );
        self.retry_refused();
        self.changes
            .send(Change::Remove(file.to_path_buf()))
            .is_ok()
    }

    /// A (type, version) was freed: files refused for clashing with it may
    /// now be served, so look at every refused file again.
    fn retry_refused(&mut self) {
        for tracked in self.files.values_mut().filter(|t| t.served.is_none()) {
            tracked.acted = None;
        }
    }

    fn check(&mut self, file: &Path) -> bool {
        let Some(now) = observe(file) else {
            return true;
        };
        let tracked = self.files.entry(file.to_path_buf()).or_insert(Tracked {
            seen: None,
            since: Instant::now(),
            acted: None,
            served: None,
        });
        if tracked.seen != Some(now) {
            tracked.seen = Some(now);
            tracked.since = Instant::now();
            return true;
        }
        if tracked.acted == Some(now) || tracked.since.elapsed() < self.options.settle {
            return true;
        }
        tracked.acted = Some(now);
        let served_hash = tracked.served.as_ref().map(|(hash, _)| hash.clone());
        if current_hash(file).is_some_and(|hash| Some(&hash) == served_hash.as_ref()) {
            return true;
        }
        self.reload(file)
    }

    fn reload(&mut self, file: &Path) -> bool {
        let handler = match loader::load(&self.runtime, file) {
            Ok(handler) => handler,
            Err(e) => {
                self.rejected(file);
                tracing::error!(
                    file = %file.display(),
                    "rejected component; the running version (if any) stays: {e}"
                );
                return true;
            }
        };
        let pair = (handler.message_type.clone(), handler.version);
        if let Some(owner) = self.pairs.get(&pair)
            && owner != file
        {
            self.rejected(file);
            tracing::error!(
                file = %file.display(),
                "rejected component; the running version (if any) stays: {} and {} both \
                 handle type {:?} version {}",
                owner.display(),
                file.display(),
                pair.0,
                pair.1
            );
            return true;
        }
        let mut freed = false;
        if let Some(tracked) = self.files.get_mut(file) {
            if let Some((_, old_pair)) = tracked.served.take() {
                freed = old_pair != pair;
                self.pairs.remove(&old_pair);
            }
            tracked.served = Some((handler.hash.clone(), pair.clone()));
        }
        if freed {
            self.retry_refused();
        }
        self.pairs.insert(pair, file.to_path_buf());
        self.changes.send(Change::Upsert(Box::new(handler))).is_ok()
    }
}

impl FolderState {
    /// Count a refused file under its component name (the file stem).
    fn rejected(&self, file: &Path) {
        let name = file.file_stem().unwrap_or_default().to_string_lossy();
        self.runtime
            .services
            .metrics
            .swap(&name, crate::metrics::SwapAction::Reject);
    }
}

/// The identity hash of what `file` holds now, if it can be read.
fn current_hash(file: &Path) -> Option<String> {
    let wasm = std::fs::read(file).ok()?;
    let manifest = manifest::read(file).ok()?;
    Some(identity_hash(&wasm, manifest.as_deref()))
}
