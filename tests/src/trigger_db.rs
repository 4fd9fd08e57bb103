//! The trigger-db daemon as a process for tests and benchmark programs: its
//! own socket, database and log in a directory the caller owns (a
//! temporary one), optionally inside a [`Netns`]; gRPC clients over its
//! Unix socket; stop, kill and restart on the same socket and database.
//! The daemon binary is the caller's (`env!("CARGO_BIN_EXE_trigger-db")`
//! exists only in trigger-db's own tests and benches).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use trigger_client::Client;
use trigger_db::model::{Interface, Source, Trigger, TriggerType};
use trigger_proto::v1 as pb;

use crate::{netns::Netns, process};

/// The stdout of a `triggerctl` run that must have succeeded.
pub fn triggerctl_ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "triggerctl failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("triggerctl printed UTF-8")
}

/// How long the daemon may take to accept connections, or to exit after
/// SIGTERM.
const PATIENCE: Duration = Duration::from_secs(30);

/// What the daemon is started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    /// Debug logging; its sources follow only what the test set up.
    Test,
    /// Warnings only (logging costs on the measured path); the config as
    /// given.
    Bench,
}

/// The daemon as a process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    bin: PathBuf,
    flavour: Flavour,
    pub socket: PathBuf,
    /// The `--database` value: a SQLite file, or a URL.
    pub database: PathBuf,
    pub config: Option<PathBuf>,
    pub netns: Option<String>,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `bin` for a test with socket, database and log under `dir`
    /// (in `netns` if given, via `ip netns exec`), and waits until it
    /// accepts connections. NetworkManager's source stays off unless
    /// `config` turns it on (the host may have a system bus), and outside
    /// a namespace of the test's the rtnetlink source is off too (the
    /// host's links are not the test's), unless `config` says otherwise.
    pub fn start(
        bin: impl Into<PathBuf>,
        dir: &Path,
        netns: Option<&Netns>,
        config: Option<&str>,
    ) -> Self {
        Self::launch(bin.into(), Flavour::Test, dir, netns, config, None)
    }

    /// Like [`Daemon::start`], on `database` (a path or URL, e.g. a
    /// PostgreSQL database of [`crate::postgres::PgServer`]) instead of a
    /// SQLite file in `dir`.
    pub fn start_on(
        bin: impl Into<PathBuf>,
        dir: &Path,
        database: &str,
        config: Option<&str>,
    ) -> Self {
        Self::launch(
            bin.into(),
            Flavour::Test,
            dir,
            None,
            config,
            Some(PathBuf::from(database)),
        )
    }

    /// Like [`Daemon::start_on`], in `netns` (its rtnetlink source on,
    /// watching that namespace's links, unless `config` says otherwise).
    pub fn start_on_in(
        bin: impl Into<PathBuf>,
        dir: &Path,
        netns: &Netns,
        database: &str,
        config: Option<&str>,
    ) -> Self {
        Self::launch(
            bin.into(),
            Flavour::Test,
            dir,
            Some(netns),
            config,
            Some(PathBuf::from(database)),
        )
    }

    /// Starts `bin` for a benchmark: like [`Daemon::start`], but logging
    /// warnings only and with exactly `config`.
    pub fn start_for_bench(
        bin: impl Into<PathBuf>,
        dir: &Path,
        netns: Option<&Netns>,
        config: &str,
    ) -> Self {
        Self::launch(bin.into(), Flavour::Bench, dir, netns, Some(config), None)
    }

    /// [`Daemon::start_for_bench`] on `database` (a path or URL) instead
    /// of a SQLite file in `dir`.
    pub fn start_for_bench_on(
        bin: impl Into<PathBuf>,
        dir: &Path,
        database: &str,
        config: &str,
    ) -> Self {
        Self::launch(
            bin.into(),
            Flavour::Bench,
            dir,
            None,
            Some(config),
            Some(PathBuf::from(database)),
        )
    }

    fn launch(
        bin: PathBuf,
        flavour: Flavour,
        dir: &Path,
        netns: Option<&Netns>,
        config: Option<&str>,
        database: Option<PathBuf>,
    ) -> Self {
        let config = config.map(|text| {
            let p = dir.join("trigger-db.toml");
            std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            p
        });
        let mut d = Self {
            child: None,
            bin,
            flavour,
            socket: dir.join("trigger.sock"),
            database: database.unwrap_or_else(|| dir.join("triggers.db")),
            config,
            netns: netns.map(|n| n.name().to_owned()),
            log: dir.join("daemon.log"),
        };
        d.spawn();
        d
    }

    /// The config file the daemon is given: the caller's, and for tests
    /// the sources turned off that the test did not ask for, and on
    /// PostgreSQL the spool in the test's directory unless the test names
    /// one (the default is under /var/lib/trigger-db as root).
    fn effective_config(&self) -> Option<PathBuf> {
        if self.flavour == Flavour::Bench {
            return self.config.clone();
        }
        let p = self.socket.with_file_name("test-defaults.toml");
        let mut text = match &self.config {
            Some(c) => {
                std::fs::read_to_string(c).unwrap_or_else(|e| panic!("{}: {e}", c.display()))
            }
            None => String::new(),
        };
        if !text.contains("[sources.networkmanager]") {
            text.push_str("\n[sources.networkmanager]\nenabled = false\n");
        }
        if self.netns.is_none() && !text.contains("[sources.rtnetlink]") {
            text.push_str("\n[sources.rtnetlink]\nenabled = false\n");
        }
        let postgres = self
            .database
            .to_str()
            .is_some_and(|d| d.starts_with("postgres"));
        if postgres && !text.contains("spool_path") {
            let line = format!(
                "spool_path = \"{}\"\n",
                self.socket.with_file_name("spool.db").display()
            );
            text = match text.find("[store]\n") {
                Some(at) => {
                    let after = at + "[store]\n".len();
                    format!("{}{line}{}", &text[..after], &text[after..])
                }
                None => format!("{text}\n[store]\n{line}"),
            };
        }
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        Some(p)
    }

    fn spawn(&mut self) {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("--database")
            .arg(&self.database);
        if let Some(config) = self.effective_config() {
            cmd.arg("--config").arg(config);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("{}: {e}", self.log.display()));
        let filter = match self.flavour {
            Flavour::Test => "info,trigger_db=debug",
            Flavour::Bench => "warn",
        };
        cmd.env("TRIGGER_DB_LOG", filter)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let child = self.child.insert(child);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("trigger-db exited early ({st}): {}", log_text(&self.log));
            }
            assert!(
                Instant::now() < deadline,
                "trigger-db did not come up within {PATIENCE:?}: {}",
                log_text(&self.log)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// What the daemon has logged so far.
    pub fn log_text(&self) -> String {
        log_text(&self.log)
    }

    /// `triggerctl` (the caller's binary, `env!("CARGO_BIN_EXE_triggerctl")`)
    /// with `args` on the daemon's socket, whatever `TRIGGER_DB_SOCKET` says.
    pub fn triggerctl(&self, bin: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.arg("--socket").arg(&self.socket).args(args);
        c.env_remove("TRIGGER_DB_SOCKET");
        c
    }

    /// A client on the daemon's socket.
    pub async fn client(&self) -> Client {
        trigger_client::connect(&self.socket)
            .await
            .expect("connect")
    }

    /// The daemon's pid (with `ip netns exec`, which execs, the same).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// (VmHWM, VmRSS) in KiB: peak and current resident set.
    pub fn rss_kib(&self) -> (u64, u64) {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {path}"))
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("trigger-db is running");
        c.kill().expect("SIGKILL trigger-db");
        c.wait().expect("reap trigger-db");
    }

    /// SIGTERM, then waits for the exit (the store is flushed then).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("trigger-db is running");
        process::terminate(&mut c, PATIENCE).unwrap_or_else(|| {
            let _ = c.kill();
            let _ = c.wait();
            panic!("trigger-db ignored SIGTERM: {}", self.log_text())
        })
    }

    /// Starts it again on the same socket and database.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        self.spawn();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A binary of the workspace (`trigger-db`, `triggerctl`) beside the
/// running test's directory in the target dir; fails the test with how to
/// build it when it is missing.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(name))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} missing: build it first (cargo build -p trigger-db, or cargo test --workspace)",
        bin.display()
    );
    bin
}

/// The trigger-db binary of this build, for tests of other crates (where
/// `CARGO_BIN_EXE_trigger-db` does not exist).
pub fn built_daemon() -> PathBuf {
    workspace_bin("trigger-db")
}

/// A client trigger as a test adds it.
pub fn client_trigger(kind: TriggerType, ifname: &str) -> pb::Trigger {
    let mut t = Trigger::new(Source::Client, kind);
    t.interface = Some(Interface {
        name: ifname.into(),
        ..Default::default()
    });
    t.to_wire()
}

/// Adds `n` LINK_UP triggers on `ifname` in batches of `batch`; returns ids.
pub async fn add_many(c: &mut Client, ifname: &str, n: usize, batch: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let k = left.min(batch);
        let triggers = (0..k)
            .map(|_| client_trigger(TriggerType::LinkUp, ifname))
            .collect();
        let r = c
            .add(pb::AddRequest { triggers })
            .await
            .expect("add")
            .into_inner();
        assert_eq!(r.ids.len(), k);
        ids.extend(r.ids);
        left -= k;
    }
    ids
}

/// The next trigger of a subscribe stream, within `secs` seconds.
pub async fn next_item(
    s: &mut tonic::Streaming<pb::SubscribeResponse>,
    secs: u64,
) -> Option<pb::subscribe_response::Item> {
    tokio::time::timeout(Duration::from_secs(secs), s.message())
        .await
        .expect("stream stalled")
        .expect("stream error")
        .map(|r| r.item.expect("empty item"))
}

/// Reads the subscribe stream `s` until a trigger for which `wanted` holds
/// arrives, and returns it; fails if none does within `within`, naming
/// `what`, the triggers passed over (as `describe` puts them), what ended
/// the wait, and `context()` (logs).
pub async fn expect_trigger(
    s: &mut tonic::Streaming<pb::SubscribeResponse>,
    within: Duration,
    what: &str,
    mut wanted: impl FnMut(&pb::Trigger) -> bool,
    describe: impl Fn(&pb::Trigger) -> String,
    context: impl Fn() -> String,
) -> pb::Trigger {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, s.message()).await;
        let Ok(Ok(Some(pb::SubscribeResponse {
            item: Some(pb::subscribe_response::Item::Trigger(t)),
        }))) = msg
        else {
            panic!(
                "no {what} within {within:?}; saw {seen:?}, then {msg:?}\n{}",
                context()
            );
        };
        if wanted(&t) {
            return t;
        }
        seen.push(describe(&t));
    }
}

/// A raw channel to the daemon's socket; `small_windows` sets the HTTP/2
/// receive windows to the protocol's minimum (64 KiB), so that a stream it
/// does not read backs up into the daemon quickly, as a stuck process would
/// after its kernel and library buffers filled.
pub async fn channel(socket: &Path, small_windows: bool) -> tonic::transport::Channel {
    trigger_client::unix::connect_with("trigger-db", socket, |ep| {
        if small_windows {
            ep.initial_stream_window_size(65_535)
                .initial_connection_window_size(65_535)
        } else {
            ep
        }
    })
    .await
    .expect("connect")
}

/// A client whose receive windows are the protocol's minimum.
pub async fn small_window_client(socket: &Path) -> Client {
    Client::new(channel(socket, true).await)
}
