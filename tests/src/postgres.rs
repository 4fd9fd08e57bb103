//! A real PostgreSQL server for tests (Debian's `postgresql` package),
//! never a mock: `initdb` in a temporary directory, the server run as the
//! unprivileged user `nobody` (initdb and postgres refuse root; `setpriv`),
//! listening only on a Unix socket in that directory (no TCP port), trust
//! authentication for its superuser `postgres`.
//!
//! [`PgServer::shared`] is one server per test binary; each test takes a
//! fresh database of its own ([`PgServer::create_database`]), which keeps
//! the tests independent and fast. The server lives as long as the test
//! process: a root shell guards it and, when the test process ends (even
//! killed: it waits for the end of a pipe only the test process holds),
//! stops the server and removes the directory. A server of one's own
//! ([`PgServer::start`]) is stopped and removed when dropped, also when a
//! test fails; it can also be stopped and started again
//! ([`PgServer::stop`], [`PgServer::start_again`]: `pg_ctl`, fast
//! shutdown) to test what clients do while the server is away. Never do
//! that to the shared server: other tests use it.
//!
//! The binaries are found under `/usr/lib/postgresql/*/bin` (the newest
//! version); without them the test fails saying what to install, it is not
//! skipped. Needs root (to run the server as `nobody`). The server runs
//! with `fsync = off`: tests check what the daemon does, not the disk,
//! and share two cores.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{process, wait};

/// How long the server may take to accept connections.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// The user the server runs as.
const USER: &str = "nobody";
const GROUP: &str = "nogroup";

/// The server's settings (after `-D DATA -k SOCKET_DIR`).
const SETTINGS: &str = "-c listen_addresses= -c fsync=off -c full_page_writes=off \
     -c max_connections=300 -c shared_buffers=32MB";

/// Runs as root: starts the server as `nobody`, waits for the end of its
/// stdin (the test process ending), then stops the server (fast shutdown;
/// `pg_ctl`, which also stops a server started again by
/// [`PgServer::start_again`]) and removes the directory. $1: the
/// directory; $2: postgres; $3: setpriv user; $4: group; $5: settings.
const GUARD: &str = r#"
dir=$1; postgres=$2
setpriv --reuid="$3" --regid="$4" --clear-groups \
  "$postgres" -D "$dir/data" -k "$dir" $5 >"$dir/server.log" 2>&1 &
pid=$!
cat >/dev/null
setpriv --reuid="$3" --regid="$4" --clear-groups \
  "$(dirname "$postgres")/pg_ctl" -D "$dir/data" stop -m fast -w >/dev/null 2>&1
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir"
"#;

/// A PostgreSQL server on a Unix socket in a temporary directory.
#[derive(Debug)]
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    guard: Child,
    /// Closing it (drop) tells the guard to stop the server.
    stdin: Option<ChildStdin>,
    /// The `-c` settings it runs with (for [`PgServer::start_again`]).
    settings: String,
}

/// The newest `/usr/lib/postgresql/VERSION/bin` with a `postgres` in it;
/// fails the test saying what to install if there is none.
pub fn bin_dir() -> PathBuf {
    bin_dir_in(Path::new("/usr/lib/postgresql"))
}

fn bin_dir_in(root: &Path) -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries not found ({}/*/bin/postgres): \
             install Debian's postgresql package (apt-get install postgresql; tests/run.sh \
             does); these tests need a real server and are not skipped",
            root.display()
        ),
    }
}

/// uid and gid of `USER` and `GROUP`.
fn unprivileged() -> (libc::uid_t, libc::gid_t) {
    // SAFETY: getpwnam/getgrnam with NUL-terminated names; the results
    // are read at once, before any other call that could reuse them.
    unsafe {
        let pw = libc::getpwnam(c"nobody".as_ptr());
        assert!(!pw.is_null(), "user {USER} does not exist");
        let gr = libc::getgrnam(c"nogroup".as_ptr());
        assert!(!gr.is_null(), "group {GROUP} does not exist");
        ((*pw).pw_uid, (*gr).gr_gid)
    }
}

fn chown(path: &Path, uid: libc::uid_t, gid: libc::gid_t) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

impl PgServer {
    /// The server of this test binary, started by the first caller.
    pub fn shared() -> &'static PgServer {
        static SERVER: OnceLock<PgServer> = OnceLock::new();
        SERVER.get_or_init(PgServer::start)
    }

    /// Starts a server of one's own, stopped and removed when dropped.
    /// Tuned for tests: no fsync, small buffers.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`PgServer::start`] with `settings` (`name=value`, as `postgres -c`
    /// takes them) over the test defaults, e.g. `fsync=on` for a
    /// benchmark that wants a durable commit.
    pub fn start_with(extra: &[&str]) -> Self {
        let settings = extra
            .iter()
            .fold(SETTINGS.to_owned(), |all, s| format!("{all} -c {s}"));
        assert!(
            process::is_root(),
            "a PostgreSQL server for tests needs root (it runs as {USER})"
        );
        let bin = bin_dir();
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "test-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let (uid, gid) = unprivileged();
        chown(&dir, uid, gid);
        let initdb = Command::new("setpriv")
            .args([
                &format!("--reuid={USER}"),
                &format!("--regid={GROUP}"),
                "--clear-groups",
            ])
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("setpriv initdb: {e}"));
        if !initdb.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            panic!(
                "initdb failed ({}): {}{}",
                initdb.status,
                String::from_utf8_lossy(&initdb.stdout),
                String::from_utf8_lossy(&initdb.stderr)
            );
        }
        let mut guard = Command::new("sh")
            .arg("-c")
            .arg(GUARD)
            .arg("sh")
            .arg(&dir)
            .arg(bin.join("postgres"))
            .args([USER, GROUP, settings.as_str()])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the PostgreSQL guard: {e}"));
        let stdin = guard.stdin.take();
        let server = Self {
            dir,
            bin,
            guard,
            stdin,
            settings,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + START_PATIENCE;
        let ready = wait::poll(deadline, Duration::from_millis(50), || {
            Command::new(self.bin.join("pg_isready"))
                .arg("-h")
                .arg(&self.dir)
                .args(["-U", "postgres", "-d", "postgres", "-q"])
                .status()
                .ok()
                .filter(|s| s.success())
        });
        if ready.is_none() {
            panic!(
                "PostgreSQL did not accept connections within {START_PATIENCE:?}; its log:\n{}",
                self.log()
            );
        }
    }

    /// Runs `pg_ctl` as the server's user with `args` after `-D DATA`;
    /// it must succeed.
    fn pg_ctl(&self, args: &[&str]) {
        let out = Command::new("setpriv")
            .args([
                &format!("--reuid={USER}"),
                &format!("--regid={GROUP}"),
                "--clear-groups",
            ])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .stdout(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("setpriv pg_ctl: {e}"));
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed ({}): {}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Stops the server (fast shutdown: sessions are ended, clients see
    /// their connections close and new ones refused) and waits until it
    /// is down. Only on a server of one's own ([`PgServer::start`]).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast", "-w"]);
    }

    /// Starts the server stopped by [`PgServer::stop`] again, with the
    /// same settings, and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!("-k {} {}", self.dir.display(), self.settings);
        // The first log is root's (the guard's redirection).
        let log = self.dir.join("server-again.log");
        let log = log.to_str().expect("a UTF-8 temporary directory");
        self.pg_ctl(&["-l", log, "-o", &options, "start", "-w"]);
        self.wait_ready();
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        ["server.log", "server-again.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect()
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the client programs (psql, createdb, ...).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The database name in one of [`PgServer::url`]'s URLs.
    pub fn db_name(url: &str) -> &str {
        url.trim_start_matches("postgres:///")
            .split('?')
            .next()
            .unwrap_or_default()
    }

    /// The URL of database `name` for the superuser over the socket.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres:///{name}?host={}&user=postgres",
            self.dir.display()
        )
    }

    /// Runs `sql` in database `db` as the superuser (psql; it must succeed);
    /// returns what it printed (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.dir)
            .args(["-U", "postgres", "-d", db, "-X", "-q", "-A", "-t"])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        assert!(
            out.status.success(),
            "psql {sql:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a new, empty database named after `label` (made unique) and
    /// returns its URL.
    pub fn create_database(&self, label: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let clean: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = format!("t{}_{clean}", N.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(&name)
    }
}

impl Drop for PgServer {
    /// Closes the guard's stdin: it stops the server and removes the
    /// directory; waits for that (bounded).
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        if process::wait_exit(&mut self.guard, Duration::from_secs(30)).is_none() {
            eprintln!(
                "PostgreSQL guard for {} did not finish within 30 s",
                self.dir.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_server_binaries_the_test_fails_saying_what_to_install() {
        let empty = std::env::temp_dir().join(format!("no-pg-{}", std::process::id()));
        std::fs::create_dir_all(empty.join("15").join("bin")).unwrap();
        let r = std::panic::catch_unwind(|| bin_dir_in(&empty));
        std::fs::remove_dir_all(&empty).unwrap();
        let e = r.unwrap_err();
        let msg = e.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("not found") && msg.contains("apt-get install postgresql"),
            "{msg}"
        );
    }

    #[test]
    fn the_newest_version_is_taken() {
        let root = std::env::temp_dir().join(format!("some-pg-{}", std::process::id()));
        for v in ["9", "15", "13"] {
            let bin = root.join(v).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("postgres"), "").unwrap();
        }
        let found = bin_dir_in(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(found, root.join("15").join("bin"));
    }
}
