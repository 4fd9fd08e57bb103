//! The mobility manager end to end on the host, with real processes: the
//! agent (kernel backend `none`) and trigger-db in network namespace A,
//! strongSwan's charon (MOBIKE responder, userspace ESP-in-UDP) in B, two
//! uplinks between them, each with IPv4 and IPv6:
//!
//!   A up1 192.0.2.1, 2001:db8:1::1  <-veth->  B dn1 192.0.2.2, 2001:db8:1::2
//!   A up2 198.51.100.1, 2001:db8:2::1 <-veth-> B dn2 198.51.100.2, 2001:db8:2::2
//!
//! and in A a tun interface whose address routes to the peer through
//! itself by policy routing: a tunnel is never a candidate, whatever its
//! route says. The agent initiates to 192.0.2.2 and, in order:
//!
//! 1. up1 set down: trigger-db reports it, the agent moves the IKE SA to
//!    up2 (RFC 4555 UPDATE_SA_ADDRESSES) and charon lists the new address;
//!    the move's timeline names the trigger.
//! 2. Link_Going_Down for up2 added with `triggerctl add` (up1 back up):
//!    the agent moves to up1 while up2 is still up (make-before-break).
//! 3. trigger-db stopped: the agent says it follows the links itself; up1
//!    set down: it moves to up2 on its own rtnetlink watch. trigger-db
//!    started again: the agent follows it again.
//! 4. The IPv4 addresses of both uplinks removed: the IKE SA moves to
//!    IPv6 and charon lists the agent's IPv6 address.
//! 5. trigger-db restarted with a 30 s debounce of link-downs, address
//!    removals and changes and default routes removed: the current uplink
//!    set down, the agent moves at once on the kernel's loss hint
//!    (`[mobility] kernel_hints`), not 30 s later.
//!
//! Needs root, iproute2, charon (strongswan-charon strongswan-swanctl
//! libstrongswan-standard-plugins libcharon-extra-plugins) and trigger-db's
//! binaries built (`cargo test --workspace`), so it is ignored by default:
//! `cargo test -p mobike-agent --test mobility_charon -- --ignored`.

use std::{
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use system_tests::{
    charon::{self, Charon},
    netns::{self, Netns},
    process,
    trigger_db::{Daemon, workspace_bin},
    wait,
};

const BIN: &str = env!("CARGO_BIN_EXE_mobike-agent");
const PSK: &str = "mobility-psk-0123456789";

fn charon_conf() -> String {
    format!(
        "connections {{ c {{ version = 2
  proposals = aes256gcm16-prfsha256-x25519
  mobike = yes
  encap = yes
  dpd_delay = 30s
  local {{ auth = psk
          id = b.test }}
  remote {{ auth = psk
           id = a.test }}
  children {{ net {{ local_ts = 10.2.0.0/24
                   remote_ts = 10.1.0.0/24
                   esp_proposals = aes256gcm16 }} }} }} }}
secrets {{ ike-c {{ id-a = a.test
  id-b = b.test
  secret = \"{PSK}\" }} }}
"
    )
}

fn agent_conf(control: &std::path::Path, trigger_db: &std::path::Path) -> String {
    format!(
        "[kernel]
backend = \"none\"
[control]
socket = \"{}\"
[mobility]
source = \"automatic\"
trigger_db_socket = \"{}\"
probe_interval = \"0\"
prefer_family = \"ipv4\"
[connections.c]
remote_addrs = [\"192.0.2.2\", \"198.51.100.2\", \"2001:db8:1::2\", \"2001:db8:2::2\"]
local_id = \"a.test\"
remote_id = \"b.test\"
psk = \"{PSK}\"
proposals = [\"aes256gcm16-prfsha256-x25519\"]
mobike = true
start = \"initiate\"
[connections.c.children.net]
local_ts = [\"10.1.0.0/24\"]
remote_ts = [\"10.2.0.0/24\"]
esp_proposals = [\"aes256gcm16\"]
",
        control.display(),
        trigger_db.display()
    )
}

/// Processes drop before their namespaces and files.
struct Setup {
    agent: Option<Child>,
    daemon: Option<Daemon>,
    charon: Option<Charon>,
    a: Netns,
    b: Netns,
    dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            process::stop(&mut a, Duration::from_secs(10));
        }
    }
}

impl Setup {
    fn new() -> Self {
        let a = Netns::new("mbkmA");
        let b = Netns::new("mbkmB");
        // IPv6 addresses stay on a link that goes down (as IPv4 ones do).
        for (ns, k) in [(&a, "all"), (&a, "default")] {
            let mut c = ns.command("sysctl");
            c.args(["-qw", &format!("net.ipv6.conf.{k}.keep_addr_on_down=1")]);
            assert!(c.status().expect("sysctl").success());
        }
        netns::veth(&a, "up1", &b, "dn1");
        netns::veth(&a, "up2", &b, "dn2");
        // up2's IPv6 address comes in step 4: until then the moves to up2
        // have one pair to take.
        a.addr_add("up1", "192.0.2.1/24", &[]);
        a.addr_add("up1", "2001:db8:1::1/64", &["nodad"]);
        a.addr_add("up2", "198.51.100.1/24", &[]);
        a.up("up1");
        a.up("up2");
        for (dev, v4, v6) in [
            ("dn1", "192.0.2.2/24", "2001:db8:1::2/64"),
            ("dn2", "198.51.100.2/24", "2001:db8:2::2/64"),
        ] {
            b.addr_add(dev, v4, &[]);
            b.addr_add(dev, v6, &["nodad"]);
            b.up(dev);
        }
        b.veth("lanB0", "lanB1");
        b.addr_add("lanB0", "10.2.0.1/24", &[]);
        b.up("lanB0");
        b.up("lanB1");
        // A tunnel interface whose address the kernel routes to the peer
        // through the tunnel itself.
        a.ip(&["tuntap", "add", "tun0", "mode", "tun"]);
        a.addr_add("tun0", "203.0.113.1/24", &[]);
        a.up("tun0");
        a.ip_line("route add 192.0.2.2/32 dev tun0 table 100");
        a.ip_line("route add 198.51.100.2/32 dev tun0 table 100");
        a.ip_line("rule add from 203.0.113.1 lookup 100 pref 100");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("B")).expect("charon's dir");
        std::fs::create_dir(dir.path().join("db")).expect("trigger-db's dir");
        Self {
            agent: None,
            daemon: None,
            charon: None,
            a,
            b,
            dir,
        }
    }

    fn control(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    fn daemon_dir(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    fn trigger_socket(&self) -> PathBuf {
        self.daemon_dir().join("trigger.sock")
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    fn start_daemon(&mut self) {
        self.start_daemon_with(None);
    }

    fn start_daemon_with(&mut self, config: Option<&str>) {
        let d = Daemon::start(
            workspace_bin("trigger-db"),
            &self.daemon_dir(),
            Some(&self.a),
            config,
        );
        self.daemon = Some(d);
    }

    fn start_agent(&mut self) {
        let conf = self.dir.path().join("agent.toml");
        std::fs::write(&conf, agent_conf(&self.control(), &self.trigger_socket())).unwrap();
        let log = std::fs::File::create(self.dir.path().join("agent.log")).unwrap();
        let child = self
            .a
            .command(BIN)
            .arg("--config")
            .arg(&conf)
            .env("MOBIKE_AGENT_LOG", "mobike_agent=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mobike-agent");
        self.agent = Some(child);
    }

    /// The agent's status: one JSON object per IKE SA.
    fn status(&self) -> Vec<Value> {
        let out = std::process::Command::new(BIN)
            .args(["status", "--json", "--control-socket"])
            .arg(self.control())
            .output()
            .expect("mobike-agent status");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The established IKE SA's status, if there is one.
    fn sa(&self) -> Option<Value> {
        self.status()
            .into_iter()
            .find(|s| s["state"] == "ESTABLISHED")
    }

    fn local(&self) -> String {
        self.sa()
            .and_then(|s| s["local"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    fn fail(&self, what: &str) -> ! {
        let agent = self.agent_log();
        let lines: Vec<&str> = agent.lines().collect();
        let from = lines.len().saturating_sub(60);
        let charon = self
            .charon
            .as_ref()
            .map(|c| c.list_sas())
            .unwrap_or_default();
        panic!(
            "FAIL: {what}\n--- status\n{:#?}\n--- agent log\n{}\n--- charon --list-sas\n{charon}",
            self.status(),
            lines[from..].join("\n")
        );
    }

    /// Whether the agent process is alive (an exited child is a zombie
    /// until it is reaped at drop).
    fn agent_runs(&self) -> bool {
        self.agent.as_ref().is_some_and(|a| {
            std::fs::read_to_string(format!("/proc/{}/stat", a.id()))
                .is_ok_and(|st| st.rsplit(") ").next().is_some_and(|r| !r.starts_with('Z')))
        })
    }

    fn wait_for(&self, secs: u64, what: &str, mut ready: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let outcome = wait::poll(deadline, Duration::from_millis(50), || {
            if !self.agent_runs() {
                return Some(false);
            }
            ready(self).then_some(true)
        });
        match outcome {
            Some(true) => {}
            Some(false) => self.fail(&format!("{what}: the agent exited")),
            None => self.fail(what),
        }
    }

    /// Waits until the IKE SA's last move is done to a local address on
    /// `iface` that `local` accepts, the SA is there and charon lists the
    /// agent at that address.
    fn wait_moved_to(&self, iface: Option<&str>, local: impl Fn(&str) -> bool, what: &str) {
        self.wait_for(10, what, |s| {
            let m = s.last_move();
            let to = m["to"]["local"].as_str().unwrap_or_default().to_owned();
            iface.is_none_or(|i| m["to"]["interface"] == i)
                && !m["moved_us"].is_null()
                && local(&to)
                && s.local().trim_start_matches('[').starts_with(&to)
                && s.charon
                    .as_ref()
                    .is_some_and(|c| c.list_sas().contains(&format!("@ {to}[")))
        });
    }

    /// The last completed move of the IKE SA.
    fn last_move(&self) -> Value {
        self.sa()
            .and_then(|s| s["mobility"]["moves"].as_array()?.last().cloned())
            .unwrap_or(Value::Null)
    }

    /// Candidates follow the kernel's routes: no pair whose source the
    /// kernel routes out of another interface, none without a route
    /// (charon lists its inner 10.2.0.1, which A has no route to).
    fn candidates_follow_routes(&self) {
        let sa = self.sa().unwrap_or(Value::Null);
        let c = sa["mobility"]["candidates"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let bad = c.iter().find(|c| {
            let (l, r) = (
                c["local"].as_str().unwrap_or(""),
                c["remote"].as_str().unwrap_or(""),
            );
            r == "10.2.0.1"
                || (l == "192.0.2.1" && r == "198.51.100.2")
                || (l == "198.51.100.1" && r == "192.0.2.2")
        });
        if let Some(bad) = bad {
            self.fail(&format!(
                "a candidate the kernel does not route that way: {bad}"
            ));
        }
        if c.is_empty() {
            self.fail("no candidates");
        }
    }

    /// trigger-db's LINK_HANDOVER_COMPLETE records, as `triggerctl
    /// history --json` prints them.
    fn handovers(&self) -> Vec<Value> {
        let out = std::process::Command::new(workspace_bin("triggerctl"))
            .arg("--json")
            .arg("history")
            .arg("--socket")
            .arg(self.trigger_socket())
            .args(["--type", "link-handover-complete", "--all"])
            .output()
            .expect("triggerctl history");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("id").is_some())
            .collect()
    }

    fn candidates_never_tunnel(&self) {
        let sa = self.sa().unwrap_or(Value::Null);
        let listed = sa["mobility"]["candidates"].to_string();
        if listed.contains("203.0.113.1") || listed.contains("tun0") {
            self.fail("a tunnel interface's address is a candidate");
        }
    }
}

#[test]
#[ignore = "needs root, charon and trigger-db's binaries: cargo test -p mobike-agent --test mobility_charon -- --ignored"]
fn the_agent_follows_the_hosts_links_through_trigger_db_and_by_itself() {
    if !process::is_root() || !charon::available() {
        eprintln!("skipped: needs root and charon");
        return;
    }
    let mut t = Setup::new();
    let charon = Charon::start(&t.b, &t.dir.path().join("B"), &charon_conf());
    t.charon = Some(charon);
    t.start_daemon();
    t.start_agent();
    t.wait_for(
        20,
        "the IKE SA comes up on up1 while following trigger-db",
        |s| {
            s.local().starts_with("192.0.2.1")
                && s.sa().is_some_and(|sa| {
                    sa["mobility_source"]["active"] == "trigger-db" && sa["mobility"].is_object()
                })
        },
    );
    t.candidates_never_tunnel();
    t.candidates_follow_routes();

    // 1. A lost link, reported by trigger-db.
    t.a.ip_line("link set up1 down");
    t.wait_moved_to(
        Some("up2"),
        |a| a == "198.51.100.1",
        "1: the IKE SA moves to up2 when up1 goes down",
    );
    // The kernel's hint may have been first: trigger-db's copy names the
    // move's trigger when it arrives.
    t.wait_for(5, "1: the move names its trigger", |s| {
        s.last_move()["trigger_id"].as_u64().unwrap_or(0) != 0
    });
    let m = t.last_move();
    if m["reason"] != "link-down" {
        t.fail(&format!("1: the move names its reason: {m}"));
    }
    if m["to"]["interface"] != "up2" || m["moved_us"].is_null() {
        t.fail(&format!("1: the move's timeline is complete: {m}"));
    }
    // The move is written back into trigger-db beside its cause.
    t.wait_for(
        10,
        "1: LINK_HANDOVER_COMPLETE in trigger-db's history",
        |s| {
            s.handovers().iter().any(|h| {
                let h = h.to_string();
                h.contains("up1")
                    && h.contains("up2")
                    && h.contains("198.51.100.1")
                    && h.contains("link-down")
            })
        },
    );
    t.candidates_never_tunnel();

    // 2. Make-before-break: Link_Going_Down for up2 while up1 is back.
    // up1's neighbour (charon's side of it) is known again before the
    // trigger, as on a link that is back in use: else the path test sent
    // with the trigger may wait for ARP on the link just back, and the
    // move does not wait for it (at most 50 ms for a better pair).
    t.a.ip_line("link set up1 up");
    t.wait_for(10, "2: up1 is a candidate again", |s| {
        s.sa().is_some_and(|sa| {
            sa["mobility"]["candidates"]
                .to_string()
                .contains("192.0.2.1")
        })
    });
    let neighbour_known = (0..50).any(|_| {
        t.a.command("ping")
            .args(["-c1", "-W1", "-I", "192.0.2.1", "192.0.2.2"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !neighbour_known {
        t.fail("2: 192.0.2.2 does not answer ping on up1");
    }
    let added = std::process::Command::new(workspace_bin("triggerctl"))
        .arg("add")
        .arg("--socket")
        .arg(t.trigger_socket())
        .args([
            "--type",
            "link-going-down",
            "--interface",
            "up2",
            "--time-interval",
            "5s",
        ])
        .output()
        .expect("triggerctl");
    if !added.status.success() {
        t.fail(&format!(
            "2: triggerctl add: {}",
            String::from_utf8_lossy(&added.stderr)
        ));
    }
    // IPv4 and IPv6 pairs on up1: the preferred family's, though the
    // other may answer its path test first.
    t.wait_moved_to(
        Some("up1"),
        |a| a == "192.0.2.1",
        "2: the IKE SA moves to up1 (IPv4) before up2 goes down",
    );
    let m = t.last_move();
    if m["reason"] != "going-down" {
        t.fail(&format!("2: a predictive move: {m}"));
    }
    // up2 was still up: the move was made before the break, which comes
    // now (and ends the prediction when the link is back).
    t.a.ip_line("link set up2 down");
    t.a.ip_line("link set up2 up");

    // 3. trigger-db stopped: the agent's own watch.
    if let Some(mut d) = t.daemon.take() {
        d.terminate();
    }
    t.wait_for(10, "3: the agent follows the links by itself", |s| {
        s.sa()
            .is_some_and(|sa| sa["mobility_source"]["active"] == "netlink")
    });
    t.a.ip_line("link set up1 down");
    t.wait_moved_to(
        Some("up2"),
        |a| a == "198.51.100.1",
        "3: the agent's own watch moves the IKE SA to up2",
    );
    let m = t.last_move();
    if m["reason"] != "link-down" || m["trigger_id"].as_u64() != Some(0) {
        t.fail(&format!("3: moved on the agent's own watch: {m}"));
    }
    t.a.ip_line("link set up1 up");
    t.start_daemon();
    t.wait_for(15, "3: the agent follows trigger-db again", |s| {
        s.sa().is_some_and(|sa| {
            sa["mobility_source"]["active"] == "trigger-db"
                && sa["mobility_source"]["synced"] == true
        })
    });

    // 4. IPv4 gone: IPv6.
    t.a.addr_add("up2", "2001:db8:2::1/64", &["nodad"]);
    t.a.ip_line("addr del 192.0.2.1/24 dev up1");
    t.a.ip_line("addr del 198.51.100.1/24 dev up2");
    t.wait_moved_to(
        None,
        |a| a.starts_with("2001:db8:"),
        "4: the IKE SA moves to IPv6 when IPv4 goes",
    );
    let m = t.last_move();
    // The kernel may stop routing from the address before its removal is
    // reported: either is a forced move.
    if m["reason"] != "address-gone" && m["reason"] != "no-route" {
        t.fail(&format!("4: moved because the address went: {m}"));
    }
    t.candidates_never_tunnel();

    // 5. trigger-db holds link-downs back 30 s: the kernel's hint moves
    // the IKE SA meanwhile.
    if let Some(mut d) = t.daemon.take() {
        d.terminate();
    }
    t.wait_for(10, "5: the agent sees trigger-db gone", |s| {
        s.sa()
            .is_some_and(|sa| sa["mobility_source"]["active"] == "netlink")
    });
    // Everything trigger-db would say of a link going down is held back:
    // only the kernel's hint can move the IKE SA in time.
    t.start_daemon_with(Some(
        "[damping]\ndebounce = { link-down = \"30s\", if-addr-removed = \"30s\", \
         if-addr-changed = \"30s\", default-route-removed = \"30s\" }\n",
    ));
    t.wait_for(15, "5: the agent follows trigger-db again", |s| {
        s.sa().is_some_and(|sa| {
            sa["mobility_source"]["active"] == "trigger-db"
                && sa["mobility_source"]["synced"] == true
        })
    });
    // The uplink in use: where step 4's move went.
    let (down, other) = if t.last_move()["to"]["interface"] == "up1" {
        ("up1", "up2")
    } else {
        ("up2", "up1")
    };
    let hinted = |s: &Setup| {
        s.sa()
            .and_then(|sa| sa["mobility_source"]["kernel_hints"].as_u64())
    };
    let before = hinted(&t).unwrap_or_else(|| t.fail("5: kernel hints are on by default"));
    let started = Instant::now();
    t.a.ip_line(&format!("link set {down} down"));
    t.wait_moved_to(
        Some(other),
        |a| a.starts_with("2001:db8:"),
        "5: the kernel's loss hint moves the IKE SA",
    );
    if started.elapsed() >= Duration::from_secs(20) {
        t.fail("5: moved before trigger-db's debounce ended");
    }
    let m = t.last_move();
    if m["reason"] != "link-down" {
        t.fail(&format!("5: moved because the link went down: {m}"));
    }
    if hinted(&t).is_none_or(|n| n <= before) {
        t.fail("5: the status counts the hint");
    }
    assert!(
        t.charon
            .as_ref()
            .unwrap()
            .list_sas()
            .contains("ESTABLISHED"),
        "charon still has the IKE SA"
    );
}
