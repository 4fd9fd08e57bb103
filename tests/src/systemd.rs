//! systemd for tests: a stand-in for its end of sd_notify(3) (a Unix
//! datagram socket whose path goes into a daemon's `NOTIFY_SOCKET`, and the
//! messages the daemon sends there, READY=1, STATUS=..., WATCHDOG=1, each
//! split into its `KEY=value` lines: real datagrams from the real daemon,
//! nothing of the protocol mocked), and `systemd-analyze verify` of the
//! project's unit files.

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// The listening socket, in a directory of the caller's.
#[derive(Debug)]
pub struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
    /// Every message received so far, in order.
    pub seen: Vec<Vec<String>>,
}

impl NotifySocket {
    /// Binds `DIR/notify.sock`.
    pub fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        Self {
            sock,
            path,
            seen: Vec::new(),
        }
    }

    /// For the daemon's `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `within` for a message with the line `line` (e.g.
    /// "READY=1"); returns that message. Panics naming what it got.
    pub fn expect(&mut self, line: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {line:?} within {within:?}; got {:?}",
                self.seen
            );
            self.sock
                .set_read_timeout(Some(left))
                .expect("set_read_timeout");
            let Ok(n) = self.sock.recv(&mut buf) else {
                continue;
            };
            let msg: Vec<String> = String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_owned)
                .collect();
            self.seen.push(msg.clone());
            if msg.iter().any(|l| l == line) {
                return msg;
            }
        }
    }
}

/// The value of `KEY=` in a message, if there.
pub fn value<'a>(msg: &'a [String], key: &str) -> Option<&'a str> {
    msg.iter()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// `systemd-analyze verify` of the unit file `unit` (under `deploy/`) with
/// its `/usr/bin/NAME` (where the Debian packages install it) replaced by
/// `binary` (verify wants the program to exist): `Ok` when it passes
/// without a warning, else what it said.
/// `None` when systemd-analyze is not installed.
pub fn verify_unit(unit: &Path, binary: &str) -> Option<Result<(), String>> {
    let name = unit.file_name().expect("a unit file name");
    let stem = Path::new(name).file_stem().expect("a unit name");
    let text = std::fs::read_to_string(unit).expect("read the unit");
    let dir = tempfile_dir();
    let copy = dir.join(name);
    let installed = format!("/usr/bin/{}", stem.to_string_lossy());
    std::fs::write(&copy, text.replace(&installed, binary)).expect("write the unit copy");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .ok()?;
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    })
}

fn tempfile_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "unit-verify-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
