//! The harness the interop tests against strongSwan's charon share
//! (`mod` it into a test binary with `#[path]`): two network namespaces
//! joined by a veth link, the agent (kernel backend `none`) in A at
//! 192.0.2.1 and 2001:db8::1, charon in B at 192.0.2.2 and 2001:db8::2
//! with a LAN 10.2.0.1/24 and fd00:2::1/64 behind it; the agent's and
//! charon's configurations of connection `c` with CHILD_SA `net`; their
//! logs, polled with timeouts that fail with both logs.
//!
//! Each test binary names its own namespaces ([`Interop::new`]), so the
//! binaries can run side by side. Each uses part of this module.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use system_tests::{
    charon::Charon,
    netns::{self, Netns},
    process, wait,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_mobike-agent");
pub const PSK: &str = "interop-psk-0123456789";
pub const SUITE: &str = "aes256gcm16-prfsha256-x25519";

/// swanctl.conf for connection `c` with CHILD_SA `net` (10.2.0.0/24 ===
/// 10.1.0.0/24), PSK authentication as b.test against a.test.
pub fn charon_conf(
    proposals: &str,
    esp: &str,
    remote_addrs: &str,
    psk: &str,
    extra_conn: &str,
    extra_child: &str,
) -> String {
    let remote = if remote_addrs.is_empty() {
        String::new()
    } else {
        format!("remote_addrs = {remote_addrs}")
    };
    format!(
        "connections {{ c {{ version = 2
  {remote}
  {extra_conn}
  proposals = {proposals}
  mobike = yes
  encap = yes
  local {{ auth = psk
          id = b.test }}
  remote {{ auth = psk
           id = a.test }}
  children {{ net {{ local_ts = 10.2.0.0/24
                   remote_ts = 10.1.0.0/24
                   {extra_child}
                   esp_proposals = {esp} }} }} }} }}
secrets {{ ike-c {{ id-a = a.test
  id-b = b.test
  secret = \"{psk}\" }} }}
"
    )
}

/// The agent's configuration of connection `c` with CHILD_SA `net`
/// (10.1.0.0/24 === 10.2.0.0/24), 192.0.2.1 to 192.0.2.2.
pub fn agent_conf(
    start: &str,
    proposals: &str,
    esp: &str,
    psk: &str,
    extra_conn: &str,
    extra_child: &str,
) -> String {
    format!(
        "[kernel]
backend = \"none\"
[connections.c]
local_addrs = [\"192.0.2.1\"]
remote_addrs = [\"192.0.2.2\"]
local_id = \"a.test\"
remote_id = \"b.test\"
psk = \"{psk}\"
proposals = [\"{proposals}\"]
mobike = true
start = \"{start}\"
{extra_conn}
[connections.c.children.net]
local_ts = [\"10.1.0.0/24\"]
remote_ts = [\"10.2.0.0/24\"]
esp_proposals = [\"{esp}\"]
{extra_child}
"
    )
}

/// An agent process, stopped when dropped.
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn logged(&self, text: &str) -> bool {
        self.log_text().contains(text)
    }

    /// Lines of the log that contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.log_text().lines().filter(|l| l.contains(text)).count()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        process::stop(&mut self.child, Duration::from_secs(10));
    }
}

/// The two namespaces, the agent in A and charon in B. Fields drop in
/// order: the processes before their namespaces and files.
pub struct Interop {
    pub agent: Option<Agent>,
    pub charon: Option<Charon>,
    pub a: Netns,
    pub b: Netns,
    pub dir: tempfile::TempDir,
}

impl Interop {
    /// The namespaces `{prefix}A` and `{prefix}B`.
    pub fn new(prefix: &str) -> Self {
        let a = Netns::new(&format!("{prefix}A"));
        let b = Netns::new(&format!("{prefix}B"));
        netns::veth(&a, "vA", &b, "vB");
        a.addr_add("vA", "192.0.2.1/24", &[]);
        b.addr_add("vB", "192.0.2.2/24", &[]);
        a.up("vA");
        b.up("vB");
        b.veth("lanB0", "lanB1");
        b.addr_add("lanB0", "10.2.0.1/24", &[]);
        b.up("lanB0");
        b.up("lanB1");
        a.addr_add("vA", "2001:db8::1/64", &["nodad"]);
        b.addr_add("vB", "2001:db8::2/64", &["nodad"]);
        b.addr_add("lanB0", "fd00:2::1/64", &["nodad"]);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("B")).expect("charon's dir");
        Self {
            agent: None,
            charon: None,
            a,
            b,
            dir,
        }
    }

    pub fn charon_dir(&self) -> PathBuf {
        self.dir.path().join("B")
    }

    pub fn start_charon(&mut self, swanctl_conf: &str) {
        self.start_charon_with(swanctl_conf, "");
    }

    /// charon with `settings` in the `charon` section of strongswan.conf.
    pub fn start_charon_with(&mut self, swanctl_conf: &str, settings: &str) {
        let c = Charon::start_with(&self.b, &self.charon_dir(), swanctl_conf, settings);
        self.charon = Some(c);
    }

    pub fn charon(&self) -> &Charon {
        self.charon.as_ref().expect("charon runs")
    }

    pub fn stop_charon(&mut self) {
        self.charon = None;
    }

    /// Removes charon's log (before a start), so a scenario counts its own
    /// lines.
    pub fn clear_charon_log(&self) {
        let _ = std::fs::remove_file(self.charon_dir().join("charon.log"));
    }

    pub fn charon_log(&self) -> String {
        std::fs::read_to_string(self.charon_dir().join("charon.log")).unwrap_or_default()
    }

    /// Lines of charon's log that contain `text`.
    pub fn charon_count(&self, text: &str) -> usize {
        self.charon_log()
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }

    /// Lines of `swanctl --list-sas` that contain `text`.
    pub fn listed(&self, text: &str) -> usize {
        self.charon()
            .list_sas()
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }

    /// Starts the agent `name` with the configuration `conf`; without a
    /// `[control]` section its control socket is `name.sock` in the test's
    /// directory, not the shared default, so that agents of tests running
    /// side by side do not meet there.
    pub fn start_agent(&mut self, name: &str, conf: &str) {
        let path = self.dir.path().join(format!("{name}.toml"));
        let conf = if conf.contains("[control]") {
            conf.to_owned()
        } else {
            with_control(conf, &self.dir.path().join(format!("{name}.sock")))
        };
        std::fs::write(&path, conf).expect("agent config");
        let log = self.dir.path().join(format!("agent-{name}.log"));
        let child = self
            .a
            .command(BIN)
            .arg("--config")
            .arg(&path)
            .env("MOBIKE_AGENT_LOG", "mobike_agent=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log"))
            .spawn()
            .expect("spawn mobike-agent");
        self.agent = Some(Agent { child, log });
    }

    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("the agent runs")
    }

    /// SIGTERM; the agent must exit successfully.
    pub fn stop_agent(&mut self) {
        let mut agent = self.agent.take().expect("the agent runs");
        match process::terminate(&mut agent.child, Duration::from_secs(20)) {
            Some(st) if st.success() => {}
            st => self.fail(&format!("agent exit status {st:?}")),
        }
    }

    /// Fails the test with the agents' and charon's logs.
    pub fn fail(&self, what: &str) -> ! {
        let mut agents = String::new();
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        logs.retain(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("agent"))
        });
        logs.sort();
        for p in logs {
            agents += &format!("--- {}\n{}\n", p.display(), tail(&read(&p), 40));
        }
        let log = self.charon_log();
        let ike: Vec<&str> = log
            .lines()
            .filter(|l| ["IKE", "CFG", "ENC"].iter().any(|k| l.contains(k)))
            .collect();
        let from = ike.len().saturating_sub(40);
        panic!(
            "FAIL: {what}\n{agents}--- charon log\n{}",
            ike[from..].join("\n")
        );
    }

    /// Polls `ready` every 100 ms for up to `secs` seconds; fails with
    /// `what` and the logs if it never holds.
    pub fn wait_for(&self, secs: u64, what: &str, mut ready: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        if wait::poll(deadline, Duration::from_millis(100), || {
            ready(self).then_some(())
        })
        .is_none()
        {
            self.fail(what);
        }
    }

    pub fn check(&self, ok: bool, what: &str) {
        if !ok {
            self.fail(what);
        }
    }
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether a line of `log` has `parts` in this order.
pub fn has_line_with(log: &str, parts: &[&str]) -> bool {
    log.lines().any(|l| {
        let mut rest = l;
        parts.iter().all(|p| match rest.find(p) {
            Some(i) => {
                rest = &rest[i + p.len()..];
                true
            }
            None => false,
        })
    })
}

/// A liveness check as charon logs it: `parsed INFORMATIONAL request N [ ]`.
pub fn has_empty_informational(log: &str) -> bool {
    log.lines().any(|l| {
        l.split_once("parsed INFORMATIONAL request ")
            .is_some_and(|(_, rest)| {
                let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
                rest.starts_with(" [ ]")
            })
    })
}

/// The agent configuration `conf` with its control socket at `socket`.
pub fn with_control(conf: &str, socket: &Path) -> String {
    format!("{conf}\n[control]\nsocket = \"{}\"\n", socket.display())
}

/// `mobike-agent status --json` of the agent's one IKE SA.
pub fn status_json(t: &Interop, socket: &Path) -> serde_json::Value {
    let out = std::process::Command::new(BIN)
        .args(["status", "--json", "--control-socket"])
        .arg(socket)
        .output()
        .expect("run mobike-agent status");
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().next().map(serde_json::from_str) {
        Some(Ok(v)) if out.status.success() => v,
        _ => t.fail(&format!(
            "status: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// The IKE SPIs charon lists (`<spi_i>_i <spi_r>_r`, `*` marking its own).
pub fn ike_spis(list: &str) -> Option<String> {
    list.lines().find_map(|l| {
        l.split_once("ESTABLISHED, IKEv2, ")
            .map(|(_, spis)| spis.trim().to_owned())
    })
}
