//! `logpipe-host handlers list`: what a handlers folder holds, file by file,
//! with the reason for every file the host would refuse.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use super::run::build_runtime;
use crate::cli::HandlerArgs;
use crate::component::manifest::manifest_path;
use crate::component::{MessageSink, Produced, loader};
use crate::state::StateStore;

/// Listing never handles a record, so nothing is ever produced.
struct NoSink;

impl MessageSink for NoSink {
    fn send(&self, _: Produced<'_>) -> Result<(), String> {
        Err("not connected to a broker".into())
    }
}

struct Row {
    file: String,
    message_type: String,
    version: String,
    hash: String,
    manifest: &'static str,
    status: String,
}

pub fn list(args: HandlerArgs) -> anyhow::Result<ExitCode> {
    let runtime = build_runtime(
        &args,
        Arc::new(NoSink),
        Arc::new(StateStore::in_memory()),
        Arc::default(),
    )?;
    let mut rows = Vec::new();
    let mut owners: HashMap<(String, u32), Vec<usize>> = HashMap::new();
    for file in loader::component_files(&args.handlers)? {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let manifest = if manifest_path(&file).is_file() {
            "yes"
        } else {
            "-"
        };
        let row = match loader::load(&runtime, &file) {
            Ok(handler) => {
                owners
                    .entry((handler.message_type.clone(), handler.version))
                    .or_default()
                    .push(rows.len());
                Row {
                    file: name,
                    message_type: handler.message_type.clone(),
                    version: handler.version.to_string(),
                    hash: handler.hash[..12].to_owned(),
                    manifest,
                    status: "ok".to_owned(),
                }
            }
            Err(e) => Row {
                file: name,
                message_type: "-".into(),
                version: "-".into(),
                hash: "-".into(),
                manifest,
                status: format!("error: {e}"),
            },
        };
        rows.push(row);
    }
    // A clash refuses the start, so every file of the pair is marked.
    for ((message_type, version), indexes) in owners.into_iter().filter(|(_, i)| i.len() > 1) {
        let files: Vec<String> = indexes.iter().map(|&i| rows[i].file.clone()).collect();
        for &i in &indexes {
            let others: Vec<&str> = files
                .iter()
                .filter(|f| **f != rows[i].file)
                .map(String::as_str)
                .collect();
            rows[i].status = format!(
                "clash: {} also handles {message_type:?} v{version}",
                others.join(", ")
            );
        }
    }
    print_table(&rows);
    let all_ok = !rows.is_empty() && rows.iter().all(|r| r.status == "ok");
    if rows.is_empty() {
        eprintln!(
            "no handler components (*.wasm) in {}",
            args.handlers.display()
        );
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_table(rows: &[Row]) {
    let width = |f: fn(&Row) -> &str, title: &str| {
        rows.iter()
            .map(|r| f(r).len())
            .max()
            .unwrap_or(0)
            .max(title.len())
    };
    let w_file = width(|r| &r.file, "FILE");
    let w_type = width(|r| &r.message_type, "TYPE");
    let w_hash = width(|r| &r.hash, "HASH");
    println!(
        "{:w_file$}  {:w_type$}  {:7}  {:w_hash$}  {:8}  STATUS",
        "FILE", "TYPE", "VERSION", "HASH", "MANIFEST"
    );
    for r in rows {
        println!(
            "{:w_file$}  {:w_type$}  {:7}  {:w_hash$}  {:8}  {}",
            r.file, r.message_type, r.version, r.hash, r.manifest, r.status
        );
    }
}
