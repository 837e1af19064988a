//! Test harness for the end-to-end tests: a real Kafka-API broker (tansu)
//! per test on 127.0.0.1, the real `logpipe-host` binary, the real guest
//! components built by `scripts/build-guests`.
//!
//! Everything here panics with a message on failure: it is test code.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tempfile::TempDir;

pub mod in_process;
pub mod kinesis;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `../shared/vectors/envelopes.json`, beside the repository.
pub fn shared_vectors() -> PathBuf {
    root().join("../shared/vectors/envelopes.json")
}

/// The host binary built by `cargo build -p logpipe-host` (scripts/test does it).
pub fn host_bin() -> PathBuf {
    let path = std::env::var_os("LOGPIPE_HOST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/debug/logpipe-host"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test (it builds the host and the guests)",
        path.display()
    );
    path
}

/// A component built by scripts/build-guests: an example handler
/// (target/handlers) or a test fixture (target/test-components).
pub fn component(name: &str) -> PathBuf {
    for dir in ["target/handlers", "target/test-components"] {
        let path = root().join(dir).join(format!("{name}.wasm"));
        if path.is_file() {
            return path;
        }
    }
    panic!("component {name}.wasm not built: run scripts/build-guests");
}

/// A fresh handlers folder holding copies of the named components, each
/// under the given file name (`("echo", "echo-copy")` copies echo.wasm to
/// echo-copy.wasm).
pub fn handlers_folder(components: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (component_name, file_stem) in components {
        std::fs::copy(
            component(component_name),
            dir.path().join(format!("{file_stem}.wasm")),
        )
        .expect("copy component");
    }
    dir
}

/// A topic name no other test uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

fn tansu_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(path);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let path = cargo_home.join("bin/tansu");
    assert!(
        path.is_file(),
        "tansu is not installed: run scripts/setup --broker"
    );
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A tansu broker with SQLite storage in a temporary folder, listening on
/// a free loopback port. Killed on drop.
pub struct Broker {
    child: Option<Child>,
    pub bootstrap: String,
    dir: TempDir,
}

impl Broker {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let bootstrap = format!("127.0.0.1:{}", free_port());
        let mut broker = Broker {
            child: None,
            bootstrap,
            dir,
        };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let url = format!("tcp://{}", self.bootstrap);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .expect("log file");
        // tansu takes the sqlite path relative to its working directory.
        let child = Command::new(tansu_bin())
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&self.bootstrap).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {}: {}",
                self.bootstrap,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.index_headers();
    }

    /// tansu 0.6.0's SQLite schema has no index on record headers, and its
    /// fetch looks the headers of every fetched record up one by one: once
    /// a topic holds records with headers (outbox output, retry and
    /// dead-letter copies), every fetch of every topic scans them all and
    /// consumption slows to a crawl. The index its own DDL lacks fixes that;
    /// tansu's behaviour is otherwise untouched.
    fn index_headers(&self) {
        let path = self.dir.path().join("tansu.db");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let done = rusqlite::Connection::open(&path).and_then(|conn| {
                conn.busy_timeout(Duration::from_secs(5))?;
                conn.execute_batch(
                    "CREATE INDEX IF NOT EXISTS logpipe_tests_header_record \
                     ON header (topition, offset_id)",
                )
            });
            match done {
                Ok(()) => return,
                // The table appears when tansu has run its DDL.
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot index tansu's headers: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Kill the broker (as a crash would); its data stays for
    /// [`Broker::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the broker again on the same port with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// Create a topic (tansu does not auto-create topics).
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let output = Command::new(tansu_bin())
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://{}", self.bootstrap))
            .args(["--partitions", &partitions.to_string(), name])
            .output()
            .expect("tansu topic create");
        assert!(
            output.status.success(),
            "tansu topic create {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Produce raw record values (already enveloped, or deliberately not)
    /// and wait for all acknowledgements.
    pub fn produce(&self, topic: &str, records: &[Raw]) {
        produce_to(&self.bootstrap, topic, records);
    }

    /// Every record of `topic`, read from the beginning to the high
    /// watermark of each partition, ordered by partition then offset.
    pub fn read_all(&self, topic: &str) -> Vec<Record> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", "logpipe-tests-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        assert!(!partitions.is_empty(), "topic {topic} has no partitions");
        let mut ends = BTreeMap::new();
        let mut assignment = TopicPartitionList::new();
        for &p in &partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            if high > low {
                ends.insert(p, high);
                assignment
                    .add_partition_offset(topic, p, Offset::Offset(low))
                    .expect("assign");
            }
        }
        let mut records = Vec::new();
        if ends.is_empty() {
            return records;
        }
        consumer.assign(&assignment).expect("assign");
        let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while ends
            .iter()
            .any(|(p, end)| positions.get(p).copied().unwrap_or(0) < *end)
        {
            assert!(Instant::now() < deadline, "timed out reading {topic}");
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                // Count every offset once, however often it is delivered.
                if positions
                    .get(&m.partition())
                    .is_some_and(|&next| m.offset() < next)
                {
                    continue;
                }
                positions.insert(m.partition(), m.offset() + 1);
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
        records.sort_by_key(|r| (r.partition, r.offset));
        records
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Produce `records` to `topic` on the broker at `bootstrap` and wait for
/// all acknowledgements. Usable from any thread.
pub fn produce_to(bootstrap: &str, topic: &str, records: &[Raw]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for raw in records {
        let mut record = BaseRecord::to(topic).payload(&raw.value);
        if let Some(key) = &raw.key {
            record = record.key(key);
        }
        if let Some(partition) = raw.partition {
            record = record.partition(partition);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("test records acknowledged");
}

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct Raw {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

impl Raw {
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        Raw {
            value: value.into(),
            ..Raw::default()
        }
    }

    pub fn keyed(key: &str, value: impl Into<Vec<u8>>) -> Self {
        Raw {
            key: Some(key.as_bytes().to_vec()),
            value: value.into(),
            ..Raw::default()
        }
    }

    pub fn on(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    pub fn key_text(&self) -> Option<String> {
        self.key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }

    pub fn value_text(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }

    /// The last header named `key`, as text.
    pub fn header(&self, key: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// A `logpipe-host` command with a clean environment: no inherited
/// `LOGPIPE_*` settings, the shared test component cache, plain logs.
pub fn host() -> Command {
    let mut command = Command::new(host_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LOGPIPE_") {
            command.env_remove(key);
        }
    }
    command
        .env(
            "LOGPIPE_CACHE_DIR",
            root().join("target/test-component-cache"),
        )
        .env("LOGPIPE_LOG", "info")
        .stdin(Stdio::null());
    command
}

/// `logpipe-host run` of `handlers` on `topic`, offsets in `offsets`; add
/// more flags to the returned command.
pub fn run_command(broker: &Broker, handlers: &Path, topic: &str, offsets: &Path) -> Command {
    let mut command = host();
    command
        .arg("run")
        .arg("--handlers")
        .arg(handlers)
        .args(["--topic", topic, "--bootstrap-servers", &broker.bootstrap])
        .arg("--offsets")
        .arg(offsets);
    command
}

/// The example handlers built by scripts/build-guests (person, echo).
pub fn example_handlers() -> PathBuf {
    root().join("target/handlers")
}

/// A finished host process.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The `summary:` line's `name=value` pairs.
    pub fn summary(&self) -> BTreeMap<String, String> {
        let line = self
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("summary: "))
            .unwrap_or_else(|| {
                panic!(
                    "no summary line in stdout:\n{}\nstderr:\n{}",
                    self.stdout, self.stderr
                )
            });
        line.split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// One count from the summary line.
    pub fn count(&self, name: &str) -> u64 {
        self.summary()
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in summary"))
            .parse()
            .expect("count is a number")
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "exit status\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Run a command to completion (killing it after `limit`), feeding `stdin`.
pub fn finish(mut command: Command, stdin: Option<&[u8]>, limit: Duration) -> Finished {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().expect("spawn logpipe-host");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).expect("write stdin");
    }
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "logpipe-host ran longer than {limit:?}; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Stored next offsets by (topic, partition), read from the host's SQLite file.
pub fn stored_offsets(path: &Path) -> BTreeMap<(String, i32), i64> {
    if !path.exists() {
        return BTreeMap::new();
    }
    let conn = rusqlite::Connection::open(path).expect("open offsets");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    // The host may have created the file but not yet the table.
    let Ok(mut stmt) = conn.prepare(r#"SELECT "topic", "partition", "offset" FROM kafka_offsets"#)
    else {
        return BTreeMap::new();
    };
    stmt.query_map([], |row| Ok(((row.get(0)?, row.get(1)?), row.get(2)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("offsets")
}

/// A logpipe JSON envelope, as django-logpipe renders it.
pub fn envelope(message_type: &str, version: u32, message: &serde_json::Value) -> Vec<u8> {
    let body = serde_json::to_string(message).expect("json");
    logpipe_host::envelope::render(
        logpipe_host::envelope::Format::Json,
        message_type,
        version,
        &body,
        None,
    )
    .expect("render")
}

/// A valid person message with a deterministic UUID built from `n`.
pub fn person(n: u64) -> serde_json::Value {
    serde_json::json!({
        "uuid": format!("00000000-0000-4000-8000-{n:012x}"),
        "first_name": format!("First{n}"),
        "last_name": "Last",
    })
}

/// A host process running in the background whose log lines are collected
/// as they arrive, for tests that act while it runs.
pub struct Running {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn start(mut command: Command) -> Self {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn logpipe-host");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = child.stderr.take().expect("stderr");
        let sink = lines.clone();
        let stderr = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().expect("log lines").push(line);
            }
        });
        Running {
            child,
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().expect("log lines").clone()
    }

    /// Lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log().iter().filter(|l| l.contains(needle)).count()
    }

    /// Wait until at least `n` log lines contain `needle`.
    pub fn wait_for(&self, needle: &str, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.count(needle) < n {
            assert!(
                Instant::now() < deadline,
                "waited {limit:?} for {n} line(s) with {needle:?}; log:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGTERM (graceful stop).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Wait for the process to exit on its own (within `limit`).
    pub fn wait(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "logpipe-host ran longer than {limit:?}; log:\n{}",
                    self.log().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(stderr) = self.stderr.take() {
            let _ = stderr.join();
        }
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        Finished {
            status,
            stdout,
            stderr: self.log().join("\n"),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Put `bytes` into `dir/name` the recommended way: write a hidden
/// temporary file, then rename it into place.
pub fn deploy(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write temporary component");
    std::fs::rename(&tmp, dir.join(name)).expect("rename into place");
}

/// One plain HTTP/1.1 GET: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}
