//! `logpipe-host bench` on a test broker: the table has every scenario's row
//! and every scenario counted exactly the pre-loaded records. Behaviour
//! only: the figures themselves are never asserted (this is a debug build).

use std::time::Duration;

use logpipe_tests::*;

const RECORDS: u64 = 2000;

/// The table rows whose scenario starts with `prefix`, as cells.
fn rows<'a>(stdout: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter(|rest| rest.starts_with(prefix))
        .map(|rest| rest.split('|').map(str::trim).collect())
        .collect()
}

#[test]
fn bench_counts_every_record_in_every_scenario() {
    let broker = Broker::start();
    let mut command = host();
    command.args([
        "bench",
        "--records",
        &RECORDS.to_string(),
        "--bootstrap-servers",
        &broker.bootstrap,
    ]);
    let finished = finish(command, None, Duration::from_secs(300));
    finished.assert_code(0);
    let out = &finished.stdout;
    for prefix in ["(a)", "(b)", "(c)"] {
        let found = rows(out, prefix);
        assert_eq!(found.len(), 1, "one {prefix} row in:\n{out}");
        // Columns: scenario, records, seconds, records/s, vs (a), wall s, peak RSS.
        assert_eq!(
            found[0][1],
            RECORDS.to_string(),
            "{prefix} records in:\n{out}"
        );
        assert!(
            found[0][6].ends_with("MiB (child)") || prefix == "(a)",
            "{out}"
        );
    }
    let in_process = rows(out, "(d)");
    assert_eq!(in_process.len(), 3, "three (d) rows in:\n{out}");
    for row in &in_process {
        assert_eq!(row[1], RECORDS.to_string(), "(d) records in:\n{out}");
    }
    assert!(
        out.contains(&format!("(c) output: {RECORDS} records in echo-out")),
        "the echo guest's output in:\n{out}"
    );
    for target in [
        "b/a = ",
        "c/a = ",
        "host overhead beyond the guest call = ",
        "peak RSS of `run` = ",
    ] {
        assert!(out.contains(target), "{target:?} in:\n{out}");
    }
    if host_bin().to_string_lossy().contains("/debug/") {
        assert!(
            out.contains("DEBUG"),
            "a debug build says its figures mean nothing:\n{out}"
        );
    }
}
