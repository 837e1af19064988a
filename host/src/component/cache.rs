//! Precompiled components on disk, keyed by content hash and engine.
//!
//! Compiling a component with Cranelift takes from milliseconds (C, Rust) to
//! seconds (Python, JavaScript); loading a precompiled artifact takes about a
//! millisecond. Artifacts are named `<sha256 of the .wasm>-<engine hash>.cwasm`
//! so a changed component or a different wasmtime build never picks up a
//! stale artifact.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where precompiled artifacts live; `None` disables caching.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
}

/// How a component was obtained, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Compiled,
    Uncached,
}

impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CacheOutcome::Hit => "loaded from cache",
            CacheOutcome::Compiled => "compiled and cached",
            CacheOutcome::Uncached => "compiled (cache disabled)",
        })
    }
}

/// The SHA-256 of a component's bytes, lower-case hex.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

impl ComponentCache {
    pub fn new(dir: Option<PathBuf>) -> Self {
        ComponentCache { dir }
    }

    /// `$XDG_CACHE_HOME/logpipe-host`, else `$HOME/.cache/logpipe-host`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(base.join("logpipe-host"))
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Load `bytes` (whose hash is `hash`) as a component, from the cache if
    /// an artifact for this engine exists, else by compiling it and storing
    /// the artifact. A cache that cannot be read or written only costs time.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        hash: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, bytes)?, CacheOutcome::Uncached));
        };
        let artifact = dir.join(format!("{hash}-{:016x}.cwasm", engine_hash(engine)));
        if artifact.is_file() {
            // SAFETY: the file was written by `store` below from
            // `Engine::precompile_component` of an engine with the same
            // compatibility hash, and wasmtime re-checks the header. The cache
            // directory must be as trusted as the binary itself.
            match unsafe { Component::deserialize_file(engine, &artifact) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => tracing::warn!(
                    artifact = %artifact.display(),
                    "ignoring unusable cached artifact: {e}"
                ),
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        // SAFETY: `compiled` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        if let Err(e) = store(dir, &artifact, &compiled) {
            tracing::warn!(dir = %dir.display(), "cannot write component cache: {e}");
        }
        Ok((component, CacheOutcome::Compiled))
    }
}

/// Write via a temporary file and rename: artifacts are memory-mapped by
/// running hosts, so an existing file must never be rewritten in place.
fn store(dir: &Path, artifact: &Path, compiled: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = artifact.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, compiled)?;
    std::fs::rename(&tmp, artifact)
}

fn engine_hash(engine: &Engine) -> u64 {
    // `DefaultHasher::new()` uses fixed keys, so the value is stable for a
    // given build of this binary, which is all an artifact needs.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}
