//! A tansu broker for the bench, started the way the end-to-end tests start
//! theirs (`tests/src/lib.rs`): SQLite storage in a temporary folder, a free
//! 127.0.0.1 port, and the header index tansu 0.6.0's schema lacks.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running tansu, killed on drop.
pub struct Tansu {
    child: Child,
    pub bootstrap: String,
}

impl Tansu {
    /// Start tansu with its data in `work/tansu`.
    pub fn start(work: &Path) -> anyhow::Result<Self> {
        let bin = tansu_bin()?;
        let dir = work.join("tansu");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("no free port on 127.0.0.1")?
            .port();
        let bootstrap = format!("127.0.0.1:{port}");
        let url = format!("tcp://{bootstrap}");
        let log = std::fs::File::create(dir.join("broker.log")).context("tansu log file")?;
        // tansu takes the sqlite path relative to its working directory.
        let child = Command::new(&bin)
            .current_dir(&dir)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().context("tansu log file")?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut tansu = Tansu { child, bootstrap };
        tansu.wait_listening(&dir)?;
        index_headers(&dir.join("tansu.db"))?;
        tracing::info!(bootstrap = %tansu.bootstrap, "tansu started");
        Ok(tansu)
    }

    fn wait_listening(&mut self, dir: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(&self.bootstrap).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "tansu exited ({status}); see {}",
                    dir.join("broker.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "tansu did not listen on {} within {START_TIMEOUT:?}; see {}",
                    self.bootstrap,
                    dir.join("broker.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$TANSU_BIN`, else `$CARGO_HOME/bin/tansu` (or `~/.cargo/bin/tansu`).
fn tansu_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("TANSU_BIN") {
        return Ok(PathBuf::from(path));
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    match cargo_home.map(|home| home.join("bin/tansu")) {
        Some(path) if path.is_file() => Ok(path),
        _ => bail!(
            "tansu is not installed: install it with scripts/setup --broker, or give \
             --bootstrap-servers of a running broker"
        ),
    }
}

/// tansu 0.6.0 looks the headers of every fetched record up with a full
/// scan of its header table; once outbox output (which has headers) is
/// stored, every fetch slows to a crawl. The tests and scripts/bench-person
/// add the index its DDL lacks; so does the bench.
fn index_headers(db: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let done = rusqlite::Connection::open(db).and_then(|conn| {
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.execute_batch(
                "CREATE INDEX IF NOT EXISTS logpipe_tests_header_record \
                 ON header (topition, offset_id)",
            )
        });
        match done {
            Ok(()) => return Ok(()),
            // The table appears once tansu has run its DDL.
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("cannot index tansu's header table");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
