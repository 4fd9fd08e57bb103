//! `mobike-agent status` end to end: two agents in a network namespace of
//! their own, 127.0.0.1 initiating to 127.0.0.2, each asked over its control
//! socket (backend `none`, and a kernel that refuses A's CHILD_SA). Needs root and iproute2 for the
//! namespace; without them the two-agent test says so and passes.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use system_tests::{
    netns::{self, Netns},
    process, wait,
};

const BIN: &str = env!("CARGO_BIN_EXE_mobike-agent");

fn status(socket: &Path) -> Output {
    Command::new(BIN)
        .args(["status", "--json", "--control-socket"])
        .arg(socket)
        .output()
        .expect("run mobike-agent status")
}

#[test]
fn unreachable_socket_is_one_line_naming_it_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("nobody-here.sock");
    let out = status(&sock);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&sock.display().to_string()), "{err}");
    assert!(out.stdout.is_empty());
}

/// A namespace and the agents in it: on drop the agents get SIGTERM (up
/// to 8 s to exit, then SIGKILL) before the namespace is deleted.
struct Guard {
    agents: Vec<Child>,
    ns: Netns,
}

impl Guard {
    /// A fresh namespace, or `None` (the test is skipped) without root or
    /// iproute2.
    fn new(tag: &str) -> Option<Self> {
        let Some(ns) = Netns::try_new(tag) else {
            eprintln!("skipped: needs root and iproute2 (network namespace)");
            return None;
        };
        Some(Self {
            agents: Vec::new(),
            ns,
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for a in &self.agents {
            process::signal(a, libc::SIGTERM);
        }
        for a in &mut self.agents {
            process::stop(a, Duration::from_secs(8));
        }
    }
}

fn config(local: &str, remote: &str, local_id: &str, remote_id: &str, start: &str) -> String {
    let (lts, rts) = if start == "initiate" {
        ("10.1.0.0/24", "10.2.0.0/24")
    } else {
        ("10.2.0.0/24", "10.1.0.0/24")
    };
    format!(
        r#"[kernel]
backend = "none"

[connections.st]
local_addrs = ["{local}"]
remote_addrs = ["{remote}"]
local_id = "{local_id}"
remote_id = "{remote_id}"
psk = "status-test-psk"
proposals = ["aes256gcm16-prfsha256-x25519"]
start = "{start}"

[connections.st.children.net]
local_ts = ["{lts}"]
remote_ts = ["{rts}"]
esp_proposals = ["aes256gcm16"]
"#
    )
}

fn spawn(ns: &Netns, conf: &Path, sock: &Path, log: &Path) -> Child {
    ns.command(BIN)
        .arg("--config")
        .arg(conf)
        .arg("--control-socket")
        .arg(sock)
        .env("MOBIKE_AGENT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn agent")
}

/// The one IKE SA of `sock` once it is ESTABLISHED with one CHILD_SA.
fn established(sock: &Path, deadline: Instant) -> Option<Value> {
    wait::poll(deadline, Duration::from_millis(100), || {
        let out = status(sock);
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let sas: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
                .collect();
            if let [sa] = sas.as_slice()
                && sa["state"] == "ESTABLISHED"
                && sa["child_sas"].as_array().is_some_and(|c| c.len() == 1)
            {
                return Some(sa.clone());
            }
        }
        None
    })
}

/// Two agents in a fresh namespace (B listening on 127.0.0.2, A initiating
/// from 127.0.0.1), each with a control socket in `dir`; `backend_a` is A's
/// kernel backend. `prepare` runs in the namespace before the agents start.
struct Pair {
    guard: Guard,
    dir: tempfile::TempDir,
}

impl Pair {
    fn start(backend_a: &str, prepare: &[&[&str]]) -> Option<Self> {
        Self::start_with(backend_a, "initiate", prepare)
    }

    fn start_with(backend_a: &str, start_a: &str, prepare: &[&[&str]]) -> Option<Self> {
        Self::start_full(backend_a, start_a, "", prepare)
    }

    /// `extra_a`: more lines for A's connection section.
    fn start_full(
        backend_a: &str,
        start_a: &str,
        extra_a: &str,
        prepare: &[&[&str]],
    ) -> Option<Self> {
        Self::start_edited(backend_a, start_a, extra_a, [&|a| a, &|b| b], prepare)
    }

    /// `edit`: rewrites of A's and B's configuration text.
    fn start_edited(
        backend_a: &str,
        start_a: &str,
        extra_a: &str,
        edit: [&dyn Fn(String) -> String; 2],
        prepare: &[&[&str]],
    ) -> Option<Self> {
        let mut guard = Guard::new("mbkst")?;
        for args in prepare {
            guard.ns.ip(args);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| -> PathBuf { dir.path().join(n) };
        let a = config("127.0.0.1", "127.0.0.2", "a.test", "b.test", "initiate")
            .replace("backend = \"none\"", &format!("backend = \"{backend_a}\""))
            .replace(
                "start = \"initiate\"",
                &format!("start = \"{start_a}\"\n{extra_a}"),
            );
        std::fs::write(p("a.toml"), edit[0](a)).expect("write a.toml");
        std::fs::write(
            p("b.toml"),
            edit[1](config(
                "127.0.0.2",
                "127.0.0.1",
                "b.test",
                "a.test",
                "listen",
            )),
        )
        .expect("write b.toml");
        let b = spawn(&guard.ns, &p("b.toml"), &p("b.sock"), &p("b.log"));
        guard.agents.push(b);
        // B listens before A initiates (A would retransmit anyway).
        b_listens(&p("b.sock"));
        let a = spawn(&guard.ns, &p("a.toml"), &p("a.sock"), &p("a.log"));
        guard.agents.push(a);
        Some(Self { guard, dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn logs(&self) -> String {
        format!(
            "--- a.log\n{}\n--- b.log\n{}",
            std::fs::read_to_string(self.path("a.log")).unwrap_or_default(),
            std::fs::read_to_string(self.path("b.log")).unwrap_or_default()
        )
    }
}

#[test]
fn two_agents_report_the_same_ike_sa_and_mirrored_child_sa() {
    let Some(pair) = Pair::start("none", &[]) else {
        return;
    };
    let p = |n: &str| pair.path(n);
    let deadline = Instant::now() + Duration::from_secs(15);
    let a = established(&p("a.sock"), deadline).unwrap_or_else(|| panic!("A: {}", pair.logs()));
    let b = established(&p("b.sock"), deadline).unwrap_or_else(|| panic!("B: {}", pair.logs()));

    assert_eq!(a["initiator"], true);
    assert_eq!(b["initiator"], false);
    assert_eq!(a["name"], "st");
    // With MOBIKE both sides float to the NAT-T port in IKE_AUTH (RFC 4555 §3.2).
    assert_eq!(a["local"], "127.0.0.1:4500");
    assert_eq!(a["remote"], "127.0.0.2:4500");
    assert_eq!(b["local"], a["remote"]);
    assert_eq!(b["remote"], a["local"]);
    assert_eq!(a["spi_i"], b["spi_i"]);
    assert_eq!(a["spi_r"], b["spi_r"]);
    assert_ne!(a["spi_r"], "0000000000000000");
    for sa in [&a, &b] {
        assert_eq!(sa["local_behind_nat"], false);
        assert_eq!(sa["remote_behind_nat"], false);
        assert_eq!(sa["mobike"], true);
        assert_eq!(sa["backend"], "none");
        assert_eq!(sa["local_auth"], "psk");
        assert_eq!(sa["remote_auth"], "psk");
        assert_eq!(sa["peer_cert"], Value::Null);
    }
    let (ca, cb) = (&a["child_sas"][0], &b["child_sas"][0]);
    assert_eq!(ca["name"], "net");
    assert_eq!(ca["state"], "INSTALLED");
    assert_eq!(ca["spi_in"], cb["spi_out"]);
    assert_eq!(ca["spi_out"], cb["spi_in"]);
    assert_eq!(ca["local_ts"], serde_json::json!(["10.1.0.0/24"]));
    assert_eq!(ca["remote_ts"], serde_json::json!(["10.2.0.0/24"]));
    assert_eq!(cb["local_ts"], ca["remote_ts"]);
    assert_eq!(cb["remote_ts"], ca["local_ts"]);
    assert_eq!(ca["counters_known"], false);
    assert_eq!(ca["bytes_in"], 0);

    // The table names the same SPIs.
    let out = Command::new(BIN)
        .args(["status", "--control-socket"])
        .arg(p("a.sock"))
        .output()
        .expect("status table");
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let spi_i = a["spi_i"].as_str().expect("spi_i string");
    let spi_in = ca["spi_in"].as_str().expect("spi_in string");
    assert!(
        table.contains(spi_i) && table.contains(spi_in) && table.contains("ESTABLISHED"),
        "{table}"
    );
    assert!(
        table.contains("  auth: ours psk, the peer's psk\n"),
        "{table}"
    );
    assert!(!table.contains("peer certificate"), "{table}");

    // SIGTERM: the agents delete the SA and remove their sockets.
    let (a_sock, b_sock) = (p("a.sock"), p("b.sock"));
    drop(pair.guard);
    assert!(!a_sock.exists() && !b_sock.exists());
}

/// With certificates (A ECDSA P-256, B RSA, both under the test PKI's
/// intermediate): each side shows how both signed and the peer's
/// certificate, in JSON and in the table.
#[test]
fn the_peers_certificate_and_both_methods_are_shown() {
    let pki = system_tests::certs::Pki::new();
    pki.end_entity("a", "ec", "DNS:a.test", "digitalSignature");
    pki.end_entity("b", "rsa", "DNS:b.test", "digitalSignature");
    let lines = |name: &str| {
        format!(
            "local_auth = \"pubkey\"\ncert = {:?}\nkey = {:?}\ncacerts = [{:?}]",
            pki.chain(name).display().to_string(),
            pki.path(&format!("{name}.key")).display().to_string(),
            pki.path("root.pem").display().to_string(),
        )
    };
    let (la, lb) = (lines("a"), lines("b"));
    let edit_a = move |t: String| t.replace("psk = \"status-test-psk\"", &la);
    let edit_b = move |t: String| t.replace("psk = \"status-test-psk\"", &lb);
    let Some(pair) = Pair::start_edited("none", "initiate", "", [&edit_a, &edit_b], &[]) else {
        return;
    };
    let p = |n: &str| pair.path(n);
    let deadline = Instant::now() + Duration::from_secs(15);
    let a = established(&p("a.sock"), deadline).unwrap_or_else(|| panic!("A: {}", pair.logs()));
    let b = established(&p("b.sock"), deadline).unwrap_or_else(|| panic!("B: {}", pair.logs()));
    let (ec, rsa) = ("ecdsa-p256-sha256 (RFC 7427)", "rsa-pss-sha256 (RFC 7427)");
    assert_eq!(
        (&a["local_auth"], &a["remote_auth"]),
        (&ec.into(), &rsa.into())
    );
    assert_eq!(
        (&b["local_auth"], &b["remote_auth"]),
        (&rsa.into(), &ec.into())
    );
    let issuer = "C=CH, O=mobike test, CN=Intermediate CA";
    for (sa, peer) in [(&a, "b"), (&b, "a")] {
        let c = &sa["peer_cert"];
        assert_eq!(c["subject"], format!("C=CH, O=mobike test, CN={peer}.test"));
        assert_eq!(c["issuer"], issuer);
        // Valid 365 days from its making a moment ago.
        let left = c["expires_in"].as_i64().expect("expires_in");
        assert!((364 * 86_400..=365 * 86_400).contains(&left), "{c}");
        let not_after = c["not_after"].as_str().expect("not_after");
        assert!(
            not_after.len() == 20 && not_after.ends_with('Z') && not_after.as_bytes()[10] == b'T',
            "RFC 3339 UTC: {not_after}"
        );
    }
    let out = Command::new(BIN)
        .args(["status", "--control-socket"])
        .arg(p("a.sock"))
        .output()
        .expect("status table");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("  auth: ours {ec}, the peer's {rsa}\n")),
        "{table}"
    );
    let cert_line = format!(
        "  peer certificate: C=CH, O=mobike test, CN=b.test, issued by {issuer}, expires {}",
        a["peer_cert"]["not_after"].as_str().unwrap_or_default()
    );
    assert!(table.contains(&cert_line), "{table}");
}

/// The one IKE SA of `sock` once it is ESTABLISHED with no CHILD_SA.
fn established_without_children(sock: &Path, deadline: Instant) -> Option<Value> {
    wait::poll(deadline, Duration::from_millis(100), || {
        let out = status(sock);
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success()
            && let Some(Ok(sa)) = text.lines().next().map(serde_json::from_str::<Value>)
            && text.lines().count() == 1
            && sa["state"] == "ESTABLISHED"
            && sa["child_sas"].as_array().is_some_and(Vec::is_empty)
        {
            return Some(sa);
        }
        None
    })
}

/// A's kernel (backend `xfrm`) refuses the CHILD_SA: an administrator's
/// policy for the same selectors is in the way (and on a kernel without
/// ESP the SAs fail first). A logs the failure, deletes the CHILD_SA with
/// B, and both keep the IKE SA; the administrator's policy is untouched.
#[test]
fn child_sa_the_kernel_refuses_is_deleted_with_the_peer() {
    let Some(pair) = Pair::start(
        "xfrm",
        &[&[
            "xfrm",
            "policy",
            "add",
            "src",
            "10.1.0.0/24",
            "dst",
            "10.2.0.0/24",
            "dir",
            "out",
            "action",
            "block",
        ]],
    ) else {
        return;
    };
    let p = |n: &str| pair.path(n);
    let deadline = Instant::now() + Duration::from_secs(20);
    let a = established_without_children(&p("a.sock"), deadline)
        .unwrap_or_else(|| panic!("A kept a CHILD_SA:\n{}", pair.logs()));
    let b = established_without_children(&p("b.sock"), deadline)
        .unwrap_or_else(|| panic!("B kept a CHILD_SA:\n{}", pair.logs()));
    assert_eq!(a["spi_i"], b["spi_i"]);
    assert_eq!(a["backend"], "xfrm");
    let logs = pair.logs();
    assert!(logs.contains("kernel: CHILD_SA action failed"), "{logs}");
    assert!(logs.contains("op=Install"), "{logs}");
    assert!(logs.contains("ChildSaDeleted"), "{logs}");
    // Only the administrator's policy is there, and no SA.
    let ns = pair.guard.ns.name();
    let pol = Command::new("ip")
        .args(["-n", ns, "xfrm", "policy"])
        .output()
        .expect("ip xfrm policy");
    let pol = String::from_utf8_lossy(&pol.stdout);
    // (Besides the agents' per-socket IKE bypass, listed as "socket".)
    assert_eq!(pol.matches("\tdir ").count(), 1, "{pol}");
    assert!(pol.contains("action block"), "{pol}");
    assert_eq!(
        pol.matches("\tsocket ").count(),
        pol.matches("src ").count() - 1,
        "{pol}"
    );
    let st = Command::new("ip")
        .args(["-n", ns, "xfrm", "state"])
        .output()
        .expect("ip xfrm state");
    assert!(
        st.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&st.stdout)
    );
}

fn cli(sock: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--control-socket")
        .arg(sock)
        .output()
        .expect("run mobike-agent")
}

/// The IKE SAs `sock` reports.
fn sas(sock: &Path) -> Vec<Value> {
    let out = status(sock);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn wait_until(what: &str, f: impl FnMut() -> bool) {
    wait::until(what, Duration::from_secs(15), Duration::from_millis(100), f);
}

/// Waits up to 5 s for B's control socket, the sign that B listens (A
/// would retransmit to a late B anyway, so no failure here).
fn b_listens(sock: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    wait::poll(deadline, Duration::from_millis(20), || {
        sock.exists().then_some(())
    });
}

/// A road warrior (backend `xfrm`) asks B for a virtual IP and gets one
/// from B's pool; A puts it on `lo`, reports it, and takes it away again
/// when it stops. (The host kernel has no ESP, so A's CHILD_SA itself is
/// refused and deleted; the address does not depend on it.)
#[test]
fn a_virtual_ip_from_the_gateways_pool_goes_on_lo_and_away_again() {
    let Some(mut pair) = Pair::start_edited(
        "xfrm",
        "initiate",
        "vips = [\"0.0.0.0\"]\n",
        [
            // A proposes what it is given: no local_ts of its own.
            &|a| a.replace("local_ts = [\"10.1.0.0/24\"]\n", ""),
            &|b| {
                b.replace(
                    "start = \"listen\"",
                    "start = \"listen\"\npools = [\"10.9.0.0/24\"]",
                )
                .replace(
                    "remote_ts = [\"10.1.0.0/24\"]",
                    "remote_ts = [\"10.9.0.0/16\"]",
                )
            },
        ],
        &[],
    ) else {
        return;
    };
    let ns = pair.guard.ns.name().to_owned();
    wait_until("A's control socket", || pair.path("a.sock").exists());
    let p = |n: &str| pair.path(n);
    let lo_has = |addr: &str| {
        let out = Command::new("ip")
            .args(["-n", &ns, "addr", "show", "dev", "lo"])
            .output()
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout).contains(&format!("inet {addr}/32"))
    };
    wait_until("A has a virtual IP", || {
        sas(&p("a.sock"))
            .first()
            .is_some_and(|s| s["virtual_ips"] == serde_json::json!(["10.9.0.1"]))
    });
    wait_until("10.9.0.1 on lo", || lo_has("10.9.0.1"));
    let b = sas(&p("b.sock"));
    assert_eq!(
        b[0]["peer_virtual_ips"],
        serde_json::json!(["10.9.0.1"]),
        "{b:?}"
    );
    let logs = pair.logs();
    assert!(logs.contains("virtual IP installed"), "{logs}");
    // SIGTERM: A deletes its IKE SA and takes the address off.
    let a = &mut pair.guard.agents[1];
    let _ = Command::new("kill")
        .args(["-TERM", &a.id().to_string()])
        .status();
    let _ = a.wait();
    assert!(!lo_has("10.9.0.1"), "{}", pair.logs());
}

/// SIGHUP reloads the file: unchanged, the IKE SA goes on; a changed
/// connection is re-established with the new configuration; a file with
/// an error is refused and the running configuration stays.
#[test]
fn sighup_reloads_the_configuration() {
    let Some(pair) = Pair::start("none", &[]) else {
        return;
    };
    let p = |n: &str| pair.path(n);
    let hup = || {
        let pid = pair.guard.agents[1].id().to_string();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    let a_log = || std::fs::read_to_string(p("a.log")).unwrap_or_default();
    let wait_log = |what: &str, n: usize| {
        wait_until(what, || a_log().matches(what).count() >= n);
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = established(&p("a.sock"), deadline).unwrap_or_else(|| panic!("{}", pair.logs()));

    hup();
    wait_log("configuration reloaded", 1);
    std::thread::sleep(Duration::from_millis(500));
    let same = established(&p("a.sock"), Instant::now() + Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{}", pair.logs()));
    assert_eq!(
        same["spi_i"], first["spi_i"],
        "an unchanged reload kept the SA"
    );

    // Another ESP proposal first: the connection changed.
    let text = std::fs::read_to_string(p("a.toml")).unwrap();
    let changed = text.replace(
        "esp_proposals = [\"aes256gcm16\"]",
        "esp_proposals = [\"chacha20poly1305\", \"aes256gcm16\"]",
    );
    assert_ne!(changed, text);
    std::fs::write(p("a.toml"), &changed).unwrap();
    hup();
    wait_log("configuration reloaded", 2);
    wait_until("a new IKE SA with the new configuration", || {
        let s = sas(&p("a.sock"));
        s.len() == 1
            && s[0]["spi_i"] != first["spi_i"]
            && s[0]["state"] == "ESTABLISHED"
            && s[0]["child_sas"].as_array().is_some_and(|c| c.len() == 1)
    });
    assert!(a_log().contains("changed=[\"st\"]"), "{}", a_log());
    let now = sas(&p("a.sock")).remove(0);

    // A broken file: refused, nothing changes.
    std::fs::write(
        p("a.toml"),
        changed.replace("proposals = [", "proposals = 7 ["),
    )
    .unwrap();
    hup();
    wait_log("reload refused", 1);
    std::thread::sleep(Duration::from_millis(500));
    let still = sas(&p("a.sock")).remove(0);
    assert_eq!(still["spi_i"], now["spi_i"]);
    assert_eq!(a_log().matches("configuration reloaded").count(), 2);
}

/// `mobike-agent move`: a multihomed host moves its IKE SA to its other
/// address (MOBIKE UPDATE_SA_ADDRESSES); both sides then use the new pair.
/// Addresses it does not listen on, or of the wrong family, are refused
/// with one line naming them.
#[test]
fn move_takes_the_ike_sa_to_another_local_address() {
    let Some(pair) = Pair::start_edited(
        "none",
        "initiate",
        "",
        [
            &|a| a.replace("[\"127.0.0.1\"]", "[\"127.0.0.1\", \"127.0.0.3\"]"),
            &|b| b,
        ],
        &[],
    ) else {
        return;
    };
    let (a, b) = (pair.path("a.sock"), pair.path("b.sock"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = established(&a, deadline).unwrap_or_else(|| panic!("{}", pair.logs()));
    assert_eq!(first["local"], "127.0.0.1:4500");

    let out = cli(&a, &["move", "st", "--local", "127.0.0.3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("moved to 127.0.0.3:4500 - 127.0.0.2:4500"),
        "{text}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        pair.logs()
    );
    let sa_a = sas(&a).remove(0);
    assert_eq!(sa_a["local"], "127.0.0.3:4500");
    assert_eq!(sa_a["spi_i"], first["spi_i"], "the same IKE SA");
    assert_eq!(sa_a["updating_addresses"], false);
    wait_until("B follows", || sas(&b)[0]["remote"] == "127.0.0.3:4500");

    for (args, says) in [
        (
            &["move", "st", "--local", "127.0.0.9"][..],
            "not listening on 127.0.0.9",
        ),
        (
            &["move", "st", "--local", "127.0.0.1", "--remote", "::1"][..],
            "different address families",
        ),
    ] {
        let out = cli(&a, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    assert_eq!(sas(&a)[0]["local"], "127.0.0.3:4500");
}

/// `dpd_action = "restart"` with `keyingtries = 0`: B dies (SIGKILL, no
/// Delete), A's liveness check goes unanswered and A keeps trying to
/// re-establish, backing off; once B runs again, A brings the connection
/// back up by itself with a new IKE SA and CHILD_SA.
#[test]
fn a_dead_peer_is_re_established_when_it_comes_back() {
    let extra = "dpd_delay = \"1s\"\nretransmit_timeout = \"200ms\"\nretransmit_tries = 2\n\
                 dpd_action = \"restart\"\nkeyingtries = 0\n";
    let Some(mut pair) = Pair::start_full("none", "initiate", extra, &[]) else {
        return;
    };
    let dir = pair.dir.path().to_path_buf();
    let p = |n: &str| dir.join(n);
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = established(&p("a.sock"), deadline).unwrap_or_else(|| panic!("{}", pair.logs()));
    established(&p("b.sock"), deadline).unwrap_or_else(|| panic!("{}", pair.logs()));

    let b = &mut pair.guard.agents[0];
    b.kill().expect("SIGKILL B");
    b.wait().expect("reap B");
    let a_log = || std::fs::read_to_string(p("a.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Declared dead, then at least one attempt that went unanswered too.
    wait::poll(deadline, Duration::from_millis(100), || {
        (a_log().matches("re-establishing the connection").count() >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("A did not retry:\n{}", pair.logs()));
    assert!(a_log().contains("PeerUnreachable"), "{}", pair.logs());

    let _ = std::fs::remove_file(p("b.sock"));
    pair.guard.agents[0] = spawn(&pair.guard.ns, &p("b.toml"), &p("b.sock"), &p("b2.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let again = established(&p("a.sock"), deadline)
        .unwrap_or_else(|| panic!("A did not re-establish:\n{}", pair.logs()));
    assert_ne!(again["spi_i"], first["spi_i"], "a new IKE SA");
    let b = established(&p("b.sock"), Instant::now() + Duration::from_secs(5))
        .unwrap_or_else(|| panic!("B: {}", pair.logs()));
    assert_eq!(b["spi_i"], again["spi_i"]);
    assert_eq!(
        again["child_sas"][0]["spi_in"],
        b["child_sas"][0]["spi_out"]
    );
}

/// `initiate`, `rekey` and `terminate` as an operator uses them: A starts
/// nothing by itself, the CLI brings the connection up, rekeys a CHILD_SA
/// and the IKE SA, and takes it down on both sides; mistakes are one line
/// naming what was wrong.
#[test]
fn initiate_rekey_and_terminate_from_the_command_line() {
    let Some(pair) = Pair::start_with("none", "listen", &[]) else {
        return;
    };
    let (a, b) = (pair.path("a.sock"), pair.path("b.sock"));
    wait_until("A's control socket", || a.exists());
    assert!(sas(&a).is_empty(), "A must not initiate by itself");

    let bad = cli(&a, &["initiate", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("no connection named `nope`") && err.contains("NotFound"),
        "{err}"
    );

    let up = cli(&a, &["initiate", "st"]);
    let text = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "{text}{}\n{}",
        String::from_utf8_lossy(&up.stderr),
        pair.logs()
    );
    assert!(text.contains("established, 1 CHILD_SA(s)"), "{text}");
    let sa = sas(&a).remove(0);
    assert_eq!(sa["state"], "ESTABLISHED");
    let spi_i = sa["spi_i"].as_str().expect("spi_i").to_owned();
    let child = sa["child_sas"][0]["spi_in"]
        .as_str()
        .expect("spi_in")
        .to_owned();
    wait_until("B established", || {
        sas(&b)
            .first()
            .is_some_and(|s| s["spi_i"] == spi_i.as_str())
    });

    // Rekey the CHILD_SA: a new inbound SPI on A, mirrored at B.
    let r = cli(&a, &["rekey", "st", "--child", &child]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    wait_until("CHILD_SA rekeyed", || {
        let s = sas(&a);
        s.len() == 1
            && s[0]["child_sas"].as_array().is_some_and(|c| c.len() == 1)
            && s[0]["child_sas"][0]["spi_in"] != child.as_str()
    });
    let bad = cli(&a, &["rekey", "st", "--child", "12345678"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("12345678"), "{err}");

    // Rekey the IKE SA by SPI: a new IKE SA replaces it on both sides.
    let r = cli(&a, &["rekey", "--ike-spi", &spi_i]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    wait_until("IKE SA rekeyed", || {
        let s = sas(&a);
        s.len() == 1 && s[0]["spi_i"] != spi_i.as_str() && s[0]["state"] == "ESTABLISHED"
    });
    let new_spi = sas(&a)[0]["spi_i"].as_str().expect("spi_i").to_owned();
    wait_until("B follows the IKE rekey", || {
        let s = sas(&b);
        s.len() == 1 && s[0]["spi_i"] == new_spi.as_str()
    });

    // Terminate by connection name: gone on both sides.
    let t = cli(&a, &["terminate", "st"]);
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    assert!(String::from_utf8_lossy(&t.stdout).contains("deleted"));
    assert!(sas(&a).is_empty());
    wait_until("B deleted", || sas(&b).is_empty());
    let bad = cli(&a, &["terminate", "--ike-spi", &new_spi]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("no IKE SA with SPI"),
        "{err}"
    );
    // Connection name and SPI exclude each other (clap says so).
    let bad = cli(&a, &["terminate", "st", "--ike-spi", "1"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// `local_addrs` left out ("any") on both sides, in two namespaces joined
/// by a veth pair: B listens on the wildcards and learns which of its
/// addresses each datagram was sent to; A starts from the address the
/// kernel routes towards B (a responder with no `remote_addrs` takes any
/// peer). Both report the exact addresses of the path. IPv4 and IPv6.
#[test]
fn any_local_address_on_both_sides_ipv4() {
    any_local_address(["192.0.2.1", "192.0.2.2", "198.51.100.2"], "24", "", false);
}

#[test]
fn any_local_address_on_both_sides_ipv6() {
    any_local_address(["fd10::1", "fd10::2", "fd10::99"], "64", "nodad", false);
}

/// The hosts' IPsec policies cover the agents' own addresses (as a full
/// tunnel, `remote_ts = 0.0.0.0/0`, or host-to-host transport mode do):
/// here an administrator's policies in both namespaces block everything
/// not protected by IPsec, both ways. IKE must still pass, IKE_SA_INIT to
/// an IKE SA rekey, because the agents' sockets bypass IPsec (as charon's
/// do); a ping between the same addresses does not.
#[test]
fn ike_bypasses_the_hosts_ipsec_policies_ipv4() {
    any_local_address(["192.0.2.1", "192.0.2.2", "198.51.100.2"], "24", "", true);
}

#[test]
fn ike_bypasses_the_hosts_ipsec_policies_ipv6() {
    any_local_address(["fd10::1", "fd10::2", "fd10::99"], "64", "nodad", true);
}

/// `addrs`: A's, B's, and a second address of B it must not answer from.
/// `block`: IPsec policies in both namespaces block all traffic.
fn any_local_address(addrs: [&str; 3], len: &str, flags: &str, block: bool) {
    let tag = if flags.is_empty() { 4 } else { 6 };
    let kind = if block { "blk" } else { "any" };
    let [a_ip, b_ip, b_other] = addrs;
    let sock_addr = |ip: &str| -> String {
        if ip.contains(':') {
            format!("[{ip}]:4500")
        } else {
            format!("{ip}:4500")
        }
    };
    let Some(mut ga) = Guard::new(&format!("mbk{kind}{tag}A")) else {
        return;
    };
    let mut gb = Guard::new(&format!("mbk{kind}{tag}B")).expect("a second namespace");
    netns::veth(&ga.ns, "va", &gb.ns, "vb");
    let flags: &[&str] = if flags.is_empty() { &[] } else { &[flags] };
    for (ns, dev, addr) in [
        (&ga.ns, "va", a_ip),
        (&gb.ns, "vb", b_ip),
        (&gb.ns, "vb", b_other),
    ] {
        ns.addr_add(dev, &format!("{addr}/{len}"), flags);
        ns.up(dev);
    }
    if block {
        let any = if tag == 4 { "0.0.0.0/0" } else { "::/0" };
        for ns in [&ga.ns, &gb.ns] {
            for d in ["out", "in"] {
                ns.ip(&[
                    "xfrm", "policy", "add", "src", any, "dst", any, "dir", d, "priority", "100",
                    "action", "block",
                ]);
                // IPv6 neighbour discovery (solicitation, advertisement)
                // is let through, as hosts with such policies do.
                for ty in ["135", "136"].into_iter().filter(|_| tag == 6) {
                    ns.ip(&[
                        "xfrm",
                        "policy",
                        "add",
                        "src",
                        any,
                        "dst",
                        any,
                        "proto",
                        "ipv6-icmp",
                        "type",
                        ty,
                        "dir",
                        d,
                        "priority",
                        "10",
                        "action",
                        "allow",
                    ]);
                }
            }
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| -> PathBuf { dir.path().join(n) };
    let strip = |text: String, drop_remote: bool| -> String {
        text.lines()
            .filter(|l| {
                !(l.starts_with("local_addrs") || drop_remote && l.starts_with("remote_addrs"))
            })
            .map(|l| format!("{l}\n"))
            .collect()
    };
    std::fs::write(
        p("a.toml"),
        strip(config("x", b_ip, "a.test", "b.test", "initiate"), false),
    )
    .expect("write a.toml");
    std::fs::write(
        p("b.toml"),
        strip(config("x", "x", "b.test", "a.test", "listen"), true),
    )
    .expect("write b.toml");
    let b = spawn(&gb.ns, &p("b.toml"), &p("b.sock"), &p("b.log"));
    gb.agents.push(b);
    b_listens(&p("b.sock"));
    let a = spawn(&ga.ns, &p("a.toml"), &p("a.sock"), &p("a.log"));
    ga.agents.push(a);
    let logs = || {
        format!(
            "--- a.log\n{}\n--- b.log\n{}",
            std::fs::read_to_string(p("a.log")).unwrap_or_default(),
            std::fs::read_to_string(p("b.log")).unwrap_or_default()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let a = established(&p("a.sock"), deadline).unwrap_or_else(|| panic!("A: {}", logs()));
    let b = established(&p("b.sock"), deadline).unwrap_or_else(|| panic!("B: {}", logs()));
    assert_eq!(a["local"], sock_addr(a_ip).as_str(), "{a}");
    assert_eq!(a["remote"], sock_addr(b_ip).as_str(), "{a}");
    assert_eq!(b["local"], sock_addr(b_ip).as_str(), "{b}");
    assert_eq!(b["remote"], sock_addr(a_ip).as_str(), "{b}");
    assert_eq!(
        a["local_behind_nat"], false,
        "the exact addresses hash alike: {a}"
    );
    assert_eq!(b["remote_behind_nat"], false, "{b}");
    assert_eq!(a["spi_i"], b["spi_i"]);
    if block {
        // The policies are in force for anything but IKE.
        let ping = Command::new("ip")
            .args([
                "netns",
                "exec",
                ga.ns.name(),
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                b_ip,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("ping");
        assert!(!ping.success(), "the block policies are not in force");
        // Requests both ways after establishment: an IKE SA rekey.
        let spi_i = a["spi_i"].as_str().expect("spi_i").to_owned();
        let r = cli(&p("a.sock"), &["rekey", "--ike-spi", &spi_i]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        wait_until("IKE SA rekeyed through the block policies", || {
            let (a, b) = (sas(&p("a.sock")), sas(&p("b.sock")));
            a.len() == 1
                && b.len() == 1
                && a[0]["spi_i"] != spi_i.as_str()
                && a[0]["spi_i"] == b[0]["spi_i"]
                && a[0]["state"] == "ESTABLISHED"
        });
        assert!(!logs().contains("cannot exempt"), "{}", logs());
    }
    assert!(
        logs().contains(if tag == 4 { "0.0.0.0:500" } else { "[::]:500" }),
        "B listens on the wildcard: {}",
        logs()
    );
    drop(ga);
    drop(gb);
}
