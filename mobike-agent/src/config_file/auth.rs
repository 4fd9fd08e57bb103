//! The `local_auth` / `remote_auth` side of a connection section: our
//! certificate, key and identity (checked against each other), the trust
//! anchors and CRLs for the peer's certificate, and when CERT and CERTREQ
//! payloads go out (`send_cert`, `send_certreq`, as swanctl names them).
//! Only reading and checking files; nothing here talks to a peer.

use super::{AuthSetting, ConfigFileError, ConnectionSection};
use crate::engine;

/// Our side's authentication and identity: the credentials read and
/// checked (the key is the certificate's), the identity as
/// configured, or the certificate's subject.
pub(super) fn local_auth(
    name: &str,
    c: &ConnectionSection,
) -> Result<(engine::LocalAuth, crate::proto::Identification), ConfigFileError> {
    let invalid = |what: &str| ConfigFileError::Invalid {
        connection: name.to_owned(),
        what: what.into(),
    };
    let pki = |source| ConfigFileError::Pki {
        connection: name.to_owned(),
        source,
    };
    let configured = c
        .local_id
        .as_deref()
        .map(engine::parse_identity)
        .transpose()
        .map_err(|source| ConfigFileError::Value {
            connection: name.to_owned(),
            source,
        })?;
    if c.local_auth == AuthSetting::Psk {
        if c.cert.is_some() || c.key.is_some() {
            return Err(invalid("cert and key need local_auth = \"pubkey\""));
        }
        if c.send_cert.is_some() {
            return Err(invalid("send_cert needs local_auth = \"pubkey\""));
        }
        let id = configured.ok_or_else(|| invalid("local_id is required"))?;
        return Ok((engine::LocalAuth::Psk, id));
    }
    let (Some(cert), Some(key)) = (&c.cert, &c.key) else {
        return Err(invalid("local_auth = \"pubkey\" needs cert and key"));
    };
    let chain = crate::pki::files::read_certificates(cert).map_err(pki)?;
    let key = crate::pki::files::read_private_key(key).map_err(pki)?;
    let ours = crate::pki::auth::public_key_of(&chain[0])
        .map_err(|e| invalid(&format!("{}: {e}", cert.display())))?;
    if ours != key.public_key() {
        return Err(invalid(&format!(
            "the key in {} is not the key of the certificate {}",
            c.key
                .as_ref()
                .map_or_else(String::new, |k| k.display().to_string()),
            cert.display()
        )));
    }
    let id = match configured {
        Some(id) => {
            if !crate::pki::identity::matches(&id, &chain[0]).unwrap_or(false) {
                return Err(invalid(&format!(
                    "local_id is not in the certificate {} (its subjectAltNames or subject)",
                    cert.display()
                )));
            }
            id
        }
        None => crate::pki::identity::subject_id(&chain[0])
            .map_err(|e| invalid(&format!("{}: {e}", cert.display())))?,
    };
    let chain_hashes = chain
        .iter()
        .map(|c| crate::pki::auth::ca_key_hash(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&format!("{}: {e}", cert.display())))?;
    Ok((
        engine::LocalAuth::Pubkey(std::sync::Arc::new(engine::Credentials {
            key,
            chain,
            chain_hashes,
            send_cert: c.send_cert.unwrap_or_default().into(),
        })),
        id,
    ))
}

/// The peer's authentication: for `pubkey`, the trust anchors and CRLs.
pub(super) fn remote_auth(
    name: &str,
    c: &ConnectionSection,
    setting: AuthSetting,
) -> Result<engine::RemoteAuth, ConfigFileError> {
    let invalid = |what: &str| ConfigFileError::Invalid {
        connection: name.to_owned(),
        what: what.into(),
    };
    let pki = |source| ConfigFileError::Pki {
        connection: name.to_owned(),
        source,
    };
    if setting == AuthSetting::Psk {
        if !c.cacerts.is_empty() || !c.crls.is_empty() {
            return Err(invalid("cacerts and crls need remote_auth = \"pubkey\""));
        }
        if c.send_certreq.is_some() {
            return Err(invalid("send_certreq needs remote_auth = \"pubkey\""));
        }
        return Ok(engine::RemoteAuth::Psk);
    }
    if c.cacerts.is_empty() {
        return Err(invalid("remote_auth = \"pubkey\" needs cacerts"));
    }
    let mut cas = Vec::new();
    for p in &c.cacerts {
        if p.is_dir() {
            cas.extend(crate::pki::files::read_certificate_dir(p).map_err(pki)?);
        } else {
            cas.extend(crate::pki::files::read_certificates(p).map_err(pki)?);
        }
    }
    let mut crls = Vec::new();
    for p in &c.crls {
        crls.extend(crate::pki::files::read_crls(p).map_err(pki)?);
    }
    let store = crate::pki::verify::TrustStore::new(&cas, &crls).map_err(|source| {
        ConfigFileError::Trust {
            connection: name.to_owned(),
            source,
        }
    })?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for d in cas
        .iter()
        .map(|c| c.as_ref())
        .chain(crls.iter().map(|c| c.as_ref()))
    {
        ctx.update(&(d.len() as u64).to_be_bytes());
        ctx.update(d);
    }
    let ca_hashes = cas
        .iter()
        .map(|c| crate::pki::auth::ca_key_hash(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&format!("cacerts: {e}")))?;
    Ok(engine::RemoteAuth::Pubkey(std::sync::Arc::new(
        engine::Trust {
            store,
            ca_hashes,
            send_certreq: c.send_certreq.unwrap_or(true),
            digest: ctx.finish().as_ref().to_vec(),
        },
    )))
}
