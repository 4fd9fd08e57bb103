//! Whether an IKE identity (RFC 7296 §3.5) is one a certificate vouches
//! for, as strongSwan decides it: an FQDN, email address or IP address
//! must be among the certificate's subjectAltNames (dNSName, rfc822Name,
//! iPAddress; names compared without regard to ASCII case), a
//! Distinguished Name must be the certificate's subject. Our own identity
//! defaults to our certificate's subject ([`subject_id`]). [`describe`]
//! writes an identity for a log line as strongSwan prints it.

use x509_parser::{
    extensions::GeneralName,
    prelude::{FromDer as _, X509Certificate},
    x509::X509Name,
};

use crate::proto::{IdType, Identification};

/// Why a certificate could not be read for the identity check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate cannot be read: {0}")]
pub struct IdentityError(String);

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, IdentityError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| IdentityError(e.to_string()))
}

/// The ID_DER_ASN1_DN identity of a certificate's subject.
pub fn subject_id(cert: &[u8]) -> Result<Identification, IdentityError> {
    let c = parse(cert)?;
    Ok(Identification {
        ty: IdType::ID_DER_ASN1_DN,
        data: c.subject().as_raw().to_vec(),
    })
}

/// An identity for a log line: an FQDN or email address as its text (a
/// control character escaped: the peer chose it), an IP address as the
/// address, a DN as strongSwan prints it ("C=CH, O=...,
/// CN=..."), anything else (or a DN that cannot be read) as its type and
/// octets in hex.
pub fn describe(id: &Identification) -> String {
    let hex = || {
        let octets: String = id.data.iter().map(|b| format!("{b:02x}")).collect();
        format!("{} {octets}", id.ty)
    };
    match id.ty {
        IdType::ID_FQDN | IdType::ID_RFC822_ADDR => {
            String::from_utf8_lossy(&id.data).escape_debug().to_string()
        }
        IdType::ID_IPV4_ADDR => <[u8; 4]>::try_from(id.data.as_slice())
            .map(|a| std::net::Ipv4Addr::from(a).to_string())
            .unwrap_or_else(|_| hex()),
        IdType::ID_IPV6_ADDR => <[u8; 16]>::try_from(id.data.as_slice())
            .map(|a| std::net::Ipv6Addr::from(a).to_string())
            .unwrap_or_else(|_| hex()),
        IdType::ID_DER_ASN1_DN => X509Name::from_der(&id.data)
            .map(|(_, n)| n.to_string())
            .unwrap_or_else(|_| hex()),
        _ => hex(),
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// Whether `cert` vouches for `id`.
pub fn matches(id: &Identification, cert: &[u8]) -> Result<bool, IdentityError> {
    let c = parse(cert)?;
    if id.ty == IdType::ID_DER_ASN1_DN {
        if c.subject().as_raw() == id.data.as_slice() {
            return Ok(true);
        }
        // The same name encoded another way (string types): compare the
        // names as strongSwan prints them.
        return Ok(X509Name::from_der(&id.data)
            .is_ok_and(|(_, n)| n.to_string() == c.subject().to_string()));
    }
    let sans = match c.subject_alternative_name() {
        Ok(Some(ext)) => ext.value.general_names.clone(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(IdentityError(e.to_string())),
    };
    let text = std::str::from_utf8(&id.data).ok();
    Ok(sans.iter().any(|g| match (id.ty, g) {
        (IdType::ID_FQDN, GeneralName::DNSName(n)) => text.is_some_and(|t| same_name(t, n)),
        (IdType::ID_RFC822_ADDR, GeneralName::RFC822Name(n)) => {
            text.is_some_and(|t| t.eq_ignore_ascii_case(n))
        }
        (IdType::ID_IPV4_ADDR | IdType::ID_IPV6_ADDR, GeneralName::IPAddress(a)) => {
            *a == id.data.as_slice()
        }
        _ => false,
    }))
}
