//! What the host refuses at start, with an error naming the file or topic,
//! and the compiled-component cache.

use std::time::Duration;

use logpipe_tests::*;

const LIMIT: Duration = Duration::from_secs(120);

fn run_with(broker: &Broker, handlers: &std::path::Path, topic: &str) -> Finished {
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let mut command = run_command(broker, handlers, topic, &offsets);
    command.args(["--consumer-timeout-ms", "500"]);
    finish(command, None, LIMIT)
}

#[test]
fn refuses_two_components_with_the_same_type_and_version() {
    let broker = Broker::start();
    let topic = unique("dup");
    broker.create_topic(&topic, 1);
    let handlers = handlers_folder(&[("echo", "echo"), ("echo", "echo-again")]);
    let run = run_with(&broker, handlers.path(), &topic);
    run.assert_code(1);
    assert!(
        run.stderr.contains("echo.wasm") && run.stderr.contains("echo-again.wasm"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("both handle type \"echo\" version 1"),
        "{}",
        run.stderr
    );
}

#[test]
fn refuses_a_file_that_is_not_a_component() {
    let broker = Broker::start();
    let topic = unique("junk");
    broker.create_topic(&topic, 1);
    let handlers = handlers_folder(&[("echo", "echo")]);
    std::fs::write(handlers.path().join("junk.wasm"), b"\0asm not really").unwrap();
    let run = run_with(&broker, handlers.path(), &topic);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("junk.wasm is not a valid WebAssembly component"),
        "{}",
        run.stderr
    );
}

#[test]
fn refuses_a_component_of_another_world() {
    let broker = Broker::start();
    let topic = unique("world");
    broker.create_topic(&topic, 1);
    let handlers = handlers_folder(&[("not-a-handler", "other")]);
    let run = run_with(&broker, handlers.path(), &topic);
    run.assert_code(1);
    assert!(
        run.stderr.contains("other.wasm is not a logpipe handler"),
        "{}",
        run.stderr
    );
}

#[test]
fn refuses_an_empty_handlers_folder() {
    let broker = Broker::start();
    let topic = unique("empty");
    broker.create_topic(&topic, 1);
    let handlers = tempfile::tempdir().unwrap();
    let run = run_with(&broker, handlers.path(), &topic);
    run.assert_code(1);
    assert!(
        run.stderr.contains("no handler components (*.wasm)"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_topic_is_a_clear_error() {
    let broker = Broker::start();
    let handlers = handlers_folder(&[("echo", "echo")]);
    let run = run_with(&broker, handlers.path(), "no-such-topic");
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("topic \"no-such-topic\" does not exist"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_second_start_loads_components_from_the_cache() {
    let broker = Broker::start();
    let topic = unique("cache");
    broker.create_topic(&topic, 1);
    let cache = tempfile::tempdir().unwrap();
    let start = || {
        let work = tempfile::tempdir().unwrap();
        let offsets = work.path().join("offsets.sqlite3");
        let mut command = run_command(&broker, &example_handlers(), &topic, &offsets);
        command
            .env("LOGPIPE_CACHE_DIR", cache.path())
            .args(["--consumer-timeout-ms", "200"]);
        finish(command, None, LIMIT)
    };
    let first = start();
    first.assert_code(0);
    assert_eq!(
        first.stderr.matches("(compiled and cached)").count(),
        2,
        "{}",
        first.stderr
    );
    let second = start();
    second.assert_code(0);
    assert_eq!(
        second.stderr.matches("(loaded from cache)").count(),
        2,
        "{}",
        second.stderr
    );

    // A corrupt artifact costs a recompile, not a failure.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let third = start();
    third.assert_code(0);
    assert!(
        third.stderr.contains("ignoring unusable cached artifact"),
        "{}",
        third.stderr
    );
}

#[test]
fn handlers_list_shows_every_file_and_why_one_is_refused() {
    let handlers = handlers_folder(&[
        ("echo", "echo"),
        ("echo", "echo-copy"),
        ("person", "person"),
    ]);
    std::fs::write(handlers.path().join("junk.wasm"), b"junk").unwrap();
    std::fs::write(
        handlers.path().join("person.toml"),
        "[produce]\ntopics = [\"people-index\"]\n",
    )
    .unwrap();
    let mut command = host();
    command
        .args(["handlers", "list", "--handlers"])
        .arg(handlers.path());
    let listed = finish(command, None, LIMIT);
    listed.assert_code(1);
    let rows: Vec<&str> = listed.stdout.lines().collect();
    assert!(
        rows[0].starts_with("FILE") && rows[0].ends_with("STATUS"),
        "{}",
        listed.stdout
    );
    let row = |file: &str| {
        rows.iter()
            .find(|r| r.starts_with(file))
            .unwrap_or_else(|| panic!("no row for {file}:\n{}", listed.stdout))
            .to_string()
    };
    assert!(row("echo.wasm ").contains("clash: echo-copy.wasm also handles \"echo\" v1"));
    assert!(row("echo-copy.wasm").contains("clash: echo.wasm also handles \"echo\" v1"));
    assert!(
        row("junk.wasm").contains("error: ")
            && row("junk.wasm").contains("not a valid WebAssembly component")
    );
    let person = row("person.wasm");
    assert!(
        person.contains(" yes ") && person.ends_with(" ok"),
        "{person}"
    );

    std::fs::remove_file(handlers.path().join("junk.wasm")).unwrap();
    std::fs::remove_file(handlers.path().join("echo-copy.wasm")).unwrap();
    let mut command = host();
    command
        .args(["handlers", "list", "--handlers"])
        .arg(handlers.path());
    finish(command, None, LIMIT).assert_code(0);
}

#[test]
fn refuses_a_second_host_on_the_same_offsets_file() {
    let broker = Broker::start();
    let topic = unique("claimed");
    broker.create_topic(&topic, 1);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let mut first = run_command(&broker, &example_handlers(), &topic, &offsets);
    first.args(["--consumer-timeout-ms", "60000"]);
    let first = Running::start(first);
    first.wait_for("handlers ready", 1, LIMIT);

    let mut second = run_command(&broker, &example_handlers(), &topic, &offsets);
    second.args(["--consumer-timeout-ms", "500"]);
    let second = finish(second, None, LIMIT);
    second.assert_code(1);
    let expected = format!("pid {}", first.pid());
    assert!(
        second.stderr.contains("is in use by another logpipe-host")
            && second.stderr.contains(&expected),
        "{}",
        second.stderr
    );
    first.terminate();
    first.wait(LIMIT).assert_code(0);

    // Once the first host is gone, the file is free again.
    let mut third = run_command(&broker, &example_handlers(), &topic, &offsets);
    third.args(["--consumer-timeout-ms", "500"]);
    finish(third, None, LIMIT).assert_code(0);
}
