//! 8: a signature by a key that is not the certificate's, both sides, both
//! roles. Neither end will make one of its own accord: charon picks the
//! private key by its certificate's public key, and the agent's
//! configuration loader refuses a key that is not its certificate's (step
//! 5). So the signer here is an engine of the agent's library, configured
//! as the agent would be (certificate and chain as loaded) and then given
//! another real P-256 key (`aoth.key`), run over UDP in a namespace
//! (`interop_certs::drive`). The verifier is the real thing: charon, or
//! the agent binary.

use mobike_agent::engine::DeleteReason;
use system_tests::certs::Pki;

use super::{
    Interop, SUITE, agent_cert_conf, charon_pubkey_conf, has_line_with, has_line_with_all,
    interop_certs::{drive, engine_with_key},
};

/// The engine's connection `c` as charon's side: b.test with the P-256
/// certificate `bec` (and the intermediate), trusting the root.
fn b_side_conf(pki: &Pki) -> String {
    format!(
        "[connections.c]
local_addrs = [\"192.0.2.2\"]
remote_addrs = [\"192.0.2.1\"]
local_id = \"b.test\"
remote_id = \"a.test\"
proposals = [\"{SUITE}\"]
mobike = true
local_auth = \"pubkey\"
cert = {:?}
key = {:?}
cacerts = [{:?}]
[connections.c.children.net]
local_ts = [\"10.2.0.0/24\"]
remote_ts = [\"10.1.0.0/24\"]
esp_proposals = [\"aes256gcm16\"]
",
        pki.chain("bec").display().to_string(),
        pki.path("bec.key").display().to_string(),
        pki.path("root.pem").display().to_string(),
    )
}

/// What charon logs when a.test's signature does not verify with the key
/// of its certificate, which charon does accept ("using certificate").
fn charon_refused_signature(t: &Interop, step: &str) {
    t.check(
        t.charon_count("using certificate \"C=CH, O=mobike test, CN=a.test\"") >= 1
            && t.charon_count("signature validation failed, looking for another key") >= 1
            && t.charon_count("authentication of 'a.test' with") == 0,
        &format!("{step}: charon's log does not say the signature failed"),
    );
    t.check(
        !t.charon().has("ESTABLISHED"),
        &format!("{step}: charon lists an IKE SA"),
    );
}

/// charon refuses the engine's signature as responder (AUTHENTICATION_FAILED
/// in its IKE_AUTH answer) and as initiator (in an INFORMATIONAL after the
/// engine's answer).
pub fn charon_refuses_it(t: &mut Interop, pki: &Pki) {
    let conf = agent_cert_conf(pki, "initiate", "a", "a", "root.pem");
    let key = pki.path("aoth.key");

    let step = "8 charon responder";
    t.clear_charon_log();
    t.start_charon(&charon_pubkey_conf("b", ""));
    let got = drive(&t.a, "192.0.2.1", engine_with_key(&conf, &key), true, 20);
    t.check(
        got == Some(DeleteReason::AuthenticationFailed),
        &format!("{step}: the engine's IKE SA ended {got:?}"),
    );
    charon_refused_signature(t, step);
    t.check(
        has_line_with(
            &t.charon_log(),
            &["generating IKE_AUTH response 1", "[ N(AUTH_FAILED) ]"],
        ),
        &format!("{step}: charon did not answer AUTHENTICATION_FAILED"),
    );
    t.stop_charon();

    let step = "8 charon initiator";
    t.clear_charon_log();
    t.start_charon(&charon_pubkey_conf("b", "192.0.2.1"));
    let ep = engine_with_key(&conf, &key);
    let got = std::thread::scope(|s| {
        let charon = t.charon();
        let initiation = s.spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            charon
                .swanctl(&["--initiate", "--child", "net", "--timeout", "20"])
                .status
                .success()
        });
        let got = drive(&t.a, "192.0.2.1", ep, false, 20);
        (got, initiation.join().expect("swanctl thread"))
    });
    t.check(
        got == (Some(DeleteReason::AuthenticationFailed), false),
        &format!("{step}: (the engine's IKE SA ended, charon's initiation succeeded): {got:?}"),
    );
    charon_refused_signature(t, step);
    t.check(
        has_line_with(
            &t.charon_log(),
            &["generating INFORMATIONAL request", "[ N(AUTH_FAILED) ]"],
        ),
        &format!("{step}: charon did not send AUTHENTICATION_FAILED"),
    );
    t.stop_charon();
}

/// The agent binary refuses the engine's signature (as b.test, certificate
/// `bec`, another key) as initiator and as responder, naming why, and
/// tells the engine.
pub fn the_agent_refuses_it(t: &mut Interop, pki: &Pki) {
    let conf = b_side_conf(pki);
    let key = pki.path("aoth.key");
    let why = [
        "authentication of the peer failed",
        "CN=bec.test",
        "the signature does not verify with the certificate's key",
    ];
    for (step, agent_start) in [
        ("8 agent initiator", "initiate"),
        ("8 agent responder", "listen"),
    ] {
        t.start_agent(
            &format!("wrong-key-{agent_start}"),
            &agent_cert_conf(pki, agent_start, "a", "a", "root.pem"),
        );
        // The agent retransmits its IKE_SA_INIT until the engine listens.
        let got = drive(
            &t.b,
            "192.0.2.2",
            engine_with_key(&conf, &key),
            agent_start == "listen",
            20,
        );
        t.check(
            got == Some(DeleteReason::AuthenticationFailed),
            &format!("{step}: the engine's IKE SA ended {got:?}"),
        );
        t.check(
            has_line_with_all(&t.agent().log_text(), &why)
                && !t.agent().logged("CHILD_SA installed"),
            &format!("{step}: the agent did not refuse the signature, naming why"),
        );
        t.stop_agent();
    }
}
