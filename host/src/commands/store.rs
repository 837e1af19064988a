//! `logpipe-host store get|scan|export`: what handlers stored, for
//! operators. Reads through the handlers' own [`StateStore`], read-only, so
//! it is safe while a host runs (it sees what is committed).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine as _;
use rusqlite::{Connection, OpenFlags};

use crate::cli::{StoreArgs, StoreGetArgs, StoreScanArgs};
use crate::state::{MAX_SCAN_LIMIT, Namespace, StateStore};

/// The store in `path`, refusing a file that has none.
fn open(path: &Path) -> anyhow::Result<StateStore> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let has_store: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'handler_state'",
            [],
            |row| row.get(0),
        )
        .with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(
        has_store,
        "{} has no handler store (table handler_state): is it a logpipe-host offsets file \
         written by a version with the store?",
        path.display()
    );
    Ok(StateStore::open(path)?)
}

fn base64(value: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(value)
}

/// Text when the value is UTF-8, else base64: the JSON line says which.
fn value_json(key: &str, value: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(value) {
        Ok(text) => serde_json::json!({ "key": key, "value": text }),
        Err(_) => serde_json::json!({ "key": key, "value_base64": base64(value) }),
    }
}

pub fn get(args: StoreGetArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.store.offsets.path)?;
    let namespace: Namespace = args.store.handler.as_str().into();
    let Some(value) = store.get(&namespace, &args.key)? else {
        eprintln!("no key {:?} in namespace {namespace:?}", args.key);
        return Ok(ExitCode::FAILURE);
    };
    let text = match std::str::from_utf8(&value) {
        Ok(text) => text.to_owned(),
        Err(_) => base64(&value),
    };
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(ExitCode::SUCCESS)
}

pub fn scan(args: StoreScanArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.store.offsets.path)?;
    print_pairs(
        &store,
        &args.store.handler,
        &args.prefix,
        args.after,
        Some(args.limit),
    )
}

pub fn export(args: StoreArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.offsets.path)?;
    print_pairs(&store, &args.handler, "", None, None)
}

/// Print pairs in key order, a page at a time, up to `limit` (all without).
fn print_pairs(
    store: &StateStore,
    namespace: &str,
    prefix: &str,
    mut after: Option<String>,
    limit: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let namespace: Namespace = namespace.into();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut left = limit.unwrap_or(u32::MAX);
    while left > 0 {
        let page = store.scan(
            &namespace,
            prefix,
            after.as_deref(),
            left.min(MAX_SCAN_LIMIT),
        )?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        left = left.saturating_sub(u32::try_from(page.len()).unwrap_or(u32::MAX));
        for (key, value) in &page {
            writeln!(out, "{}", value_json(key, value))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
