//! `--config`: precedence (CLI > env > file > default), django-logpipe
//! aliases, unknown keys, `config check`, `[[consumer]]` blocks, and topic
//! patterns that pick up topics created after the start.

use std::path::Path;
use std::time::Duration;

use logpipe_tests::*;

fn echo(n: usize, tag: &str) -> Vec<Raw> {
    (0..n)
        .map(|i| {
            Raw::keyed(
                &format!("k{i}"),
                format!(
                    r#"json:{{"type":"echo","version":1,"message":{{"tag":"{tag}","n":{i}}}}}"#
                ),
            )
        })
        .collect()
}

/// Outputs of the echo handler whose body carries `tag`.
fn echoed(broker: &Broker, tag: &str) -> usize {
    broker
        .read_all("echo-out")
        .iter()
        .filter(|r| r.value_text().contains(&format!(r#""tag":"{tag}""#)))
        .count()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

#[test]
fn command_line_beats_env_beats_file_beats_defaults() {
    let broker = Broker::start();
    let topic = unique("prec");
    broker.create_topic(&topic, 1);
    broker.create_topic("echo-out", 1);
    broker.produce(&topic, &echo(20, "prec"));
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("from-file.sqlite3");
    // The file's topic and bootstrap servers are wrong: the environment
    // and the command line must win over them. Its timeout (no default)
    // and offsets path are the only ones given, so they must apply.
    let config = write(
        work.path(),
        "logpipe.toml",
        &format!(
            "handlers = {}\ntopic = \"no-such-topic\"\nbootstrap-servers = \"127.0.0.1:1\"\n\
             consumer_timeout_ms = 1500\noffsets = {}\nproducer-id = \"from-file\"\n",
            toml_path(&example_handlers()),
            toml_path(&offsets),
        ),
    );
    let mut command = host();
    command
        .args(["run", "--config"])
        .arg(&config)
        .args(["--topic", &topic])
        .env("LOGPIPE_TOPIC", "also-not-this-one")
        .env("LOGPIPE_BOOTSTRAP_SERVERS", &broker.bootstrap);
    let run = finish(command, None, Duration::from_secs(120));
    run.assert_code(0);
    assert_eq!(run.count("handled"), 20);
    assert_eq!(stored_offsets(&offsets).get(&(topic.clone(), 0)), Some(&20));
    let out = broker.read_all("echo-out");
    assert_eq!(out.len(), 20);
    assert!(out[0].value_text().ends_with(r#","producer":"from-file"}"#));

    // config check names each value's source.
    let mut check = host();
    check
        .args(["config", "check", "--config"])
        .arg(&config)
        .env("LOGPIPE_BOOTSTRAP_SERVERS", &broker.bootstrap);
    let checked = finish(check, None, Duration::from_secs(30));
    checked.assert_code(0);
    let line = |key: &str| {
        checked
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in:\n{}", checked.stdout))
            .to_owned()
    };
    assert!(line("bootstrap-servers").ends_with("# env LOGPIPE_BOOTSTRAP_SERVERS"));
    assert!(line("consumer-timeout-ms").contains("\"1500\""));
    assert!(line("consumer-timeout-ms").ends_with("# file"));
    assert!(line("commit-interval-ms").ends_with("# default"));
    assert!(checked.stdout.contains("# config OK"));
}

#[test]
fn django_logpipe_settings_are_accepted_under_their_names() {
    let broker = Broker::start();
    let topic = unique("alias");
    broker.create_topic(&topic, 1);
    broker.create_topic("echo-out", 1);
    broker.produce(&topic, &echo(10, "alias"));
    let work = tempfile::tempdir().unwrap();
    // As copied from a Django settings module's LOGPIPE dict.
    let config = write(
        work.path(),
        "logpipe.toml",
        &format!(
            "handlers = {}\ntopic = {topic:?}\noffsets = {}\n\n[LOGPIPE]\n\
             KAFKA_BOOTSTRAP_SERVERS = [{:?}]\nPRODUCER_ID = \"migrated\"\n\
             DEFAULT_FORMAT = \"msgpack\"\nKAFKA_SEND_TIMEOUT = 5\nKAFKA_MAX_SEND_RETRIES = 2\n\
             MIN_MESSAGE_LAG_MS = 0\nKINESIS_FETCH_LIMIT = 25\n\
             KINESIS_SHARD_ITERATOR_TYPE = \"LATEST\"\n\
             KAFKA_CONSUMER_KWARGS = {{ client_id = \"svc\", consumer_timeout_ms = 1500, \
             auto_offset_reset = \"earliest\", sasl_plain_password = \"hunter2\" }}\n",
            toml_path(&example_handlers()),
            toml_path(&work.path().join("offsets.sqlite3")),
            broker.bootstrap,
        ),
    );
    let mut check = host();
    check.args(["config", "check", "--config"]).arg(&config);
    let checked = finish(check, None, Duration::from_secs(30));
    // sasl.password without a SASL mechanism is still a valid property set.
    checked.assert_code(0);
    for expected in [
        format!("bootstrap-servers = {:?}", broker.bootstrap),
        "kinesis-fetch-limit = \"25\"".to_owned(),
        "kinesis-iterator = \"LATEST\"".to_owned(),
        "format = \"msgpack\"".to_owned(),
        "\"client.id\" = \"svc\"".to_owned(),
        "\"message.timeout.ms\" = \"5000\"".to_owned(),
        "\"message.send.max.retries\" = \"2\"".to_owned(),
        "\"sasl.password\" = \"****\"".to_owned(),
    ] {
        assert!(
            checked.stdout.contains(&expected),
            "{expected:?} missing from:\n{}",
            checked.stdout
        );
    }
    assert!(!checked.stdout.contains("hunter2"));
    assert!(checked.stdout.lines().any(
        |l| l.starts_with("producer-id = \"migrated\"") && l.ends_with("# file (PRODUCER_ID)")
    ));

    // The run uses them: consumer_timeout_ms from the kwargs stops it,
    // PRODUCER_ID and DEFAULT_FORMAT shape the output.
    let mut command = host();
    command.args(["run", "--config"]).arg(&config);
    let run = finish(command, None, Duration::from_secs(120));
    run.assert_code(0);
    assert_eq!(run.count("handled"), 10);
    let out = broker.read_all("echo-out");
    assert_eq!(out.len(), 10);
    let decoded = logpipe_host::envelope::decode(&out[0].value).unwrap();
    assert_eq!(decoded.producer.as_deref(), Some("migrated"));
    assert!(out[0].value.starts_with(b"msgpack:"));
}

#[test]
fn bad_keys_and_values_are_named() {
    let work = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let config = write(work.path(), "bad.toml", text);
        let mut command = host();
        command.args(["config", "check", "--config"]).arg(&config);
        let done = finish(command, None, Duration::from_secs(30));
        assert_ne!(done.code(), Some(0), "accepted:\n{text}");
        done.stderr
    };
    let error = check("bootstrap-server = \"x:1\"\n");
    assert!(
        error.contains("unknown key `bootstrap-server` (did you mean `bootstrap-servers`?)"),
        "{error}"
    );
    let error = check("KAFKA_BOOTSTRAP_SERVER = [\"x:1\"]\n");
    assert!(
        error.contains("did you mean `KAFKA_BOOTSTRAP_SERVERS`?"),
        "{error}"
    );
    let error = check("handlers = \"h\"\ntopic = \"t\"\ncommit-interval-ms = \"soon\"\n");
    assert!(
        error.contains("`commit-interval-ms`: invalid value 'soon'"),
        "{error}"
    );
    let error = check("KAFKA_CONSUMER_KWARGS = { enable_auto_commit = false }\n");
    assert!(
        error.contains("enable_auto_commit has no equivalent"),
        "{error}"
    );
    let error = check("KAFKA_MAX_SEND_RETRIES = 0\n");
    assert!(error.contains("idempotent"), "{error}");
    let error =
        check("handlers = \"h\"\ntopic = \"t\"\n[kafka.consumer]\n\"fetch.min.byte\" = 1\n");
    assert!(error.contains("fetch.min.byte"), "{error}");
    // Per-invocation flags are not keys.
    let error = check("force = true\n");
    assert!(error.contains("unknown key `force`"), "{error}");
    let error = check("[[consumer]]\nname = \"a\"\nhandlers = \"h\"\n");
    assert!(error.contains("needs `topics`"), "{error}");
    let error = check("[[consumer]]\nname = \"a\"\ntopics = [\"t\"]\nhandler = \"h\"\n");
    assert!(error.contains("did you mean `handlers`?"), "{error}");
}

#[test]
fn config_keys_lists_every_option_once() {
    let mut command = host();
    command.args(["config", "keys"]);
    let done = finish(command, None, Duration::from_secs(30));
    done.assert_code(0);
    let keys: Vec<&str> = done
        .stdout
        .lines()
        .take_while(|l| !l.is_empty())
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for key in [
        "bootstrap-servers",
        "handlers",
        "topic",
        "offsets",
        "kinesis-region",
        "log",
    ] {
        assert_eq!(
            keys.iter().filter(|k| **k == key).count(),
            1,
            "{key} in {keys:?}"
        );
    }
    for not_a_key in ["force", "partition", "config", "help"] {
        assert!(!keys.contains(&not_a_key), "{not_a_key} listed");
    }
    assert!(done.stdout.contains("KAFKA_CONSUMER_KWARGS"));
}

#[test]
fn named_consumers_run_together_or_one_by_one() {
    let broker = Broker::start();
    let people = unique("people");
    let content = unique("content");
    broker.create_topic(&people, 2);
    broker.create_topic(&format!("{content}.articles"), 1);
    broker.create_topic("echo-out", 1);
    broker.produce(&people, &echo(30, "people"));
    broker.produce(&format!("{content}.articles"), &echo(12, "articles"));
    let work = tempfile::tempdir().unwrap();
    let handlers = toml_path(&example_handlers());
    let config = write(
        work.path(),
        "logpipe.toml",
        &format!(
            "bootstrap-servers = {:?}\nconsumer-timeout-ms = 1500\noffsets = {}\n\n\
             [[consumer]]\nname = \"people\"\ntopics = [{people:?}]\nhandlers = {handlers}\n\n\
             [[consumer]]\nname = \"content\"\nsource = \"kafka\"\ntopics = [\"{content}.*\"]\n\
             handlers = {handlers}\nignore_types = [\"person\"]\n",
            broker.bootstrap,
            toml_path(&work.path().join("offsets.sqlite3")),
        ),
    );
    let mut one = host();
    one.args(["run", "--consumer", "content", "--config"])
        .arg(&config);
    let done = finish(one, None, Duration::from_secs(120));
    done.assert_code(0);
    assert_eq!(echoed(&broker, "articles"), 12);
    assert_eq!(echoed(&broker, "people"), 0);
    let content_offsets = work.path().join("offsets.content.sqlite3");
    assert_eq!(
        stored_offsets(&content_offsets).get(&(format!("{content}.articles"), 0)),
        Some(&12)
    );

    broker.produce(&format!("{content}.articles"), &echo(3, "later"));
    let mut all = host();
    all.args(["run", "--config"]).arg(&config);
    let done = finish(all, None, Duration::from_secs(120));
    done.assert_code(0);
    // Both ran; the content consumer resumed after its first run.
    assert_eq!(echoed(&broker, "people"), 30);
    assert_eq!(echoed(&broker, "articles"), 12);
    assert_eq!(echoed(&broker, "later"), 3);
    assert_eq!(
        done.stdout
            .lines()
            .filter(|l| l.starts_with("summary: "))
            .count(),
        2
    );
    let people_offsets = stored_offsets(&work.path().join("offsets.people.sqlite3"));
    assert_eq!(people_offsets.values().sum::<i64>(), 30);

    let mut unknown = host();
    unknown
        .args(["run", "--consumer", "orders", "--config"])
        .arg(&config);
    let done = finish(unknown, None, Duration::from_secs(30));
    assert_eq!(done.code(), Some(1));
    assert!(
        done.stderr.contains("no [[consumer]] named \"orders\""),
        "{}",
        done.stderr
    );
    assert!(done.stderr.contains("people, content"), "{}", done.stderr);
}

#[test]
fn a_pattern_picks_up_topics_created_after_the_start() {
    let broker = Broker::start();
    let prefix = unique("news");
    broker.create_topic(&format!("{prefix}.sport"), 1);
    broker.create_topic("echo-out", 1);
    broker.produce(&format!("{prefix}.sport"), &echo(5, "sport"));
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let mut command = run_command(
        &broker,
        &example_handlers(),
        &format!("{prefix}.*"),
        &offsets,
    );
    // Dead letters on, and the group named like the topics: the
    // dead-letter topics match the pattern but must never be read.
    command.args([
        "--pattern-refresh-ms",
        "300",
        "--on-reject",
        "dlt",
        "--group-id",
        &prefix,
    ]);
    let running = Running::start(command);
    running.wait_for("topics matching the patterns", 1, Duration::from_secs(60));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while echoed(&broker, "sport") < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            running.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A topic created while the host runs, and one that does not match.
    broker.create_topic(&format!("{prefix}.weather"), 2);
    broker.create_topic(&format!("{prefix}-other"), 1);
    broker.produce(&format!("{prefix}.weather"), &echo(8, "weather"));
    broker.produce(&format!("{prefix}-other"), &echo(4, "other"));
    running.wait_for("new topics match the patterns", 1, Duration::from_secs(60));
    while echoed(&broker, "weather") < 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            running.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    running.terminate();
    let done = running.wait(Duration::from_secs(60));
    done.assert_code(0);
    assert_eq!(done.count("handled"), 13);
    assert_eq!(echoed(&broker, "other"), 0);
    let stored = stored_offsets(&offsets);
    assert_eq!(
        stored
            .get(&(format!("{prefix}.weather"), 0))
            .copied()
            .unwrap_or(0)
            + stored
                .get(&(format!("{prefix}.weather"), 1))
                .copied()
                .unwrap_or(0),
        8
    );
    assert!(
        !stored.keys().any(|(t, _)| t.ends_with(".dlt")),
        "a dead-letter topic was consumed: {stored:?}"
    );
    // They exist and match the pattern, so the exclusion was exercised.
    let dead_letters = format!("{prefix}.{prefix}.weather.dlt");
    assert!(broker.read_all(&dead_letters).is_empty());
}

/// The README's full example config is valid, as `config check` sees it.
#[test]
fn the_readme_example_config_checks() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let example = readme
        .split("### A full example")
        .nth(1)
        .and_then(|rest| rest.split("```toml\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("README has a full example config");
    let work = tempfile::tempdir().unwrap();
    let config = write(work.path(), "logpipe.toml", example);
    let mut command = host();
    command.args(["config", "check", "--config"]).arg(&config);
    let checked = finish(command, None, Duration::from_secs(30));
    checked.assert_code(0);
    for expected in [
        "[[consumer]] # people",
        "[[consumer]] # content",
        "[[consumer]] # orders",
        "offsets = \"/var/lib/logpipe/offsets.content.sqlite3\" # per consumer",
        "topic = \"content.*\"",
        "ignore-type = \"draft\"",
        "max-retries = \"0\"",
        "\"sasl.password\" = \"****\"",
        "\"security.protocol\" = \"SASL_SSL\"",
        "# config OK",
    ] {
        assert!(
            checked.stdout.contains(expected),
            "{expected:?} missing from:\n{}",
            checked.stdout
        );
    }
    assert!(!checked.stdout.contains("change-me"));
}

/// Consumers of one process share one /metrics and /health endpoint; one
/// that cannot start keeps /health at 503 and does not stop the others.
#[test]
fn consumers_share_health_and_a_broken_one_does_not_stop_the_others() {
    let broker = Broker::start();
    let good = unique("good");
    broker.create_topic(&good, 1);
    broker.create_topic("echo-out", 1);
    broker.produce(&good, &echo(25, "good"));
    let work = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let handlers = toml_path(&example_handlers());
    let config = write(
        work.path(),
        "logpipe.toml",
        &format!(
            "bootstrap-servers = {:?}\nconsumer-timeout-ms = 4000\nmetrics-addr = {addr:?}\n\
             offsets = {}\n\n\
             [[consumer]]\nname = \"good\"\ntopics = [{good:?}]\nhandlers = {handlers}\n\n\
             [[consumer]]\nname = \"broken\"\ntopics = [\"no-such-topic\"]\nhandlers = {handlers}\n",
            broker.bootstrap,
            toml_path(&work.path().join("offsets.sqlite3")),
        ),
    );
    let mut command = host();
    command.args(["run", "--config"]).arg(&config);
    let running = Running::start(command);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let body = loop {
        if std::net::TcpStream::connect(&addr).is_ok() {
            let (status, body) = http_get(&addr, "/health");
            // The failed consumer's component names the cause.
            if status == 503 && body.contains("consumer broken") && body.contains("no-such-topic") {
                break body;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no 503 naming the broken consumer; log:\n{}",
            running.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(body.contains("does not exist"), "{body}");
    let done = running.wait(Duration::from_secs(120));
    assert_eq!(done.code(), Some(1));
    assert!(
        done.stderr.contains("consumer \"broken\""),
        "{}",
        done.stderr
    );
    assert_eq!(echoed(&broker, "good"), 25);
}
