//! Network namespaces for tests: named ones (`ip netns add`) joined by veth
//! links, with addresses, commands and closures run inside them, deleted
//! when dropped; and an anonymous one for one thread (`unshare`). All
//! through iproute2; nothing here touches the host's own interfaces.

use std::{
    future::Future,
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::process;

/// A named network namespace made for one test, with `lo` up; deleted
/// (with every interface and process-less socket in it) when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Makes `TAG-PID-N` (unique per process and call).
    pub fn new(tag: &str) -> Self {
        Self::try_new(tag).unwrap_or_else(|| panic!("ip netns add for {tag:?} failed (root?)"))
    }

    /// [`Netns::new`], or `None` when this process is not root or
    /// `ip netns add` fails: for tests that skip without namespaces.
    pub fn try_new(tag: &str) -> Option<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let added = process::is_root()
            && Command::new("ip")
                .args(["netns", "add", &name])
                .output()
                .is_ok_and(|o| o.status.success());
        if !added {
            return None;
        }
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        Some(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its file under /run/netns (for `setns` and backends that open it).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NS ARGS...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        self.ip_output(args);
    }

    /// `ip -n NS` with the whitespace-separated words of `line`.
    pub fn ip_line(&self, line: &str) {
        self.ip(&line.split_whitespace().collect::<Vec<_>>());
    }

    /// The stdout of `ip -n NS ARGS...`, which must succeed.
    pub fn ip_output(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        process::output("ip", &all)
    }

    /// Adds `cidr` (e.g. `192.0.2.1/24`) on `dev`, with extra `ip addr`
    /// flags such as `nodad`.
    pub fn addr_add(&self, dev: &str, cidr: &str, flags: &[&str]) {
        let mut args = vec!["addr", "add", cidr, "dev", dev];
        args.extend_from_slice(flags);
        self.ip(&args);
    }

    /// Sets `dev` up.
    pub fn up(&self, dev: &str) {
        self.ip(&["link", "set", dev, "up"]);
    }

    /// A veth pair with both ends in this namespace, down.
    pub fn veth(&self, a: &str, b: &str) {
        self.ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
    }

    /// The ifindex of `dev` in this namespace.
    pub fn ifindex(&self, dev: &str) -> u32 {
        let s = self.ip_output(&["-o", "link", "show", "dev", dev]);
        s.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ifindex for {dev} in {}: {s:?}", self.name))
    }

    /// `ip netns exec NS PROGRAM`, to add arguments to and spawn.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `f` on a thread that has entered this namespace, so sockets it
    /// opens live there; a panic in `f` is the caller's.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            let thread = s.spawn(|| {
                let file = std::fs::File::open(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                // SAFETY: a valid namespace fd; only this thread switches.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair from `a`'s `a_dev` to `b`'s `b_dev`, both down.
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    process::run(
        "ip",
        &[
            "link", "add", a_dev, "netns", &a.name, "type", "veth", "peer", "name", b_dev, "netns",
            &b.name,
        ],
    );
}

/// `ip` with the whitespace-separated words of `line`, in the calling
/// thread's namespace (inside [`in_new_netns`]); it must succeed.
pub fn ip_here(line: &str) {
    process::run("ip", &line.split_whitespace().collect::<Vec<_>>());
}

/// A veth pair `dev` <-> `peer` in the calling thread's namespace, both
/// ends up (inside [`in_new_netns`]).
pub fn veth_here(dev: &str, peer: &str) {
    ip_here(&format!("link add {dev} type veth peer name {peer}"));
    ip_here(&format!("link set {dev} up"));
    ip_here(&format!("link set {peer} up"));
}

/// Runs `test` on a thread of its own that unshared its network namespace
/// (it dies with the thread), on a current-thread runtime. The `ip`
/// processes the thread forks inherit the namespace, which is checked
/// (only `lo` there) before `test` may change anything. Needs root.
pub fn in_new_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET only moves this thread (and
        // what it forks later) into a new network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {} (these tests need root)",
            std::io::Error::last_os_error()
        );
        let links = process::output("ip", &["-o", "link", "show"]);
        assert!(
            links.lines().count() == 1 && links.contains(": lo:"),
            "`ip` does not run in the new namespace; refusing to go on:\n{links}"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(test());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}
