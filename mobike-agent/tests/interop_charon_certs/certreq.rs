//! `certificate_requests_and_classic_rsa` (namespaces mbkq): what the
//! CERTREQ payloads make each side send, and charon's classic RSA
//! signature (AUTH method 1).
//!
//! 1. charon as it comes (`send_certreq` and `send_cert = ifasked`, its
//!    defaults): its IKE_SA_INIT answer carries a CERTREQ, so the agent
//!    sends its certificate; the agent's CERTREQ names its trust anchor by
//!    the SHA-1 hash of its SubjectPublicKeyInfo, which charon resolves to
//!    the root ("received cert request for ..."), and charon sends its
//!    certificate. charon names the intermediate as well as the root, so
//!    the agent sends its certificate without the intermediate. The same
//!    with charon initiating (its CERTREQ in IKE_AUTH).
//! 2. charon with `send_certreq = no` and the agent's certificate of its
//!    own (`remote { certs = a.pem }`): the agent, with the default
//!    `send_cert = "ifasked"`, sends no CERT payload, as initiator and as
//!    responder, and the SAs still come up.
//! 3. charon with `signature_authentication = no` in strongswan.conf signs
//!    with RSA PKCS#1 v1.5 and SHA-1 in AUTH method 1 (RFC 7296 §3.8), as
//!    initiator and as responder; the agent verifies it and its status
//!    shows `remote_auth` as that method. charon then sends no
//!    SIGNATURE_HASH_ALGORITHMS either, so the agent's P-256 key signs with
//!    AUTH method 9 (RFC 4754), which charon verifies.
//! 4. the same with P-521 keys on both sides: ECDSA with SHA-512 in AUTH
//!    method 11 (RFC 4754) both ways.

use std::time::Duration;

use system_tests::{certs::Pki, charon};

use super::{
    Interop, agent_cert_conf, charon_pubkey_conf, established_both_sides, status_json, with_control,
};

/// The payloads of the first line of charon's log with `what` (e.g.
/// "parsed IKE_AUTH request 1"), as charon lists them between brackets;
/// fails if there is none.
fn payloads(t: &Interop, what: &str) -> Vec<String> {
    let log = t.charon_log();
    let line = log.lines().find(|l| l.contains(what));
    let list = line
        .and_then(|l| l.split_once(" [ "))
        .and_then(|(_, rest)| rest.rsplit_once(" ]"))
        .map(|(list, _)| list.split_whitespace().map(str::to_owned).collect());
    list.unwrap_or_else(|| t.fail(&format!("charon did not log {what:?}")))
}

fn count(list: &[String], payload: &str) -> usize {
    list.iter().filter(|p| *p == payload).count()
}

#[test]
#[ignore = "needs root, network namespaces, openssl and strongSwan (see module doc)"]
fn certificate_requests_and_classic_rsa() {
    assert!(
        charon::available(),
        "charon and swanctl are not installed (see interop_charon.rs)"
    );
    let pki = super::make_pki();
    let mut t = Interop::new("mbkq");
    super::install_charon_credentials(&t, &pki);
    certificates_sent_because_charon_asked(&mut t, &pki);
    no_certificate_when_charon_does_not_ask(&mut t, &pki);
    classic_rsa_signatures_from_charon(&mut t, &pki);
}

/// 1: charon's defaults: CERTREQ both ways, CERT both ways.
fn certificates_sent_because_charon_asked(t: &mut Interop, pki: &Pki) {
    t.clear_charon_log();
    t.start_charon(&charon_pubkey_conf("b", ""));
    t.start_agent(
        "certreq",
        &agent_cert_conf(pki, "initiate", "a", "a", "root.pem"),
    );
    t.wait_for(20, "1: CHILD_SA not installed by charon", |t| {
        t.charon().has("INSTALLED")
    });
    established_both_sides(t, "1", "a", "b");
    let init = payloads(t, "generating IKE_SA_INIT response 0");
    let auth = payloads(t, "parsed IKE_AUTH request 1");
    let answer = payloads(t, "generating IKE_AUTH response 1");
    t.check(
        count(&init, "CERTREQ") == 1,
        &format!("1: charon's IKE_SA_INIT answer {init:?}"),
    );
    // charon's CERTREQ names the intermediate: the agent's certificate
    // goes alone.
    t.check(
        count(&auth, "CERT") == 1 && count(&auth, "CERTREQ") == 1,
        &format!("1: the agent's IKE_AUTH request {auth:?}"),
    );
    t.check(
        t.charon_count("received cert request for \"C=CH, O=mobike test, CN=Root CA\"") == 1,
        "1: charon did not resolve the agent's CERTREQ to the root CA",
    );
    t.check(
        count(&answer, "CERT") >= 1,
        &format!("1: charon's IKE_AUTH answer {answer:?}"),
    );
    t.stop_agent();
    t.stop_charon();
    // charon initiates: its CERTREQ comes in IKE_AUTH, the agent answers
    // with its certificate (alone, as above).
    t.clear_charon_log();
    t.start_charon(&charon_pubkey_conf("b", "192.0.2.1"));
    t.start_agent(
        "certreq-listen",
        &agent_cert_conf(pki, "listen", "a", "a", "root.pem"),
    );
    initiate(t, "1");
    t.wait_for(20, "1: CHILD_SA not installed (charon initiating)", |t| {
        t.charon().has("INSTALLED") && t.agent().logged("CHILD_SA installed")
    });
    established_both_sides(t, "1", "a", "b");
    let request = payloads(t, "generating IKE_AUTH request 1");
    let answer = payloads(t, "parsed IKE_AUTH response 1");
    t.check(
        count(&request, "CERTREQ") == 1 && count(&answer, "CERT") == 1,
        &format!("1: charon's IKE_AUTH request {request:?}, the agent's answer {answer:?}"),
    );
    t.stop_agent();
    t.stop_charon();
}

/// 2: charon with `send_certreq = no` and the agent's certificate in its
/// connection; the agent initiates, then charon does.
fn no_certificate_when_charon_does_not_ask(t: &mut Interop, pki: &Pki) {
    let local_copy = t.charon_dir().join("x509/a.pem");
    std::fs::copy(pki.path("a.pem"), &local_copy).expect("a.pem to charon");
    let quiet = |remote_addrs: &str| {
        charon_pubkey_conf("b", remote_addrs)
            .replace("mobike = yes", "mobike = yes\n  send_certreq = no")
            .replace(
                "remote { auth = pubkey",
                "remote { auth = pubkey\n           certs = a.pem",
            )
    };
    // The agent initiates.
    t.clear_charon_log();
    t.start_charon(&quiet(""));
    let control = t.dir.path().join("quiet.sock");
    t.start_agent(
        "quiet-init",
        &with_control(
            &agent_cert_conf(pki, "initiate", "a", "a", "root.pem"),
            &control,
        ),
    );
    t.wait_for(20, "2: CHILD_SA not installed by charon", |t| {
        t.charon().has("INSTALLED")
    });
    established_both_sides(t, "2", "a", "b");
    let init = payloads(t, "generating IKE_SA_INIT response 0");
    let auth = payloads(t, "parsed IKE_AUTH request 1");
    t.check(
        count(&init, "CERTREQ") == 0 && count(&auth, "CERT") == 0,
        &format!("2: charon asked or the agent sent a CERT: {init:?} {auth:?}"),
    );
    t.check(
        count(&auth, "CERTREQ") == 1,
        &format!("2: the agent's IKE_AUTH request has no CERTREQ: {auth:?}"),
    );
    t.check(
        t.charon_count("using trusted certificate \"C=CH, O=mobike test, CN=a.test\"") == 1,
        "2: charon did not use its own copy of the agent's certificate",
    );
    let st = status_json(t, &control);
    t.check(
        st["peer_cert"]["subject"] == "C=CH, O=mobike test, CN=b.test",
        &format!("2: agent status: {st}"),
    );
    t.stop_agent();
    t.stop_charon();
    // charon initiates: no CERTREQ in its IKE_AUTH request, no CERT in
    // the agent's answer.
    t.clear_charon_log();
    t.start_charon(&quiet("192.0.2.1"));
    t.start_agent(
        "quiet-listen",
        &agent_cert_conf(pki, "listen", "a", "a", "root.pem"),
    );
    initiate(t, "2");
    t.wait_for(20, "2: CHILD_SA not installed (charon initiating)", |t| {
        t.charon().has("INSTALLED") && t.agent().logged("CHILD_SA installed")
    });
    established_both_sides(t, "2", "a", "b");
    let auth = payloads(t, "generating IKE_AUTH request 1");
    let answer = payloads(t, "parsed IKE_AUTH response 1");
    t.check(
        count(&auth, "CERTREQ") == 0 && count(&answer, "CERT") == 0,
        &format!("2: charon asked or the agent sent a CERT: {auth:?} {answer:?}"),
    );
    t.stop_agent();
    t.stop_charon();
    std::fs::remove_file(local_copy).expect("remove a.pem");
}

/// charon initiates with `swanctl --initiate`.
fn initiate(t: &Interop, step: &str) {
    std::thread::sleep(Duration::from_millis(500));
    t.check(
        t.charon()
            .swanctl(&["--initiate", "--child", "net", "--timeout", "20"])
            .status
            .success(),
        &format!("{step}: charon could not initiate"),
    );
}

/// The classic methods of `classic_signatures`: charon's certificate and
/// the agent's, the signature each logs, the status of each side's AUTH.
struct Classic {
    step: &'static str,
    charon_cert: &'static str,
    agent_cert: &'static str,
    charon_signs: &'static str,
    agent_signs: &'static str,
    remote_auth: &'static str,
    local_auth: &'static str,
}

/// 3: charon signs with AUTH method 1 (`signature_authentication = no`),
/// the agent's P-256 key with method 9; 4: both P-521 keys with method 11.
fn classic_rsa_signatures_from_charon(t: &mut Interop, pki: &Pki) {
    classic_signatures(
        t,
        pki,
        &Classic {
            step: "3",
            charon_cert: "b",
            agent_cert: "a",
            charon_signs: "RSA signature",
            agent_signs: "ECDSA-256 signature",
            remote_auth: "rsa-sha1 (RFC 7296)",
            local_auth: "ecdsa-256 (RFC 4754)",
        },
    );
    classic_signatures(
        t,
        pki,
        &Classic {
            step: "4",
            charon_cert: "b521",
            agent_cert: "a521",
            charon_signs: "ECDSA-521 signature",
            agent_signs: "ECDSA-521 signature",
            remote_auth: "ecdsa-521 (RFC 4754)",
            local_auth: "ecdsa-521 (RFC 4754)",
        },
    );
}

fn classic_signatures(t: &mut Interop, pki: &Pki, c: &Classic) {
    const CLASSIC: &str = "signature_authentication = no";
    for (role, remote_addrs, start) in [
        ("responder", "", "initiate"),
        ("initiator", "192.0.2.1", "listen"),
    ] {
        let step = format!("{} charon {role}", c.step);
        t.clear_charon_log();
        t.start_charon_with(&charon_pubkey_conf(c.charon_cert, remote_addrs), CLASSIC);
        let control = t.dir.path().join(format!("classic-{}-{role}.sock", c.step));
        t.start_agent(
            &format!("classic-{}-{role}", c.step),
            &with_control(
                &agent_cert_conf(pki, start, c.agent_cert, c.agent_cert, "root.pem"),
                &control,
            ),
        );
        if start == "listen" {
            initiate(t, &step);
        }
        t.wait_for(20, &format!("{step}: CHILD_SA not installed"), |t| {
            t.charon().has("INSTALLED") && t.agent().logged("CHILD_SA installed")
        });
        t.check(
            t.charon_count(&format!(
                "authentication of 'b.test' (myself) with {} successful",
                c.charon_signs
            )) == 1,
            &format!("{step}: charon did not sign with {}", c.charon_signs),
        );
        // Without SIGNATURE_HASH_ALGORITHMS from charon the agent's ECDSA
        // key signs with a classic method too (RFC 4754).
        t.check(
            t.charon_count(&format!(
                "authentication of 'a.test' with {} successful",
                c.agent_signs
            )) == 1,
            &format!(
                "{step}: charon did not verify the agent's {}",
                c.agent_signs
            ),
        );
        let st = status_json(t, &control);
        t.check(
            st["remote_auth"] == c.remote_auth && st["local_auth"] == c.local_auth,
            &format!("{step}: agent status: {st}"),
        );
        t.stop_agent();
        t.stop_charon();
    }
}
