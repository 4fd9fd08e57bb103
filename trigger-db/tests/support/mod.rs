//! Test support for the daemon's system tests: the real `trigger-db` binary
//! started as a process (optionally inside a network namespace the test made)
//! with its own socket and database in a temporary directory, and gRPC
//! clients to it. Nothing here touches the host's interfaces.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use trigger_client::Client;
use trigger_db::model::{Interface, Source, Trigger, TriggerType};
use trigger_proto::v1 as pb;

pub const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");
pub const TRIGGERCTL: &str = env!("CARGO_BIN_EXE_triggerctl");

/// A network namespace made for one test and deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tdb-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// The ifindex of an interface in this namespace.
    pub fn ifindex(&self, name: &str) -> u32 {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-o", "link", "show", "dev", name])
            .output()
            .expect("ip link show");
        let s = String::from_utf8_lossy(&out.stdout);
        s.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ifindex for {name} in {s:?}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The daemon as a process.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub database: PathBuf,
    pub config: Option<PathBuf>,
    pub netns: Option<String>,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts the daemon with socket and database under `dir`, and waits
    /// until it accepts connections.
    pub fn start(dir: &Path, netns: Option<&Netns>, config: Option<&str>) -> Self {
        let config = config.map(|text| {
            let p = dir.join("trigger-db.toml");
            std::fs::write(&p, text).unwrap();
            p
        });
        let mut d = Self {
            child: None,
            socket: dir.join("trigger.sock"),
            database: dir.join("triggers.db"),
            config,
            netns: netns.map(|n| n.name.clone()),
            log: dir.join("daemon.log"),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, DAEMON]);
                c
            }
            None => Command::new(DAEMON),
        };
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("--database")
            .arg(&self.database);
        // Tests follow only what they set up: NetworkManager's source stays
        // off unless a test's config turns it on (the host may have a
        // system bus), and outside a namespace of its own the daemon must
        // not follow the host's links either.
        let p = self.socket.with_file_name("test-defaults.toml");
        let mut text = match &self.config {
            Some(c) => std::fs::read_to_string(c).unwrap(),
            None => String::new(),
        };
        if !text.contains("[sources.networkmanager]") {
            text.push_str("\n[sources.networkmanager]\nenabled = false\n");
        }
        if self.netns.is_none() && !text.contains("[sources.rtnetlink]") {
            text.push_str("\n[sources.rtnetlink]\nenabled = false\n");
        }
        std::fs::write(&p, text).unwrap();
        cmd.arg("--config").arg(&p);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        cmd.env("TRIGGER_DB_LOG", "info,trigger_db=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn trigger-db"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("trigger-db exited early ({st}): {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "trigger-db did not come up: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn client(&self) -> Client {
        trigger_client::connect(&self.socket)
            .await
            .expect("connect")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().unwrap();
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("trigger-db ignored SIGTERM: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
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

/// A raw channel to the daemon's socket; `small_windows` sets the HTTP/2
/// receive windows to the protocol's minimum (64 KiB), so that a stream it
/// does not read backs up into the daemon quickly, as a stuck process would
/// after its kernel and library buffers filled.
pub async fn channel(socket: &Path, small_windows: bool) -> tonic::transport::Channel {
    let path = socket.to_owned();
    let mut ep = tonic::transport::Endpoint::try_from("http://[::]:50051").unwrap();
    if small_windows {
        ep = ep
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535);
    }
    ep.connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(path).await?,
            ))
        }
    }))
    .await
    .expect("connect")
}

pub async fn small_window_client(socket: &Path) -> Client {
    Client::new(channel(socket, true).await)
}
