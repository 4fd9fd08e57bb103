//! Interop with strongSwan's charon through the real binary: the agent
//! (kernel backend `none`) in network namespace A at 192.0.2.1, charon in B
//! at 192.0.2.2 (kernel-libipsec, since the CI host kernel has no ESP,
//! which needs ESP-in-UDP: `encap = yes`, so charon fakes NAT detection
//! and both sides move to port 4500). One test, scenarios in order:
//!
//! 1. the agent initiates aes256gcm16-prfsha256-x25519 / ESP aes256gcm16;
//!    charon rekeys the CHILD_SA and the IKE SA; SIGTERM deletes the SAs.
//! 2. charon initiates aes128gcm16-prfsha384-ecp384 / ESP chacha20poly1305;
//!    the agent rekeys CHILD_SA and IKE SA itself and sends liveness
//!    checks; charon deletes.
//! 3. wrong PSK: AUTHENTICATION_FAILED. 4. proposal mismatch:
//!    NO_PROPOSAL_CHOSEN, which ends the attempt only after the
//!    retransmissions (RFC 7296 §2.21.1).
//! 5. both ends rekey the IKE SA every 6 s and the CHILD_SA every 5 s, so
//!    rekeys cross (RFC 7296 §2.8.1, §2.8.2).
//! 6. over IPv6 with IPv6 selectors; the agent rekeys the CHILD_SA with PFS
//!    and first offers a group charon refuses (INVALID_KE_PAYLOAD retry).
//! 7. charon dies (SIGKILL): the agent's liveness check declares it dead.
//! 8. MOBIKE: charon (initiator) changes its address; it sends
//!    UPDATE_SA_ADDRESSES and the agent follows it (RFC 4555 §3.5): IKE at
//!    once, ESP after the agent's return routability check of the new,
//!    unlisted address answered (§3.7, §5.2).
//! 9. MOBIKE address lists: the agent initiates with two local addresses
//!    and lists the second in IKE_AUTH; charon takes it as an additional
//!    peer address, and the agent takes charon's list (RFC 4555 §3.4).
//! 10. MOBIKE across families: the agent (initiator, IPv4 and IPv6
//!     addresses) moves its IKE SA from IPv4 to IPv6 with `mobike-agent
//!     move`; charon lists the IPv6 pair with the same IKE SPIs (its
//!     kernel-libipsec cannot move ESP SAs across families, so charon
//!     rekeys the CHILD_SA there; the VM scenario shows the same ESP SPIs
//!     with kernel ESP).
//!
//! Certificates are interop_charon_certs.rs's (namespaces of its own, so
//! both run side by side); the harness both use is support/interop.rs.
//!
//! Needs root, iproute2, openssl and the Debian packages strongswan-charon
//! strongswan-swanctl libstrongswan-standard-plugins
//! libcharon-extra-plugins, so it is ignored by default:
//! `cargo test -p mobike-agent --test interop_charon -- --ignored`.

use std::time::Duration;

use system_tests::charon;

#[path = "support/interop.rs"]
mod interop;
use interop::{
    BIN, Interop, PSK, SUITE, agent_conf, charon_conf, has_empty_informational, has_line_with,
    ike_spis, status_json, with_control,
};

#[test]
#[ignore = "needs root, network namespaces and strongSwan (see module doc)"]
fn agent_interoperates_with_charon_in_both_roles() {
    assert!(
        charon::available(),
        "charon and swanctl are not installed (see module doc)"
    );
    let mut t = Interop::new("mbki");
    agent_initiates_and_charon_rekeys(&mut t);
    charon_initiates_and_the_agent_rekeys(&mut t);
    wrong_psk_and_proposal_mismatch(&mut t);
    crossing_rekeys(&mut t);
    ipv6_with_pfs_and_invalid_ke_payload(&mut t);
    dead_peer(&mut t);
    mobike_peer_moves(&mut t);
    address_lists(&mut t);
    agent_moves_to_ipv6(&mut t);
}

fn agent_initiates_and_charon_rekeys(t: &mut Interop) {
    t.start_charon(&charon_conf(SUITE, "aes256gcm16", "", PSK, "", ""));
    t.start_agent(
        "init",
        &agent_conf("initiate", SUITE, "aes256gcm16", PSK, "", ""),
    );
    t.wait_for(20, "1: CHILD_SA not installed by charon", |t| {
        t.charon().has("INSTALLED")
    });
    t.check(
        t.charon()
            .has("AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519"),
        "1: IKE suite",
    );
    t.check(
        t.agent().logged("CHILD_SA installed"),
        "1: agent did not install the CHILD_SA",
    );
    let old = t.charon().child_spis();
    t.check(!old.is_empty(), "1: no CHILD_SA SPIs listed");
    t.check(
        t.charon()
            .swanctl(&["--rekey", "--child", "net"])
            .status
            .success(),
        "1: charon CHILD_SA rekey",
    );
    t.wait_for(10, "1: old CHILD_SA not deleted after rekey", |t| {
        t.listed("INSTALLED") == 1
    });
    t.check(
        t.charon().child_spis() != old,
        "1: CHILD_SA SPIs unchanged after rekey",
    );
    t.check(
        t.agent().logged("CHILD_SA installed"),
        "1: rekeyed CHILD_SA",
    );
    t.check(
        t.charon()
            .swanctl(&["--rekey", "--ike", "c"])
            .status
            .success(),
        "1: charon IKE rekey",
    );
    t.wait_for(10, "1: IKE rekey not seen by agent", |t| {
        t.agent().logged("IKE SA rekeyed by the peer")
    });
    t.wait_for(10, "1: old IKE SA not deleted", |t| {
        t.agent().logged("reason: Rekeyed")
    });
    t.check(t.charon().has("INSTALLED"), "1: CHILD_SA lost in IKE rekey");
    t.stop_agent();
    t.wait_for(5, "1: charon still has the IKE SA after SIGTERM", |t| {
        !t.charon().has("ESTABLISHED")
    });
    t.check(
        t.charon_count("received DELETE for IKE_SA") > 0,
        "1: charon saw no Delete",
    );
    t.stop_charon();
}

fn charon_initiates_and_the_agent_rekeys(t: &mut Interop) {
    let suite = "aes128gcm16-prfsha384-ecp384";
    t.clear_charon_log();
    t.start_charon(&charon_conf(
        suite,
        "chacha20poly1305",
        "192.0.2.1",
        PSK,
        "",
        "",
    ));
    // The agent rekeys the CHILD_SA every 3 s and the IKE SA every 5 s,
    // and sends liveness checks after 1 s of silence.
    t.start_agent(
        "listen",
        &agent_conf(
            "listen",
            suite,
            "chacha20poly1305",
            PSK,
            "dpd_delay = \"1s\"\nrekey_time = \"5s\"",
            "rekey_time = \"3s\"",
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    t.check(
        t.charon()
            .swanctl(&["--initiate", "--child", "net", "--timeout", "20"])
            .status
            .success(),
        "2: charon could not initiate",
    );
    t.check(
        t.charon().has("AES_GCM_16-128/PRF_HMAC_SHA2_384/ECP_384"),
        "2: IKE suite",
    );
    t.check(t.charon().has("CHACHA20_POLY1305"), "2: ESP suite");
    t.wait_for(15, "2: agent did not rekey the IKE SA twice", |t| {
        t.agent().count("IKE SA rekeyed old=") >= 2
    });
    t.wait_for(15, "2: agent did not rekey the CHILD_SA twice", |t| {
        t.agent().count("ChildSaRekeyed") >= 2
    });
    // The agent deletes the old SA right after its rekey: charon logs
    // the DELETE moments after the agent logs the rekey.
    t.wait_for(5, "2: charon saw no CHILD_SA deletes", |t| {
        t.charon_count("received DELETE for ESP CHILD_SA") >= 2
    });
    t.wait_for(5, "2: charon saw no IKE_SA deletes", |t| {
        t.charon_count("received DELETE for IKE_SA") >= 2
    });
    t.check(
        has_empty_informational(&t.charon_log()),
        "2: no liveness check reached charon",
    );
    t.check(t.charon().has("ESTABLISHED"), "2: IKE SA gone after rekeys");
    t.check(
        t.listed("INSTALLED") == 1,
        "2: not exactly one CHILD_SA after rekeys",
    );
    t.check(
        !t.agent().logged("PeerUnreachable"),
        "2: agent lost the peer",
    );
    t.check(
        t.charon()
            .swanctl(&["--terminate", "--ike", "c", "--timeout", "10"])
            .status
            .success(),
        "2: terminate",
    );
    t.wait_for(5, "2: agent did not see the Delete", |t| {
        t.agent().logged("reason: PeerDeleted")
    });
    t.stop_agent();
    t.stop_charon();
}

fn wrong_psk_and_proposal_mismatch(t: &mut Interop) {
    t.clear_charon_log();
    t.start_charon(&charon_conf(SUITE, "aes256gcm16", "", PSK, "", ""));
    t.start_agent(
        "badpsk",
        &agent_conf(
            "initiate",
            SUITE,
            "aes256gcm16",
            "wrong-psk-000000000",
            "",
            "",
        ),
    );
    t.wait_for(10, "3: no AUTHENTICATION_FAILED", |t| {
        t.agent().logged("reason: AuthenticationFailed")
    });
    t.stop_agent();

    t.start_agent(
        "noprop",
        &agent_conf(
            "initiate",
            "aes128gcm16-prfsha512-ecp256",
            "aes256gcm16",
            PSK,
            "retransmit_timeout = \"1s\"\nretransmit_tries = 2",
            "",
        ),
    );
    // RFC 7296 §2.21.1: the unauthenticated refusal is noted at once but
    // ends the attempt only when the retransmissions (1 s, 2 s, 4 s) ran
    // out without a proper answer.
    t.wait_for(10, "4: no NO_PROPOSAL_CHOSEN", |t| {
        t.agent()
            .log_text()
            .lines()
            .any(|l| l.contains("IKE_SA_INIT refused") && l.contains("NO_PROPOSAL_CHOSEN"))
    });
    t.wait_for(
        20,
        "4: the attempt did not end with NO_PROPOSAL_CHOSEN",
        |t| t.agent().logged("PeerError(NO_PROPOSAL_CHOSEN)"),
    );
    t.stop_agent();
}

fn crossing_rekeys(t: &mut Interop) {
    t.stop_charon();
    t.clear_charon_log();
    t.start_charon(&charon_conf(
        SUITE,
        "aes256gcm16",
        "",
        PSK,
        "rekey_time = 6s\n  over_time = 60s\n  rand_time = 0s",
        "rekey_time = 5s\n                   life_time = 60s\n                   rand_time = 0s",
    ));
    t.start_agent(
        "cross",
        &agent_conf(
            "initiate",
            SUITE,
            "aes256gcm16",
            PSK,
            "rekey_time = \"6s\"",
            "rekey_time = \"5s\"",
        ),
    );
    t.wait_for(20, "5: CHILD_SA not installed by charon", |t| {
        t.charon().has("INSTALLED")
    });
    std::thread::sleep(Duration::from_secs(20));
    // Rekeys keep going, so two SAs can exist for a moment: poll for a
    // settled state in which both ends agree on exactly one IKE SA and one
    // CHILD_SA.
    let settled = |t: &Interop| {
        let listed = t.charon().list_sas();
        let count = |k: &str| listed.lines().filter(|l| l.contains(k)).count();
        if count("ESTABLISHED") != 1 || count("INSTALLED") != 1 {
            return false;
        }
        let agent = t.agent();
        if agent.count("install CHILD_SA") != agent.count("delete CHILD_SA") + 1 {
            return false;
        }
        let inbound = listed.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("in")).then(|| w.next().unwrap_or("").replace(',', ""))
        });
        inbound.is_some_and(|spi| agent.logged(&format!("outbound=0x{spi}")))
    };
    t.wait_for(
        20,
        "5: the ends do not settle on one IKE SA and the same single CHILD_SA",
        settled,
    );
    t.check(
        !t.agent().logged("PeerUnreachable"),
        "5: agent lost the peer",
    );
    eprintln!(
        "5: IKE SA and CHILD_SA rekeyed by both ends ({} IKE rekey lines, {} CHILD rekey \
         lines, {} collision lines): one IKE SA, one CHILD_SA",
        t.agent().count("IKE SA rekey"),
        t.agent().count("ChildSaRekeyed"),
        t.agent().count("collision")
    );
    t.stop_agent();
}

fn ipv6_with_pfs_and_invalid_ke_payload(t: &mut Interop) {
    t.stop_charon();
    t.clear_charon_log();
    t.start_charon(&format!(
        "connections {{ c {{ version = 2
  proposals = aes128gcm16-prfsha384-ecp384
  mobike = yes
  encap = yes
  local {{ auth = psk
          id = b.test }}
  remote {{ auth = psk
           id = a.test }}
  children {{ net {{ local_ts = fd00:2::/64
                   remote_ts = fd00:1::/64
                   esp_proposals = aes256gcm16-ecp256 }} }} }} }}
secrets {{ ike-c {{ id-a = a.test
  id-b = b.test
  secret = \"{PSK}\" }} }}"
    ));
    t.start_agent(
        "v6",
        &format!(
            "[kernel]
backend = \"none\"
[connections.c]
local_addrs = [\"2001:db8::1\"]
remote_addrs = [\"2001:db8::2\"]
local_id = \"a.test\"
remote_id = \"b.test\"
psk = \"{PSK}\"
proposals = [\"aes128gcm16-prfsha384-ecp384\"]
start = \"initiate\"
[connections.c.children.net]
local_ts = [\"fd00:1::/64\"]
remote_ts = [\"fd00:2::/64\"]
esp_proposals = [\"aes256gcm16-x25519-ecp256\"]
rekey_time = \"3s\""
        ),
    );
    t.wait_for(20, "6: CHILD_SA not installed by charon over IPv6", |t| {
        t.charon().has("INSTALLED")
    });
    t.check(
        t.charon().has("2001:db8::1[4500]"),
        "6: charon does not see the agent's IPv6 address on 4500",
    );
    t.wait_for(15, "6: no INVALID_KE_PAYLOAD retry", |t| {
        t.agent().logged("INVALID_KE_PAYLOAD, retrying")
    });
    t.wait_for(15, "6: CHILD_SA not rekeyed with PFS", |t| {
        t.agent().logged("ChildSaRekeyed")
    });
    t.check(!t.agent().logged("ChildSaFailed"), "6: a CHILD_SA failed");
    t.check(
        t.charon().has("INSTALLED"),
        "6: CHILD_SA gone after the PFS rekey",
    );
    t.check(
        has_line_with(
            &t.charon_log(),
            &[
                "CHILD_SA net{",
                "} established",
                "fd00:2::/64 === fd00:1::/64",
            ],
        ),
        "6: selectors",
    );
    t.stop_agent();
}

fn dead_peer(t: &mut Interop) {
    t.stop_charon();
    t.start_charon(&charon_conf(SUITE, "aes256gcm16", "", PSK, "", ""));
    t.start_agent(
        "dpd",
        &agent_conf(
            "initiate",
            SUITE,
            "aes256gcm16",
            PSK,
            "dpd_delay = \"1s\"\nretransmit_timeout = \"250ms\"\nretransmit_tries = 2",
            "",
        ),
    );
    t.wait_for(20, "7: CHILD_SA not installed by charon", |t| {
        t.charon().has("INSTALLED")
    });
    if let Some(c) = t.charon.as_mut() {
        c.kill();
    }
    t.wait_for(15, "7: agent did not notice the dead peer", |t| {
        t.agent().logged("reason: PeerUnreachable")
    });
    t.check(
        t.agent().logged("delete CHILD_SA"),
        "7: CHILD_SA not removed after the peer died",
    );
    t.stop_agent();
}

fn mobike_peer_moves(t: &mut Interop) {
    t.stop_charon();
    t.a.ip_line("route add default dev vA");
    t.b.ip_line("route add default dev vB");
    t.clear_charon_log();
    t.start_charon(&charon_conf(SUITE, "aes256gcm16", "192.0.2.1", PSK, "", ""));
    let control = t.dir.path().join("mobike.sock");
    t.start_agent(
        "mobike",
        &with_control(
            &agent_conf("listen", SUITE, "aes256gcm16", PSK, "", ""),
            &control,
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    t.check(
        t.charon()
            .swanctl(&["--initiate", "--child", "net", "--timeout", "20"])
            .status
            .success(),
        "8: charon could not initiate",
    );
    t.b.ip_line("addr add 198.51.100.2/24 dev vB");
    t.b.ip_line("addr del 192.0.2.2/24 dev vB");
    t.wait_for(20, "8: agent did not follow charon's address update", |t| {
        t.agent().logged("IKE SA moved (MOBIKE)")
    });
    t.check(
        has_line_with(
            &t.agent().log_text(),
            &["migrate CHILD_SA", "remote=198.51.100.2"],
        ),
        "8: CHILD_SA not migrated to the new address",
    );
    t.wait_for(10, "8: charon did not move", |t| {
        t.charon().has("198.51.100.2[4500]")
    });
    t.check(
        t.charon().has("ESTABLISHED"),
        "8: IKE SA lost after the move",
    );
    t.check(
        t.listed("INSTALLED") == 1,
        "8: CHILD_SA lost after the move",
    );
    // RFC 4555 §3.5, §5.2: 198.51.100.2 is neither configured at the agent
    // nor in charon's address list, so the agent checked it (a protected
    // INFORMATIONAL with COOKIE2, which charon echoed) before ESP moved.
    let log = t.agent().log_text();
    let line = |parts: &[&str]| {
        log.lines()
            .position(|l| has_line_with(l, parts))
            .unwrap_or_else(|| t.fail(&format!("8: the agent never logged {parts:?}")))
    };
    let unverified = line(&["peer moved to an unverified address", "198.51.100.2"]);
    let verified = line(&["peer address verified", "remote=198.51.100.2"]);
    let migrated = line(&["migrate CHILD_SA", "remote=198.51.100.2"]);
    t.check(
        unverified < verified && verified < migrated,
        "8: ESP moved before the return routability check was answered",
    );
    t.check(
        has_line_with(
            &t.charon_log(),
            &["parsed INFORMATIONAL request", "N(COOKIE2)"],
        ),
        "8: charon never got the agent's return routability check",
    );
    let st = status_json(t, &control);
    t.check(
        st["stats"]["return_routability_checks"] == 1
            && st["stats"]["bad_cookie2"] == 0
            && st["return_routability"].is_null(),
        &format!("8: status after the check: {st}"),
    );
    t.stop_agent();
}

fn address_lists(t: &mut Interop) {
    t.stop_charon();
    // Charon back at 192.0.2.2 (scenario 8 moved it away); the agent with a
    // second address.
    t.b.ip_line("addr add 192.0.2.2/24 dev vB");
    t.b.ip_line("addr del 198.51.100.2/24 dev vB");
    t.a.ip_line("addr add 198.51.100.1/24 dev vA");
    t.clear_charon_log();
    t.start_charon(&charon_conf(SUITE, "aes256gcm16", "", PSK, "", ""));
    let conf = agent_conf("initiate", SUITE, "aes256gcm16", PSK, "", "").replace(
        "local_addrs = [\"192.0.2.1\"]",
        "local_addrs = [\"192.0.2.1\", \"198.51.100.1\"]",
    );
    t.start_agent("addrs", &conf);
    t.wait_for(20, "9: CHILD_SA not installed by charon", |t| {
        t.charon().has("INSTALLED")
    });
    // charon logs each address of the list at `ike 2`; the one in use
    // (192.0.2.1) is not in it.
    t.wait_for(5, "9: charon did not take the agent's address list", |t| {
        t.charon_count("got additional MOBIKE peer address: 198.51.100.1") > 0
    });
    t.check(
        t.charon_count("got additional MOBIKE peer address: 192.0.2.1") == 0,
        "9: the address in use was listed",
    );
    t.check(
        t.charon().has("192.0.2.1[4500]"),
        "9: the IKE SA does not use the first local address",
    );
    // charon lists its other addresses (2001:db8::2 among them) in its
    // IKE_AUTH answer.
    t.check(
        has_line_with(
            &t.agent().log_text(),
            &["the peer's address list changed", "2001:db8::2"],
        ),
        "9: the agent did not take charon's address list",
    );
    t.stop_agent();
    t.a.ip_line("addr del 198.51.100.1/24 dev vA");
}

fn agent_moves_to_ipv6(t: &mut Interop) {
    t.stop_charon();
    t.clear_charon_log();
    t.start_charon(&charon_conf(SUITE, "aes256gcm16", "", PSK, "", ""));
    let control = t.dir.path().join("v6move.sock");
    let conf = agent_conf("initiate", SUITE, "aes256gcm16", PSK, "", "")
        .replace(
            "local_addrs = [\"192.0.2.1\"]",
            "local_addrs = [\"192.0.2.1\", \"2001:db8::1\"]",
        )
        .replace(
            "remote_addrs = [\"192.0.2.2\"]",
            "remote_addrs = [\"192.0.2.2\", \"2001:db8::2\"]",
        );
    t.start_agent("v6move", &with_control(&conf, &control));
    t.wait_for(20, "10: CHILD_SA not installed by charon", |t| {
        t.charon().has("INSTALLED")
    });
    t.check(
        t.charon().has("192.0.2.1[4500]"),
        "10: the IKE SA does not start on IPv4",
    );
    let ike = ike_spis(&t.charon().list_sas());
    let esp = t.charon().child_spis();
    t.check(
        ike.is_some() && esp.len() == 2,
        "10: no SPIs listed by charon",
    );
    let out =
        t.a.command(BIN)
            .arg("--control-socket")
            .arg(&control)
            .args([
                "move",
                "c",
                "--local",
                "2001:db8::1",
                "--remote",
                "2001:db8::2",
                "--timeout",
                "20s",
            ])
            .output()
            .expect("run mobike-agent move");
    t.check(
        out.status.success(),
        &format!(
            "10: mobike-agent move: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    );
    t.wait_for(10, "10: charon does not list the IPv6 pair", |t| {
        let l = t.charon().list_sas();
        l.contains("2001:db8::2[4500]") && l.contains("2001:db8::1[4500]")
    });
    let listed = t.charon().list_sas();
    t.check(
        !listed.contains("192.0.2.1[4500]") && !listed.contains("192.0.2.2[4500]"),
        &format!("10: charon still lists the IPv4 pair:\n{listed}"),
    );
    t.check(
        ike_spis(&listed) == ike,
        &format!("10: the IKE SPIs changed ({ike:?}):\n{listed}"),
    );
    t.check(
        has_line_with(
            &t.agent().log_text(),
            &["migrate CHILD_SA", "remote=2001:db8::2"],
        ),
        "10: the agent did not migrate its CHILD_SA to IPv6",
    );
    // charon's kernel-libipsec cannot move an SA to another address family
    // (its update is refused), so charon rekeys the CHILD_SA on the new
    // pair right after the update; with kernel ESP (the VM scenario) the
    // SPIs stay. Either way both ends agree on the one CHILD_SA.
    t.wait_for(10, "10: charon has not one CHILD_SA", |t| {
        t.listed("INSTALLED") == 1 && t.charon().child_spis().len() == 2
    });
    let now = t.charon().child_spis();
    t.check(
        now == esp || t.charon_count("queueing CHILD_REKEY task") == 1,
        &format!("10: the CHILD_SA changed without a rekey ({esp:?} -> {now:?})"),
    );
    let st = status_json(t, &control);
    t.check(
        st["local"] == "[2001:db8::1]:4500" && st["remote"] == "[2001:db8::2]:4500",
        &format!("10: agent status after the move: {st}"),
    );
    let agent_esp = |key: &str| {
        st["child_sas"]
            .as_array()
            .and_then(|c| c.first())
            .and_then(|c| c[key].as_str())
            .map(|s| format!("{s},"))
    };
    t.check(
        st["child_sas"].as_array().map(Vec::len) == Some(1)
            && agent_esp("spi_out") == now.first().cloned()
            && agent_esp("spi_in") == now.get(1).cloned(),
        &format!("10: the agent's CHILD_SA is not charon's {now:?}: {st}"),
    );
    t.stop_agent();
}
