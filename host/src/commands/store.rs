//! `logpipe-host store get|scan|export`: what handlers stored, for
//! operators. Reads the database read-only, so it is safe while a host runs
//! (it sees what is committed).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine as _;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::cli::{StoreArgs, StoreGetArgs, StoreScanArgs};

fn open(path: &Path) -> anyhow::Result<Connection> {
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
    Ok(conn)
}

/// Text when the value is UTF-8, else base64: the JSON line says which.
fn value_json(key: &str, value: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(value) {
        Ok(text) => serde_json::json!({ "key": key, "value": text }),
        Err(_) => serde_json::json!({
            "key": key,
            "value_base64": base64::engine::general_purpose::STANDARD.encode(value),
        }),
    }
}

pub fn get(args: StoreGetArgs) -> anyhow::Result<ExitCode> {
    let conn = open(&args.store.offsets)?;
    let value: Option<Vec<u8>> = conn
        .query_row(
            r#"SELECT "value" FROM handler_state WHERE "namespace" = ?1 AND "key" = ?2"#,
            params![args.store.handler, args.key],
            |row| row.get(0),
        )
        .optional()
        .context("cannot read the store")?;
    let Some(value) = value else {
        eprintln!(
            "no key {:?} in namespace {:?}",
            args.key, args.store.handler
        );
        return Ok(ExitCode::FAILURE);
    };
    let mut out = std::io::stdout().lock();
    match std::str::from_utf8(&value) {
        Ok(text) => writeln!(out, "{text}")?,
        Err(_) => writeln!(
            out,
            "{}",
            base64::engine::general_purpose::STANDARD.encode(&value)
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn scan(args: StoreScanArgs) -> anyhow::Result<ExitCode> {
    let conn = open(&args.store.offsets)?;
    let after = args.after.as_deref().unwrap_or("");
    let mut stmt = conn.prepare(
        r#"SELECT "key", "value" FROM handler_state
           WHERE "namespace" = ?1 AND "key" >= ?2 AND "key" > ?3 ORDER BY "key""#,
    )?;
    let mut rows = stmt.query(params![args.store.handler, args.prefix, after])?;
    print_rows(&mut rows, &args.prefix, Some(args.limit))
}

pub fn export(args: StoreArgs) -> anyhow::Result<ExitCode> {
    let conn = open(&args.offsets)?;
    let mut stmt = conn.prepare(
        r#"SELECT "key", "value" FROM handler_state WHERE "namespace" = ?1 ORDER BY "key""#,
    )?;
    let mut rows = stmt.query(params![args.handler])?;
    print_rows(&mut rows, "", None)
}

fn print_rows(
    rows: &mut rusqlite::Rows<'_>,
    prefix: &str,
    limit: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u32;
    while let Some(row) = rows.next()? {
        if limit.is_some_and(|limit| printed >= limit) {
            break;
        }
        let key: String = row.get(0)?;
        if !key.starts_with(prefix) {
            break;
        }
        let value: Vec<u8> = row.get(1)?;
        writeln!(out, "{}", value_json(&key, &value))?;
        printed += 1;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
