//! IKE_AUTH with certificates between two engines (sans-IO, every
//! datagram delivered at once), on the certificates of [`super::tests`]:
//! chains through the intermediate, each key type, mixing with a
//! pre-shared key, refusals (unknown CA, identity, a signature by a key
//! that is not the certificate's), and what CERT and CERTREQ payloads go
//! out (`send_cert`, `send_certreq`, the chain a CERTREQ asks for).

use std::time::{Duration, Instant, SystemTime};

use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::{
    key::Scheme,
    tests::{cert_of, pki},
};
use system_tests::certs::Pki;

use crate::{
    config_file::FileConfig,
    engine::{Command, Credentials, DeleteReason, Endpoint, EndpointConfig, Event, LocalAuth},
    proto::{Message, Payload},
};

/// A side's `[connections.ab]`: `auth` lines go in as given.
fn conf(local: &str, remote: &str, id: &str, peer_id: &str, auth: &str) -> String {
    format!(
        r#"
[connections.ab]
local_addrs = ["{local}"]
remote_addrs = ["{remote}"]
local_id = "{id}"
remote_id = "{peer_id}"
proposals = ["aes256gcm16-prfsha256-x25519"]
mobike = true
{auth}
[connections.ab.children.net]
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.2.0.0/24"]
esp_proposals = ["aes256gcm16"]
"#
    )
}

fn pubkey_lines(p: &Pki, name: &str, ca: &str) -> String {
    format!(
        "local_auth = \"pubkey\"\ncert = {:?}\nkey = {:?}\ncacerts = [{:?}]\n",
        p.chain(name).display().to_string(),
        p.path(&format!("{name}.key")).display().to_string(),
        p.path(&format!("{ca}.pem")).display().to_string(),
    )
}

fn endpoint(text: &str) -> Endpoint {
    let cfg = FileConfig::parse(text)
        .unwrap()
        .to_agent_config()
        .unwrap_or_else(|e| panic!("{}", errchain::chain(&e)));
    Endpoint::new(cfg.endpoint).unwrap()
}

fn run(a_text: &str, b_text: &str) -> (Endpoint, Endpoint) {
    let (mut a, mut b) = (endpoint(a_text), endpoint(b_text));
    exchange(&mut a, &mut b);
    (a, b)
}

/// A initiates `ab` to B; datagrams go both ways until both are quiet.
/// What each sent, in order.
fn exchange(a: &mut Endpoint, b: &mut Endpoint) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let now = Instant::now();
    a.handle_command(
        now,
        Command::Initiate {
            connection: "ab".into(),
            local: None,
        },
    )
    .unwrap();
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        while let Some(t) = a.poll_transmit() {
            b.handle_datagram(now, t.remote, t.local, &t.payload);
            from_a.push(t.payload);
        }
        while let Some(t) = b.poll_transmit() {
            a.handle_datagram(now, t.remote, t.local, &t.payload);
            from_b.push(t.payload);
        }
    }
    (from_a, from_b)
}

fn established(e: &Endpoint) -> bool {
    e.ike_sas()
        .first()
        .is_some_and(|s| s.state == "established")
}

fn failed(e: &mut Endpoint) -> bool {
    std::iter::from_fn(|| e.poll_event()).any(|ev| {
        matches!(
            ev,
            Event::IkeSaDeleted {
                reason: DeleteReason::AuthenticationFailed,
                ..
            }
        )
    })
}

#[test]
fn certificates_of_each_key_type_authenticate_both_ways() {
    let p = pki();
    for (a_name, b_name) in [("ec", "rsa"), ("rsa", "ed"), ("ed", "ec")] {
        let a = conf(
            "192.0.2.1",
            "192.0.2.2",
            &format!("{a_name}.test"),
            &format!("{b_name}.test"),
            &pubkey_lines(p, a_name, "root"),
        );
        let b = conf(
            "192.0.2.2",
            "192.0.2.1",
            &format!("{b_name}.test"),
            &format!("{a_name}.test"),
            &pubkey_lines(p, b_name, "root"),
        )
        .replace(
            "10.1.0.0/24\"]\nremote_ts = [\"10.2.0.0/24",
            "10.2.0.0/24\"]\nremote_ts = [\"10.1.0.0/24",
        );
        let (a, b) = run(&a, &b);
        assert!(established(&a) && established(&b), "{a_name} <-> {b_name}");
        assert_eq!(a.ike_sas()[0].children.len(), 1, "{a_name}: CHILD_SA");
    }
}

#[test]
fn a_certificate_one_way_and_a_pre_shared_key_the_other() {
    let p = pki();
    let psk = "psk = \"mixed-psk-0123456789\"\n";
    let a = conf(
        "192.0.2.1",
        "192.0.2.2",
        "ec.test",
        "b.test",
        &format!(
            "{}remote_auth = \"psk\"\n{psk}",
            pubkey_lines(p, "ec", "root").replace(
                &format!(
                    "cacerts = [{:?}]\n",
                    p.path("root.pem").display().to_string()
                ),
                ""
            )
        ),
    );
    let b = conf(
        "192.0.2.2",
        "192.0.2.1",
        "b.test",
        "ec.test",
        &format!(
            "local_auth = \"psk\"\nremote_auth = \"pubkey\"\ncacerts = [{:?}]\n{psk}",
            p.path("root.pem").display().to_string()
        ),
    )
    .replace(
        "10.1.0.0/24\"]\nremote_ts = [\"10.2.0.0/24",
        "10.2.0.0/24\"]\nremote_ts = [\"10.1.0.0/24",
    );
    let (a, b) = run(&a, &b);
    assert!(established(&a) && established(&b));
}

#[test]
fn an_unknown_ca_or_an_identity_not_in_the_certificate_is_refused() {
    let p = pki();
    // B trusts another CA only.
    let (a, b) = ec_a_rsa_b(p, "other");
    let (mut a1, mut b1) = run(&a, &b);
    assert!(!established(&a1) && !established(&b1));
    assert!(failed(&mut b1), "B refuses A's certificate");
    assert!(failed(&mut a1), "A is told");
    // B expects an identity A's certificate does not carry.
    let b = flip(conf(
        "192.0.2.2",
        "192.0.2.1",
        "rsa.test",
        "ed.test",
        &pubkey_lines(p, "rsa", "root"),
    ));
    let a = conf(
        "192.0.2.1",
        "192.0.2.2",
        "ec.test",
        "rsa.test",
        &pubkey_lines(p, "ec", "root"),
    );
    let (a2, b2) = run(&a, &b);
    assert!(!established(&a2) && !established(&b2));
}

#[test]
fn a_local_id_not_in_our_certificate_or_a_key_of_another_is_refused_at_load() {
    let p = pki();
    let text = conf(
        "192.0.2.1",
        "192.0.2.2",
        "rsa.test",
        "b.test",
        &pubkey_lines(p, "ec", "root"),
    );
    let e = FileConfig::parse(&text)
        .unwrap()
        .to_agent_config()
        .unwrap_err();
    assert!(
        e.to_string().contains("local_id is not in the certificate"),
        "{e}"
    );
    let lines = pubkey_lines(p, "ec", "root").replace("ec.key", "ed.key");
    let text = conf("192.0.2.1", "192.0.2.2", "ec.test", "b.test", &lines);
    let e = FileConfig::parse(&text)
        .unwrap()
        .to_agent_config()
        .unwrap_err();
    assert!(
        e.to_string().contains("is not the key of the certificate"),
        "{e}"
    );
}

/// A as ec.test (P-256, trusting the root) and B as rsa.test (RSA,
/// trusting `b_ca`), both with certificates: A's and B's configurations.
fn ec_a_rsa_b(p: &Pki, b_ca: &str) -> (String, String) {
    let a = conf(
        "192.0.2.1",
        "192.0.2.2",
        "ec.test",
        "rsa.test",
        &pubkey_lines(p, "ec", "root"),
    );
    let b = flip(conf(
        "192.0.2.2",
        "192.0.2.1",
        "rsa.test",
        "ec.test",
        &pubkey_lines(p, "rsa", b_ca),
    ));
    (a, b)
}

fn flip(s: String) -> String {
    s.replace(
        "10.1.0.0/24\"]\nremote_ts = [\"10.2.0.0/24",
        "10.2.0.0/24\"]\nremote_ts = [\"10.1.0.0/24",
    )
}

fn not_after(p: &Pki, name: &str) -> SystemTime {
    let der = cert_of(p, name);
    let (_, c) = X509Certificate::from_der(&der).unwrap();
    let secs = u64::try_from(c.validity().not_after.timestamp()).unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// What status shows: each side's method as used, the peer's
/// certificate; kept by the IKE SA that a rekey makes.
#[test]
fn each_side_knows_how_both_authenticated_and_the_peers_certificate() {
    use crate::engine::{AuthUsed, PeerCertInfo};
    let p = pki();
    let (a, b) = ec_a_rsa_b(p, "root");
    let (mut a, mut b) = run(&a, &b);
    assert!(established(&a) && established(&b));
    let int = "C=CH, O=mobike test, CN=Intermediate CA";
    let (ec_used, rsa_used) = (
        AuthUsed::Signature(Scheme::EcdsaP256Sha256),
        AuthUsed::Signature(Scheme::RsaPssSha256),
    );
    let (ec, rsa) = (Some(ec_used), Some(rsa_used));
    let check = |a: &Endpoint, b: &Endpoint| {
        let (sa, sb) = (&a.ike_sas()[0], &b.ike_sas()[0]);
        assert_eq!((sa.local_auth, sa.remote_auth), (ec, rsa));
        assert_eq!((sb.local_auth, sb.remote_auth), (rsa, ec));
        assert_eq!(
            sa.peer_cert,
            Some(PeerCertInfo {
                subject: "C=CH, O=mobike test, CN=rsa.test".into(),
                issuer: int.into(),
                not_after: not_after(p, "rsa"),
            })
        );
        assert_eq!(
            sb.peer_cert,
            Some(PeerCertInfo {
                subject: "C=CH, O=mobike test, CN=ec.test".into(),
                issuer: int.into(),
                not_after: not_after(p, "ec"),
            })
        );
    };
    check(&a, &b);
    assert_eq!(ec_used.to_string(), "ecdsa-p256-sha256 (RFC 7427)");
    assert_eq!(rsa_used.to_string(), "rsa-pss-sha256 (RFC 7427)");

    // The IKE SA made by a rekey (RFC 7296 §2.18) authenticated as the
    // old one did.
    let (now, old) = (Instant::now(), a.ike_sas()[0].id);
    a.handle_command(now, Command::RekeyIkeSa(old)).unwrap();
    for _ in 0..10 {
        while let Some(t) = a.poll_transmit() {
            b.handle_datagram(now, t.remote, t.local, &t.payload);
        }
        while let Some(t) = b.poll_transmit() {
            a.handle_datagram(now, t.remote, t.local, &t.payload);
        }
    }
    assert_eq!(a.ike_sas().len(), 1);
    assert_ne!(a.ike_sas()[0].id, old, "rekeyed");
    check(&a, &b);
}

/// Pre-shared keys: "psk" each way and no certificate; mixed, the
/// certificate only where one was used.
#[test]
fn a_pre_shared_key_shows_as_psk_without_a_certificate() {
    use crate::engine::AuthUsed;
    let psk = "psk = \"status-psk-0123456789\"\n";
    let a = conf("192.0.2.1", "192.0.2.2", "a.test", "b.test", psk);
    let b = flip(conf("192.0.2.2", "192.0.2.1", "b.test", "a.test", psk));
    let (a, b) = run(&a, &b);
    assert!(established(&a) && established(&b));
    for e in [&a, &b] {
        let s = &e.ike_sas()[0];
        assert_eq!(
            (s.local_auth, s.remote_auth),
            (Some(AuthUsed::Psk), Some(AuthUsed::Psk))
        );
        assert_eq!(s.peer_cert, None);
    }

    let p = pki();
    let root = format!(
        "cacerts = [{:?}]\n",
        p.path("root.pem").display().to_string()
    );
    let a = conf(
        "192.0.2.1",
        "192.0.2.2",
        "ed.test",
        "b.test",
        &format!(
            "{}remote_auth = \"psk\"\n{psk}",
            pubkey_lines(p, "ed", "root").replace(&root, "")
        ),
    );
    let b = flip(conf(
        "192.0.2.2",
        "192.0.2.1",
        "b.test",
        "ed.test",
        &format!("local_auth = \"psk\"\nremote_auth = \"pubkey\"\n{root}{psk}"),
    ));
    let (a, b) = run(&a, &b);
    assert!(established(&a) && established(&b));
    let (sa, sb) = (&a.ike_sas()[0], &b.ike_sas()[0]);
    let ed_used = AuthUsed::Signature(Scheme::Ed25519);
    let ed = Some(ed_used);
    assert_eq!((sa.local_auth, sa.remote_auth), (ed, Some(AuthUsed::Psk)));
    assert_eq!((sb.local_auth, sb.remote_auth), (Some(AuthUsed::Psk), ed));
    assert_eq!(sa.peer_cert, None);
    assert_eq!(
        sb.peer_cert.as_ref().map(|c| c.subject.as_str()),
        Some("C=CH, O=mobike test, CN=ed.test")
    );
    assert_eq!(ed_used.to_string(), "ed25519 (RFC 7427)");
}

/// An endpoint of `text` as [`endpoint`] makes it, its configuration first
/// changed by `change`: what the configuration file cannot say.
fn endpoint_with(text: &str, change: impl FnOnce(&mut EndpointConfig)) -> Endpoint {
    let mut cfg = FileConfig::parse(text)
        .unwrap()
        .to_agent_config()
        .unwrap_or_else(|e| panic!("{}", errchain::chain(&e)));
    change(&mut cfg.endpoint);
    Endpoint::new(cfg.endpoint).unwrap()
}

/// The connection's credentials with the private key of `key` in place
/// of its own: a signer whose certificate is not its key's, which the
/// configuration file refuses (see
/// `a_local_id_not_in_our_certificate_or_a_key_of_another_is_refused_at_load`).
fn with_key_of(p: &Pki, key: &str) -> impl FnOnce(&mut EndpointConfig) {
    let other = super::files::read_private_key(&p.path(&format!("{key}.key"))).unwrap();
    move |cfg| {
        let LocalAuth::Pubkey(cred) = &cfg.connections[0].local_auth else {
            panic!("no certificate configured");
        };
        cfg.connections[0].local_auth = LocalAuth::Pubkey(std::sync::Arc::new(Credentials {
            key: other,
            chain: cred.chain.clone(),
            chain_hashes: cred.chain_hashes.clone(),
            send_cert: cred.send_cert,
        }));
    }
}

/// A real P-256 key that is not the certificate's (`stranger`'s, P-256 as
/// `ec`'s): the signature is of the right kind and does not verify. The
/// refusal's reason is pki::auth's `AuthError::Invalid` ("the signature
/// does not verify with the certificate's key", see
/// `signatures_verify_with_the_signers_certificate_only`).
#[test]
fn a_signature_by_a_key_not_the_certificates_is_refused_both_ways() {
    let p = pki();
    let (a_text, b_text) = ec_a_rsa_b(p, "root");
    // The initiator signs with the wrong key: B refuses, A is told.
    let mut a = endpoint_with(&a_text, with_key_of(p, "stranger"));
    let mut b = endpoint(&b_text);
    exchange(&mut a, &mut b);
    assert!(!established(&a) && !established(&b));
    assert!(failed(&mut b), "B refuses A's signature");
    assert!(failed(&mut a), "A is told");
    // The responder does: A refuses and tells B.
    let (a_text, b_text) = (
        conf(
            "192.0.2.1",
            "192.0.2.2",
            "rsa.test",
            "ec.test",
            &pubkey_lines(p, "rsa", "root"),
        ),
        flip(conf(
            "192.0.2.2",
            "192.0.2.1",
            "ec.test",
            "rsa.test",
            &pubkey_lines(p, "ec", "root"),
        )),
    );
    let mut a = endpoint(&a_text);
    let mut b = endpoint_with(&b_text, with_key_of(p, "stranger"));
    exchange(&mut a, &mut b);
    assert!(!established(&a) && !established(&b));
    assert!(failed(&mut a), "A refuses B's signature");
    assert!(failed(&mut b), "B is told");
    // The same endpoints with their own keys authenticate.
    let (a, b) = run(&a_text, &b_text);
    assert!(established(&a) && established(&b));
}

/// The CERTREQ payloads of an unencrypted message (IKE_SA_INIT).
fn certreqs(datagram: &[u8]) -> Vec<(u8, Vec<u8>)> {
    Message::decode(datagram)
        .unwrap()
        .payloads
        .into_iter()
        .filter_map(|p| match p {
            Payload::CertReq(c) => Some((c.encoding, c.data)),
            _ => None,
        })
        .collect()
}

/// The SHA-1 hash of `name`'s SubjectPublicKeyInfo as openssl writes it:
/// a CA's entry in a CERTREQ (RFC 7296 §3.7), computed apart from ours.
fn openssl_spki_sha1(p: &Pki, name: &str) -> Vec<u8> {
    let (pem, pubkey, der) = (
        format!("{name}.pem"),
        format!("{name}.pub.pem"),
        format!("{name}.spki.der"),
    );
    p.openssl(&["x509", "-in", &pem, "-pubkey", "-noout", "-out", &pubkey]);
    p.openssl(&[
        "pkey", "-pubin", "-in", &pubkey, "-outform", "DER", "-out", &der,
    ]);
    let spki = std::fs::read(p.path(&der)).unwrap();
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &spki)
        .as_ref()
        .to_vec()
}

/// B's IKE_SA_INIT answer names the CA it trusts by the SHA-1 hash of its
/// SubjectPublicKeyInfo; A's request names none (its CERTREQ goes in
/// IKE_AUTH, §3.7); with `send_certreq = false` B names none either.
#[test]
fn the_responder_names_its_trusted_ca_by_its_key_hash_unless_told_not_to() {
    let p = pki();
    let (a_text, b_text) = ec_a_rsa_b(p, "root");
    let (mut a, mut b) = (endpoint(&a_text), endpoint(&b_text));
    let (from_a, from_b) = exchange(&mut a, &mut b);
    assert!(established(&a) && established(&b));
    assert_eq!(certreqs(&from_a[0]), vec![]);
    assert_eq!(
        certreqs(&from_b[0]),
        vec![(4, openssl_spki_sha1(p, "root"))]
    );

    let b_text = b_text.replace("cacerts =", "send_certreq = false\ncacerts =");
    let (mut a, mut b) = (endpoint(&a_text), endpoint(&b_text));
    let (_, from_b) = exchange(&mut a, &mut b);
    assert_eq!(certreqs(&from_b[0]), vec![]);
}

/// `send_cert`: with `ifasked` (the default) A sends its certificate only
/// when B's CERTREQ asks, so a B that does not ask and has no copy of
/// its own refuses A; `always` sends it anyway; `never` does not even
/// when asked. The same for B's certificate and A's CERTREQ (IKE_AUTH).
#[test]
fn certificates_go_out_as_send_cert_says() {
    let p = pki();
    let (a_text, b_text) = ec_a_rsa_b(p, "root");
    let quiet = |t: &str| t.replace("cacerts =", "send_certreq = false\ncacerts =");
    let send =
        |t: &str, how: &str| t.replace("cacerts =", &format!("send_cert = \"{how}\"\ncacerts ="));
    let cases = [
        // (A, B, established)
        (a_text.clone(), b_text.clone(), true),
        (a_text.clone(), quiet(&b_text), false),
        (send(&a_text, "always"), quiet(&b_text), true),
        (send(&a_text, "never"), b_text.clone(), false),
        (quiet(&a_text), b_text.clone(), false),
        (quiet(&a_text), send(&b_text, "always"), true),
        (a_text.clone(), send(&b_text, "never"), false),
    ];
    for (i, (a_text, b_text, ok)) in cases.into_iter().enumerate() {
        let (mut a, mut b) = run(&a_text, &b_text);
        assert_eq!(established(&a) && established(&b), ok, "case {i}");
        if !ok {
            assert!(failed(&mut a) && failed(&mut b), "case {i}");
        }
    }
}

/// The chain each side sends ends below the CA the other's CERTREQ names
/// (B's in its IKE_SA_INIT answer, A's in IKE_AUTH): a peer trusting the
/// intermediate gets the end entity alone, one trusting the root gets the
/// intermediate too; all validate.
#[test]
fn the_chain_sent_ends_below_the_ca_the_certreq_names() {
    let p = pki();
    let quoted = |name: &str| format!("{:?}", p.path(&format!("{name}.pem")).display().to_string());
    // The octets A and B send when A trusts `a_ca` and B trusts `b_ca`.
    let sent = |a_ca: &str, b_ca: &str| {
        let (a_text, b_text) = ec_a_rsa_b(p, b_ca);
        let a_text = a_text.replace(&quoted("root"), &quoted(a_ca));
        let (mut a, mut b) = (endpoint(&a_text), endpoint(&b_text));
        let (from_a, from_b) = exchange(&mut a, &mut b);
        assert!(
            established(&a) && established(&b),
            "A trusting {a_ca}, B {b_ca}"
        );
        let total = |d: &[Vec<u8>]| d.iter().map(Vec::len).sum::<usize>();
        (total(&from_a), total(&from_b))
    };
    let int = cert_of(p, "int").len();
    // ECDSA signatures differ in length by a few octets.
    let longer_by_int = |long: usize, short: usize| long.abs_diff(short + int) <= 8;
    let (to_roots, to_ints) = (sent("root", "root"), sent("int", "int"));
    assert!(
        longer_by_int(to_roots.0, to_ints.0) && longer_by_int(to_roots.1, to_ints.1),
        "(A, B) sent {to_roots:?} octets to a peer trusting the root, {to_ints:?} to one \
         trusting the intermediate; the intermediate is {int}"
    );
}
