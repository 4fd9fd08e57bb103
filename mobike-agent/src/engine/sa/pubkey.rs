//! Public-key authentication in IKE_AUTH (RFC 7296 §2.15, §3.6-3.8;
//! RFC 7427; RFC 4754 for the classic ECDSA methods): our CERT payloads
//! (as `send_cert` says, the chain cut below the CA the peer's CERTREQ
//! names) and signed AUTH, the CERTREQ naming the CAs we trust (unless
//! `send_certreq` is off), and the check of a peer's certificate chain,
//! identity and signature. The X.509 work is
//! [`crate::pki`]'s; this module puts it into the exchange.
//!
//! A peer may sign with RFC 7427's Digital Signature (method 14) or a
//! classic method: 1 (RSA PKCS#1 v1.5 with SHA-1), 9, 10 or 11 (ECDSA on
//! P-256, P-384 or P-521, RFC 4754). We sign with method 14 whenever the
//! peer sent SIGNATURE_HASH_ALGORITHMS with a hash we can use; without,
//! an ECDSA key falls back to method 9, 10 or 11, but an RSA key is always signed with method 14: ring cannot
//! make method 1's SHA-1 signature, so against a peer without RFC 7427 an
//! RSA key cannot authenticate (the log says so; as responder we answer
//! AUTHENTICATION_FAILED).

use tracing::{debug, warn};

use crate::{
    crypto::IkeKeys,
    engine::{AuthUsed, ConnectionConfig, Ctx, LocalAuth, RemoteAuth, SendCert},
    pki::{self, key::Scheme},
    proto::{AuthMethod, Authentication, CertData, Identification, NotifyType, Payload},
};

use super::{IkeSa, notify, notify_of};

/// Cert Encoding "X.509 Certificate - Signature" (RFC 7296 §3.6).
pub(super) const X509_SIGNATURE: u8 = 4;

/// The hash algorithms a peer's SIGNATURE_HASH_ALGORITHMS lists.
pub(super) fn peer_hashes(p: &[Payload]) -> Vec<u16> {
    notify_of(p, NotifyType::SIGNATURE_HASH_ALGORITHMS)
        .map(|n| pki::auth::parse_hash_notify(&n.data))
        .unwrap_or_default()
}

/// Our SIGNATURE_HASH_ALGORITHMS notify (RFC 7427 §4).
pub(super) fn hash_notify() -> Payload {
    notify(
        NotifyType::SIGNATURE_HASH_ALGORITHMS,
        pki::auth::hash_notify_data(&pki::auth::OUR_HASHES),
    )
}

/// A CERTREQ naming the CAs of the given connections that take
/// certificates and have `send_certreq`; None if none does.
pub(super) fn certreq<'a>(conns: impl Iterator<Item = &'a ConnectionConfig>) -> Option<Payload> {
    let mut data = Vec::new();
    for c in conns {
        if let RemoteAuth::Pubkey(t) = &c.remote_auth
            && t.send_certreq
        {
            for h in &t.ca_hashes {
                if !pki::auth::certreq_names(&data, h) {
                    data.extend_from_slice(h);
                }
            }
        }
    }
    (!data.is_empty()).then_some(Payload::CertReq(CertData {
        encoding: X509_SIGNATURE,
        data,
    }))
}

/// What the peer's CERTREQ payloads ask for: None if it sent none, else
/// their X.509 CA hashes (RFC 7296 §3.7) one after the other (empty if it
/// asked without naming a CA, or in another encoding).
pub(super) fn peer_certreq(p: &[Payload]) -> Option<Vec<u8>> {
    let mut asked = None;
    for x in p {
        if let Payload::CertReq(c) = x {
            let data: &mut Vec<u8> = asked.get_or_insert_with(Vec::new);
            if c.encoding == X509_SIGNATURE {
                data.extend(c.data.chunks_exact(20).flatten());
            }
        }
    }
    asked
}

/// Adds the CERTREQ of a later message (`more`) to what the peer asked for
/// before (`asked`).
pub(super) fn merge_certreq(asked: &mut Option<Vec<u8>>, more: Option<Vec<u8>>) {
    if let Some(more) = more {
        asked.get_or_insert_with(Vec::new).extend(more);
    }
}

/// How many certificates of our chain (ours first, then intermediates, each
/// with its CERTREQ entry in `chain_hashes`) go out, by `send_cert` and the
/// peer's CERTREQ (`asked`, as [`peer_certreq`] gives it). When the CERTREQ
/// names one of our intermediates, ours and those below it: the peer
/// trusts that CA already. When it names none of them (its root, above our
/// last intermediate, or a CA we do not know), the whole chain: the peer
/// may still build a path with it.
pub(super) fn certs_to_send(
    send: SendCert,
    chain_hashes: &[[u8; 20]],
    asked: Option<&[u8]>,
) -> usize {
    let n = chain_hashes.len();
    match (send, asked) {
        (SendCert::Never, _) | (SendCert::IfAsked, None) => 0,
        (SendCert::Always, None) => n,
        (_, Some(named)) => chain_hashes
            .iter()
            .skip(1)
            .position(|h| pki::auth::certreq_names(named, h))
            .map_or(n, |i| i + 1),
    }
}

/// Which side an AUTH is for: whose SK_p, IKE_SA_INIT message and nonce.
#[derive(Debug, Clone, Copy)]
pub(super) struct Signer<'a> {
    pub(super) initiator: bool,
    /// The IKE_SA_INIT message the signer sent.
    pub(super) real_message: &'a [u8],
    /// The other side's nonce.
    pub(super) peer_nonce: &'a [u8],
}

/// What [`our_auth`] makes: our CERT payloads, our AUTH payload and how
/// it authenticates us, for status.
pub(super) type OurAuth = (Vec<Payload>, Authentication, AuthUsed);

/// Our CERT payloads and AUTH payload for `id_body` (our ID payload's
/// body), by the connection's `local_auth`; Err names why we cannot sign.
pub(super) fn our_auth(
    conn: &ConnectionConfig,
    keys: &IkeKeys,
    who: Signer<'_>,
    id_body: &[u8],
    peer_hashes: &[u16],
    peer_certreq: Option<&[u8]>,
) -> Result<OurAuth, String> {
    match &conn.local_auth {
        LocalAuth::Psk => Ok((
            Vec::new(),
            Authentication {
                method: AuthMethod::SHARED_KEY_MESSAGE_INTEGRITY_CODE,
                data: keys.psk_auth(
                    &conn.psk,
                    who.initiator,
                    who.real_message,
                    who.peer_nonce,
                    id_body,
                ),
            },
            AuthUsed::Psk,
        )),
        LocalAuth::Pubkey(cred) => {
            let octets =
                keys.signed_octets(who.initiator, who.real_message, who.peer_nonce, id_body);
            let (method, scheme) = match pki::auth::choose(cred.key.schemes(), peer_hashes) {
                Some(s) => (AuthMethod::DIGITAL_SIGNATURE, s),
                // A peer without RFC 7427: the classic ECDSA methods.
                None if cred.key.schemes().contains(&Scheme::EcdsaP256Sha256Fixed) => {
                    (AuthMethod::ECDSA_SHA256_P256, Scheme::EcdsaP256Sha256Fixed)
                }
                None if cred.key.schemes().contains(&Scheme::EcdsaP384Sha384Fixed) => {
                    (AuthMethod::ECDSA_SHA384_P384, Scheme::EcdsaP384Sha384Fixed)
                }
                None if cred.key.schemes().contains(&Scheme::EcdsaP521Sha512Fixed) => {
                    (AuthMethod::ECDSA_SHA512_P521, Scheme::EcdsaP521Sha512Fixed)
                }
                None => {
                    return Err(format!(
                        "the peer lists no hash algorithm a {} key can sign with \
                         (SIGNATURE_HASH_ALGORITHMS {peer_hashes:?}); we sign only \
                         with RFC 7427 or, for ECDSA, RFC 4754 (ring cannot make \
                         method 1's RSA SHA-1 signature)",
                        cred.key.kind()
                    ));
                }
            };
            let sig = cred.key.sign(scheme, &octets).map_err(|e| e.to_string())?;
            let data = if method == AuthMethod::DIGITAL_SIGNATURE {
                pki::auth::encode(scheme, &sig).ok_or("no AlgorithmIdentifier")?
            } else {
                sig
            };
            let send = certs_to_send(cred.send_cert, &cred.chain_hashes, peer_certreq);
            debug!(
                certs = send,
                of = cred.chain.len(),
                send_cert = ?cred.send_cert,
                peer_certreq = peer_certreq.map(|d| d.len() / 20),
                "IKE_AUTH: our certificates"
            );
            let certs = cred.chain[..send]
                .iter()
                .map(|c| {
                    Payload::Cert(CertData {
                        encoding: X509_SIGNATURE,
                        data: c.to_vec(),
                    })
                })
                .collect();
            Ok((
                certs,
                Authentication { method, data },
                AuthUsed::Signature(scheme),
            ))
        }
    }
}

/// How the peer authenticated, and its certificate if it used one.
pub(super) type PeerAuth = (AuthUsed, Option<pki::verify::Verified>);

/// Whether the peer's AUTH proves `peer_id` by the connection's
/// `remote_auth`; Err says why not, for the log.
pub(super) fn check_peer(
    ctx: &Ctx<'_>,
    conn: &ConnectionConfig,
    keys: &IkeKeys,
    who: Signer<'_>,
    peer_id: &Identification,
    auth: &Authentication,
    p: &[Payload],
) -> Result<PeerAuth, String> {
    let id_body = crate::proto::id_payload_body(peer_id);
    match &conn.remote_auth {
        RemoteAuth::Psk => {
            let expected = keys.psk_auth(
                &conn.psk,
                who.initiator,
                who.real_message,
                who.peer_nonce,
                &id_body,
            );
            if auth.method == AuthMethod::SHARED_KEY_MESSAGE_INTEGRITY_CODE
                && crate::crypto::verify_mac(&expected, &auth.data)
            {
                Ok((AuthUsed::Psk, None))
            } else {
                Err("the pre-shared key AUTH does not verify".into())
            }
        }
        RemoteAuth::Pubkey(trust) => {
            let mut certs = p.iter().filter_map(|x| match x {
                Payload::Cert(c) if c.encoding == X509_SIGNATURE => {
                    Some(rustls_pki_types::CertificateDer::from(c.data.as_slice()))
                }
                _ => None,
            });
            let ee = certs
                .next()
                .ok_or("no certificate (CERT payload) from the peer")?;
            let intermediates: Vec<_> = certs.collect();
            let verified = trust
                .store
                .verify(&ee, &intermediates, ctx.wall)
                .map_err(|e| e.to_string())?;
            if !pki::identity::matches(peer_id, &ee).map_err(|e| e.to_string())? {
                return Err(format!(
                    "its identity {} is not in the certificate of {}",
                    pki::identity::describe(peer_id),
                    verified.subject
                ));
            }
            let octets =
                keys.signed_octets(who.initiator, who.real_message, who.peer_nonce, &id_body);
            let (scheme, sig) =
                pki::auth::peer_scheme(auth.method, &auth.data).map_err(|e| e.to_string())?;
            pki::auth::verify(scheme, &ee, &octets, sig)
                .map_err(|e| format!("certificate of {}: {e}", verified.subject))?;
            Ok((AuthUsed::Signature(scheme), Some(verified)))
        }
    }
}

/// Why a responder's IDr is refused when it is not the identity
/// `remote_id` asks for (RFC 7296 §2.15: the initiator checks whom it
/// reached).
pub(super) fn identity_mismatch(answered: &Identification, wanted: &Identification) -> String {
    format!(
        "it answered as {}, not as remote_id {}",
        pki::identity::describe(answered),
        pki::identity::describe(wanted)
    )
}

impl IkeSa {
    /// Logs a refused peer authentication.
    pub(super) fn refused(&self, peer: &Identification, why: &str) {
        warn!(sa = self.id, peer = %pki::identity::describe(peer), why, "IKE_AUTH: authentication of the peer failed");
    }
}

#[cfg(test)]
mod tests {
    use super::{SendCert, certs_to_send, identity_mismatch, merge_certreq, peer_certreq};
    use crate::proto::{CertData, IdType, Identification, Payload};

    /// Our certificate, two intermediates above it.
    const CHAIN: [[u8; 20]; 3] = [[1; 20], [2; 20], [3; 20]];

    #[test]
    fn send_cert_and_the_certreq_decide_how_much_of_the_chain_goes_out() {
        use SendCert::*;
        let (root, unknown) = ([9; 20], [8; 20]);
        let names = |hashes: &[[u8; 20]]| hashes.concat();
        // Not asked.
        assert_eq!(certs_to_send(Never, &CHAIN, None), 0);
        assert_eq!(certs_to_send(IfAsked, &CHAIN, None), 0);
        assert_eq!(certs_to_send(Always, &CHAIN, None), 3);
        // Asked without a CA, or for CAs above or outside the chain.
        for asked in [vec![], names(&[root]), names(&[unknown, root])] {
            assert_eq!(certs_to_send(IfAsked, &CHAIN, Some(&asked)), 3);
            assert_eq!(certs_to_send(Always, &CHAIN, Some(&asked)), 3);
            assert_eq!(certs_to_send(Never, &CHAIN, Some(&asked)), 0);
        }
        // Asked for an intermediate: what is below it, the shortest way.
        let upper = names(&[unknown, CHAIN[2]]);
        assert_eq!(certs_to_send(IfAsked, &CHAIN, Some(&upper)), 2);
        let both = names(&[CHAIN[2], CHAIN[1]]);
        assert_eq!(certs_to_send(Always, &CHAIN, Some(&both)), 1);
        // Our own certificate named is no CA of ours.
        assert_eq!(certs_to_send(IfAsked, &CHAIN, Some(&names(&[CHAIN[0]]))), 3);
        // A chain of one.
        assert_eq!(certs_to_send(IfAsked, &CHAIN[..1], Some(&upper)), 1);
    }

    #[test]
    fn the_peers_certreqs_are_gathered_across_payloads_and_messages() {
        let req = |encoding, data: Vec<u8>| Payload::CertReq(CertData { encoding, data });
        assert_eq!(peer_certreq(&[]), None);
        // Another encoding, and a tail too short for a hash: asked, no CA.
        let odd = [req(12, vec![5; 20]), req(4, vec![6; 19])];
        assert_eq!(peer_certreq(&odd), Some(vec![]));
        let two = [req(4, [[1; 20], [2; 20]].concat()), req(4, vec![3; 20])];
        let mut asked = peer_certreq(&two);
        assert_eq!(asked.as_ref().map(Vec::len), Some(60));
        merge_certreq(&mut asked, None);
        assert_eq!(asked.as_ref().map(Vec::len), Some(60));
        merge_certreq(&mut asked, Some(vec![4; 20]));
        assert_eq!(asked.as_ref().map(|a| a[60..].to_vec()), Some(vec![4; 20]));
        let mut none = None;
        merge_certreq(&mut none, Some(vec![]));
        assert_eq!(none, Some(vec![]));
    }

    #[test]
    fn an_identity_mismatch_names_both_identities() {
        let fqdn = Identification {
            ty: IdType::ID_FQDN,
            data: b"b.test".to_vec(),
        };
        let ip = Identification {
            ty: IdType::ID_IPV4_ADDR,
            data: vec![192, 0, 2, 2],
        };
        assert_eq!(
            identity_mismatch(&ip, &fqdn),
            "it answered as 192.0.2.2, not as remote_id b.test"
        );
    }
}
