//! Certificate authentication (issue 14) against strongSwan's charon
//! through the real binaries, on the harness of interop_charon.rs
//! (support/interop.rs) in namespaces of its own, so both run side by
//! side. All certificates come from system_tests::certs: a P-256 root, an
//! RSA-3072 intermediate under it, end entities under the intermediate.
//!
//! `certificates_authenticate_in_both_roles_and_move` (namespaces mbkc):
//!
//! 1. the agent with ECDSA P-256, charon with RSA-3072: the agent
//!    initiates, then charon does; CHILD_SA installed on both sides.
//! 2. the reverse, the agent with RSA-3072 and charon with P-256, both
//!    roles; then both with ECDSA P-521 (ECDSA with SHA-512 in RFC 7427's
//!    method 14 both ways).
//! 3. after certificate authentication the agent (initiator) moves its
//!    IKE SA to its second IPv4 address with `mobike-agent move`; charon
//!    lists the new address with the same IKE SPIs and one CHILD_SA.
//! 4. Distinguished Names as identities on both sides, as strongSwan
//!    users write them (the agent's own defaulting to its certificate's
//!    subject).
//!
//! `certificate_refusals_name_why` (namespaces mbkr), the agent
//! initiating in 4 to 6:
//!
//! 4. charon refuses the agent (AUTHENTICATION_FAILED in its IKE_AUTH
//!    answer, which the agent logs; no IKE SA): an expired certificate, one
//!    from a CA charon does not trust.
//! 5. what the agent will not even try: its local_id not in its
//!    certificate, a key that is not its certificate's. It refuses to
//!    start, naming why, so charon never sees such an exchange.
//! 6. the agent refuses charon (its log line names why; it sends
//!    AUTHENTICATION_FAILED, which charon's log shows): an expired
//!    certificate, one from a CA the agent does not trust, one that does
//!    not hold the identity the agent's remote_id asks for (charon 5.9.8
//!    signs as an identity its certificate does not carry when told to).
//! 7. charon initiating: expired certificates both ways (charon refuses
//!    the agent's with AUTHENTICATION_FAILED in an INFORMATIONAL after the
//!    agent's answer, the agent refuses charon's in its answer); the
//!    agent refuses charon's certificate from a CA it does not trust, and
//!    one that does not hold the identity charon claims (IDi c.test).
//! 8. a signature by a key that is not the certificate's, refused by
//!    charon (both roles) and by the agent (both roles), the signer being
//!    an engine of the agent's library given another key (see
//!    interop_charon_certs/wrong_key.rs for why).
//!
//! `certificate_requests_and_classic_rsa` (namespaces mbkq,
//! interop_charon_certs/certreq.rs): CERT payloads as CERTREQ and
//! `send_cert`/`send_certreq` say, and the classic signature methods
//! with charon's `signature_authentication = no`: RSA (AUTH method 1 from
//! charon, 9 from the agent's P-256 key) and ECDSA P-521 (method 11 both
//! ways).
//!
//! The PKI, charon's credentials and the configurations are
//! support/interop_certs.rs's.
//!
//! Needs root, iproute2, openssl and strongSwan (see interop_charon.rs),
//! so it is ignored by default:
//! `cargo test -p mobike-agent --test interop_charon_certs -- --ignored`.

use std::{
    process::ExitStatus,
    time::{Duration, Instant},
};

use system_tests::{certs::Pki, charon, wait};

#[path = "interop_charon_certs/certreq.rs"]
mod certreq;
#[path = "support/interop.rs"]
mod interop;
#[path = "support/interop_certs.rs"]
mod interop_certs;
#[path = "interop_charon_certs/wrong_key.rs"]
mod wrong_key;
use interop::{BIN, Interop, SUITE, has_line_with, ike_spis, status_json, with_control};
use interop_certs::{
    agent_cert_conf, charon_pubkey_conf, charon_pubkey_conf_as, has_line_with_all,
    install_charon_credentials, make_pki,
};

#[test]
#[ignore = "needs root, network namespaces, openssl and strongSwan (see module doc)"]
fn certificates_authenticate_in_both_roles_and_move() {
    assert!(
        charon::available(),
        "charon and swanctl are not installed (see interop_charon.rs)"
    );
    let pki = make_pki();
    let mut t = Interop::new("mbkc");
    install_charon_credentials(&t, &pki);
    for (step, agent_cert, charon_cert) in [
        ("1", "a", "b"),
        ("2", "arsa", "bec"),
        ("2b", "a521", "b521"),
    ] {
        agent_initiates(&mut t, &pki, step, agent_cert, charon_cert);
        charon_initiates(&mut t, &pki, step, agent_cert, charon_cert);
    }
    moves_after_certificate_authentication(&mut t, &pki);
    distinguished_names(&mut t, &pki);
}

/// 4: identities as Distinguished Names, as strongSwan users write them:
/// charon's ids are the subjects of both certificates; the agent has no
/// local_id (its certificate's subject is its ID) and a DN as remote_id.
fn distinguished_names(t: &mut Interop, pki: &Pki) {
    const A_DN: &str = "C=CH, O=mobike test, CN=a.test";
    const B_DN: &str = "C=CH, O=mobike test, CN=b.test";
    t.clear_charon_log();
    t.start_charon(
        &charon_pubkey_conf_as("b", &format!("\"{B_DN}\""), "")
            .replace("id = a.test }", &format!("id = \"{A_DN}\" }}")),
    );
    let conf = agent_cert_conf(pki, "initiate", "a", "a", "root.pem")
        .replace("local_id = \"a.test\"\n", "")
        .replace("remote_id = \"b.test\"", &format!("remote_id = \"{B_DN}\""));
    t.start_agent("dn", &conf);
    t.wait_for(20, "4: CHILD_SA not installed with DN identities", |t| {
        t.charon().has("INSTALLED")
    });
    let log = t.charon_log();
    t.check(
        has_line_with(
            &log,
            &[&format!("authentication of '{A_DN}' with"), "successful"],
        ) && has_line_with(&log, &[&format!("authentication of '{B_DN}' (myself)")]),
        "4: charon did not authenticate both sides by their DNs",
    );
    t.check(
        t.agent().logged("CHILD_SA installed")
            && t.listed("ESTABLISHED") == 1
            && t.listed("INSTALLED") == 1,
        &format!("4: swanctl --list-sas:\n{}", t.charon().list_sas()),
    );
    t.stop_agent();
    t.stop_charon();
}

/// The agent (certificate `agent_cert`) initiates to charon (`charon_cert`).
fn agent_initiates(t: &mut Interop, pki: &Pki, step: &str, agent_cert: &str, charon_cert: &str) {
    t.clear_charon_log();
    t.start_charon(&charon_pubkey_conf(charon_cert, ""));
    let control = t.dir.path().join(format!("init-{agent_cert}.sock"));
    t.start_agent(
        &format!("init-{agent_cert}"),
        &with_control(
            &agent_cert_conf(pki, "initiate", agent_cert, agent_cert, "root.pem"),
            &control,
        ),
    );
    t.wait_for(
        20,
        &format!("{step}: CHILD_SA not installed by charon (agent {agent_cert} initiating)"),
        |t| t.charon().has("INSTALLED"),
    );
    established_both_sides(t, step, agent_cert, charon_cert);
    let st = status_json(t, &control);
    t.check(
        st["initiator"] == true && st["child_sas"].as_array().map(Vec::len) == Some(1),
        &format!("{step}: agent status: {st}"),
    );
    t.stop_agent();
    t.stop_charon();
}

/// charon (certificate `charon_cert`) initiates to the agent
/// (`agent_cert`).
fn charon_initiates(t: &mut Interop, pki: &Pki, step: &str, agent_cert: &str, charon_cert: &str) {
    t.clear_charon_log();
    t.start_charon(&charon_pubkey_conf(charon_cert, "192.0.2.1"));
    t.start_agent(
        &format!("listen-{agent_cert}"),
        &agent_cert_conf(pki, "listen", agent_cert, agent_cert, "root.pem"),
    );
    std::thread::sleep(Duration::from_millis(500));
    t.check(
        t.charon()
            .swanctl(&["--initiate", "--child", "net", "--timeout", "20"])
            .status
            .success(),
        &format!("{step}: charon could not initiate"),
    );
    t.wait_for(
        20,
        &format!("{step}: CHILD_SA not installed (charon {charon_cert} initiating)"),
        |t| t.charon().has("INSTALLED") && t.agent().logged("CHILD_SA installed"),
    );
    established_both_sides(t, step, agent_cert, charon_cert);
    t.stop_agent();
    t.stop_charon();
}

/// The start of the signature scheme charon logs for the key of `cert`
/// (the agent signs RSA with PSS, charon with PKCS#1 v1.5).
fn signature(cert: &str) -> &'static str {
    match cert {
        "arsa" => "RSA_EMSA_PSS",
        "b" => "RSA_EMSA_PKCS1",
        "a521" | "b521" => "ECDSA_WITH_SHA512",
        _ => "ECDSA_WITH_SHA256",
    }
}

/// Both sides authenticated each other with the certificates named and
/// charon lists one IKE SA and one CHILD_SA.
fn established_both_sides(t: &Interop, step: &str, agent_cert: &str, charon_cert: &str) {
    // charon names the agent's certificate's subject while checking it
    // ("using trusted certificate" when it is charon's own copy).
    let log = t.charon_log();
    t.check(
        t.charon_count(&format!(
            "certificate \"C=CH, O=mobike test, CN={agent_cert}.test\""
        )) > 0
            && has_line_with(
                &log,
                &[
                    "authentication of 'a.test' with",
                    signature(agent_cert),
                    "successful",
                ],
            ),
        &format!("{step}: charon did not authenticate the agent's certificate {agent_cert}"),
    );
    t.check(
        has_line_with(
            &log,
            &[
                "authentication of 'b.test' (myself) with",
                signature(charon_cert),
            ],
        ),
        &format!("{step}: charon did not sign with {charon_cert}"),
    );
    t.check(
        t.listed("ESTABLISHED") == 1 && t.listed("INSTALLED") == 1,
        &format!("{step}: swanctl --list-sas:\n{}", t.charon().list_sas()),
    );
    t.check(
        t.agent().logged("CHILD_SA installed")
            && !t.agent().logged("authentication of the peer failed"),
        &format!("{step}: agent did not install the CHILD_SA with charon's {charon_cert}"),
    );
}

/// 3: MOBIKE after certificate authentication: the agent moves from
/// 192.0.2.1 to 198.51.100.1 (IPv4 both, so charon's kernel-libipsec
/// updates the ESP SAs in place).
fn moves_after_certificate_authentication(t: &mut Interop, pki: &Pki) {
    t.a.ip_line("addr add 198.51.100.1/24 dev vA");
    t.b.ip_line("route add 198.51.100.0/24 dev vB");
    t.clear_charon_log();
    t.start_charon(&charon_pubkey_conf("b", ""));
    let control = t.dir.path().join("move.sock");
    let conf = agent_cert_conf(pki, "initiate", "a", "a", "root.pem").replace(
        "local_addrs = [\"192.0.2.1\"]",
        "local_addrs = [\"192.0.2.1\", \"198.51.100.1\"]",
    );
    t.start_agent("move", &with_control(&conf, &control));
    t.wait_for(20, "3: CHILD_SA not installed by charon", |t| {
        t.charon().has("INSTALLED")
    });
    established_both_sides(t, "3", "a", "b");
    t.check(
        t.charon().has("192.0.2.1[4500]"),
        "3: the IKE SA does not start at 192.0.2.1",
    );
    let ike = ike_spis(&t.charon().list_sas());
    t.check(ike.is_some(), "3: no IKE SPIs listed by charon");
    let out =
        t.a.command(BIN)
            .arg("--control-socket")
            .arg(&control)
            .args(["move", "c", "--local", "198.51.100.1", "--timeout", "20s"])
            .output()
            .expect("run mobike-agent move");
    t.check(
        out.status.success(),
        &format!(
            "3: mobike-agent move: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    );
    t.wait_for(10, "3: charon does not list the new address", |t| {
        t.charon().has("198.51.100.1[4500]")
    });
    let listed = t.charon().list_sas();
    t.check(
        !listed.contains("192.0.2.1[4500]") && ike_spis(&listed) == ike,
        &format!("3: charon after the move ({ike:?}):\n{listed}"),
    );
    t.check(
        t.listed("ESTABLISHED") == 1 && t.listed("INSTALLED") == 1,
        &format!("3: charon lost an SA in the move:\n{listed}"),
    );
    t.check(
        has_line_with(&t.agent().log_text(), &["migrate CHILD_SA", "198.51.100.1"]),
        "3: the agent did not migrate its CHILD_SA",
    );
    let st = status_json(t, &control);
    t.check(
        st["local"] == "198.51.100.1:4500"
            && st["remote"] == "192.0.2.2:4500"
            && st["child_sas"].as_array().map(Vec::len) == Some(1),
        &format!("3: agent status after the move: {st}"),
    );
    t.stop_agent();
    t.stop_charon();
}

#[test]
#[ignore = "needs root, network namespaces, openssl and strongSwan (see module doc)"]
fn certificate_refusals_name_why() {
    assert!(
        charon::available(),
        "charon and swanctl are not installed (see interop_charon.rs)"
    );
    let pki = make_pki();
    let mut t = Interop::new("mbkr");
    install_charon_credentials(&t, &pki);
    // 4: charon refuses the agent.
    charon_refuses(
        &mut t,
        &pki,
        "4 expired",
        "aold",
        &["subject certificate invalid", "to Jan 01 00:00:00 2021"],
    );
    charon_refuses(
        &mut t,
        &pki,
        "4 unknown CA",
        "aoth",
        &["no issuer certificate found for", "CN=aoth.test"],
    );
    t.check(
        t.charon_count("issuer is \"C=CH, O=elsewhere, CN=Other CA\"") == 1,
        "4 unknown CA: charon does not name the issuer",
    );
    // 5: the agent refuses to start.
    let conf = agent_cert_conf(&pki, "initiate", "a", "a", "root.pem")
        .replace("local_id = \"a.test\"", "local_id = \"x.test\"");
    agent_does_not_start(
        &mut t,
        "5 local_id",
        &conf,
        "local_id is not in the certificate",
    );
    let conf = agent_cert_conf(&pki, "initiate", "a", "arsa", "root.pem");
    agent_does_not_start(
        &mut t,
        "5 key",
        &conf,
        "arsa.key is not the key of the certificate",
    );
    // 6: the agent refuses charon.
    let conf = agent_cert_conf(&pki, "initiate", "a", "a", "root.pem");
    agent_refuses(
        &mut t,
        "6 expired",
        ("bold", "b.test"),
        &conf,
        &["expired at"],
    );
    let conf = agent_cert_conf(&pki, "initiate", "a", "a", "other.pem");
    agent_refuses(
        &mut t,
        "6 unknown CA",
        ("b", "b.test"),
        &conf,
        &["issued by", "Intermediate CA", "no path to a trusted CA"],
    );
    let conf = conf_with_remote_id(&pki, "initiate", "c.test");
    agent_refuses(
        &mut t,
        "6 identity",
        ("b", "c.test"),
        &conf,
        &["c.test", "is not in the certificate of", "CN=b.test"],
    );
    // 7: expired certificates with charon initiating.
    charon_initiates_and_refuses(
        &mut t,
        &pki,
        "7 expired agent",
        "aold",
        &["subject certificate invalid", "to Jan 01 00:00:00 2021"],
    );
    let listen = agent_cert_conf(&pki, "listen", "a", "a", "root.pem");
    charon_initiates_and_is_refused(
        &mut t,
        "7 expired charon",
        &charon_pubkey_conf("bold", "192.0.2.1"),
        &listen,
        &["expired at"],
    );
    // 7: an unknown CA and an identity not in the certificate with charon
    // initiating (the agent as responder picks the connection by
    // charon's IDi, then refuses its certificate).
    charon_initiates_and_is_refused(
        &mut t,
        "7 unknown CA",
        &charon_pubkey_conf("b", "192.0.2.1"),
        &agent_cert_conf(&pki, "listen", "a", "a", "other.pem"),
        &["issued by", "Intermediate CA", "no path to a trusted CA"],
    );
    charon_initiates_and_is_refused(
        &mut t,
        "7 identity",
        &charon_pubkey_conf_as("b", "c.test", "192.0.2.1"),
        &conf_with_remote_id(&pki, "listen", "c.test"),
        &["c.test", "is not in the certificate of", "CN=b.test"],
    );
    // 8: a signature by a key that is not the certificate's.
    wrong_key::charon_refuses_it(&mut t, &pki);
    wrong_key::the_agent_refuses_it(&mut t, &pki);
}

/// charon initiates and starts it with `swanctl --initiate`, which fails.
fn charon_initiates_in_vain(t: &mut Interop, step: &str) {
    std::thread::sleep(Duration::from_millis(500));
    t.check(
        !t.charon()
            .swanctl(&["--initiate", "--child", "net", "--timeout", "20"])
            .status
            .success(),
        &format!("{step}: charon's initiation succeeded"),
    );
}

/// 7: charon initiates to the agent with the certificate `cert`, which
/// charon refuses in the agent's IKE_AUTH answer: charon logs why (all of
/// `why`) and sends AUTHENTICATION_FAILED in an INFORMATIONAL (RFC 7296
/// §2.21.2); the agent, which took the IKE SA as established when it
/// answered, logs the notify and deletes it.
fn charon_initiates_and_refuses(t: &mut Interop, pki: &Pki, step: &str, cert: &str, why: &[&str]) {
    t.clear_charon_log();
    t.start_charon(&charon_pubkey_conf("b", "192.0.2.1"));
    t.start_agent(
        &format!("listen-refused-{cert}"),
        &agent_cert_conf(pki, "listen", cert, cert, "root.pem"),
    );
    charon_initiates_in_vain(t, step);
    t.wait_for(
        10,
        &format!("{step}: the agent did not log charon's AUTHENTICATION_FAILED"),
        |t| {
            t.agent().logged("peer reports AUTHENTICATION_FAILED")
                && has_line_with_all(
                    &t.agent().log_text(),
                    &["IKE SA deleted", "reason=AuthenticationFailed"],
                )
        },
    );
    t.check(
        has_line_with_all(&t.charon_log(), why)
            && has_line_with(
                &t.charon_log(),
                &["generating INFORMATIONAL request", "[ N(AUTH_FAILED) ]"],
            ),
        &format!("{step}: charon's log does not say {why:?} and AUTH_FAILED"),
    );
    t.check(
        !t.charon().has("ESTABLISHED"),
        &format!("{step}: charon lists an IKE SA"),
    );
    t.stop_agent();
    t.stop_charon();
}

/// 7: charon (`charon_conf`) initiates to the agent (`agent_conf`), which
/// refuses charon's certificate, naming why (all of `why`), with
/// AUTHENTICATION_FAILED in its IKE_AUTH answer, which charon logs.
fn charon_initiates_and_is_refused(
    t: &mut Interop,
    step: &str,
    charon_conf: &str,
    agent_conf: &str,
    why: &[&str],
) {
    t.clear_charon_log();
    t.start_charon(charon_conf);
    t.start_agent(
        &format!("listen-refuses-{}", step.replace(' ', "-")),
        agent_conf,
    );
    charon_initiates_in_vain(t, step);
    let mut parts = vec!["authentication of the peer failed"];
    parts.extend_from_slice(why);
    t.check(
        has_line_with_all(&t.agent().log_text(), &parts)
            && !t.agent().logged("CHILD_SA installed")
            && !t.agent().logged("IKE SA established"),
        &format!("{step}: the agent did not refuse charon's certificate, naming {why:?}"),
    );
    t.check(
        has_line_with(
            &t.charon_log(),
            &["parsed IKE_AUTH response 1", "[ N(AUTH_FAILED) ]"],
        ) && t.charon_count("received AUTHENTICATION_FAILED notify error") == 1,
        &format!("{step}: charon did not get the agent's AUTHENTICATION_FAILED"),
    );
    t.check(
        !t.charon().has("ESTABLISHED"),
        &format!("{step}: charon lists an IKE SA"),
    );
    t.stop_agent();
    t.stop_charon();
}

fn conf_with_remote_id(pki: &Pki, start: &str, id: &str) -> String {
    agent_cert_conf(pki, start, "a", "a", "root.pem")
        .replace("remote_id = \"b.test\"", &format!("remote_id = \"{id}\""))
}

/// The agent initiates with the certificate `cert` charon must refuse:
/// charon logs why (a line with all of `why`) and answers
/// AUTHENTICATION_FAILED, the agent logs it, no IKE SA.
fn charon_refuses(t: &mut Interop, pki: &Pki, step: &str, cert: &str, why: &[&str]) {
    t.clear_charon_log();
    t.start_charon(&charon_pubkey_conf("b", ""));
    t.start_agent(
        &format!("refused-{cert}"),
        &agent_cert_conf(pki, "initiate", cert, cert, "root.pem"),
    );
    t.wait_for(
        20,
        &format!("{step}: the agent did not log charon's AUTHENTICATION_FAILED"),
        |t| {
            has_line_with_all(
                &t.agent().log_text(),
                &["IKE_AUTH refused by the peer", "AuthenticationFailed"],
            )
        },
    );
    t.check(
        has_line_with_all(&t.charon_log(), why)
            && t.charon_count("no trusted ECDSA public key found for 'a.test'") == 1,
        &format!("{step}: charon's log does not say {why:?}"),
    );
    t.check(
        has_line_with(
            &t.charon_log(),
            &["generating IKE_AUTH response", "[ N(AUTH_FAILED) ]"],
        ),
        &format!("{step}: charon did not answer AUTHENTICATION_FAILED"),
    );
    t.check(
        !t.agent().logged("CHILD_SA installed")
            && !t.agent().logged("IKE SA established")
            && !t.charon().has("ESTABLISHED"),
        &format!("{step}: an SA despite the refusal"),
    );
    t.stop_agent();
    t.stop_charon();
}

/// The agent with configuration `conf` must exit at once with an error
/// naming `why`.
fn agent_does_not_start(t: &mut Interop, step: &str, conf: &str, why: &str) {
    t.start_agent(&format!("nostart-{}", step.replace(' ', "-")), conf);
    let status = exit_within(t, Duration::from_secs(10));
    t.check(
        status.is_some_and(|s| !s.success()),
        &format!("{step}: the agent did not refuse to start ({status:?})"),
    );
    t.check(
        t.agent().logged(why),
        &format!("{step}: the agent's error does not say {why:?}"),
    );
    t.agent = None;
}

/// How the agent exited, if it did within `within`.
fn exit_within(t: &mut Interop, within: Duration) -> Option<ExitStatus> {
    let agent = t.agent.as_mut().expect("the agent runs");
    let deadline = Instant::now() + within;
    wait::poll(deadline, Duration::from_millis(100), || {
        agent.child.try_wait().ok().flatten()
    })
}

/// The agent (configuration `conf`) initiates to charon with the
/// certificate and identity `charon` and must refuse it with a log line
/// naming all of `why`, and tell charon (AUTHENTICATION_FAILED).
fn agent_refuses(t: &mut Interop, step: &str, charon: (&str, &str), conf: &str, why: &[&str]) {
    let (cert, id) = charon;
    t.clear_charon_log();
    t.start_charon(&charon_pubkey_conf_as(cert, id, ""));
    t.start_agent(&format!("refuses-{cert}"), conf);
    t.wait_for(
        20,
        &format!("{step}: the agent did not refuse charon's certificate"),
        |t| {
            let mut parts = vec!["authentication of the peer failed"];
            parts.extend_from_slice(why);
            has_line_with_all(&t.agent().log_text(), &parts)
        },
    );
    t.wait_for(
        10,
        &format!("{step}: charon did not get the agent's AUTHENTICATION_FAILED"),
        |t| {
            has_line_with(
                &t.charon_log(),
                &["parsed INFORMATIONAL request", "N(AUTH_FAILED)"],
            )
        },
    );
    t.check(
        !t.agent().logged("CHILD_SA installed")
            && !t.agent().logged("IKE SA established")
            && has_line_with_all(
                &t.agent().log_text(),
                &["IKE SA deleted", "reason=AuthenticationFailed"],
            ),
        &format!("{step}: the agent did not end the IKE SA as refused"),
    );
    t.wait_for(10, &format!("{step}: charon still lists an IKE SA"), |t| {
        !t.charon().has("ESTABLISHED")
    });
    t.stop_agent();
    t.stop_charon();
}
