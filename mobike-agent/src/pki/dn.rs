//! Distinguished Names written as strongSwan users write them in an
//! identity (`remote_id = "C=CH, O=strongSwan, CN=moon.strongswan.org"`),
//! encoded as the DER of an X.501 Name for an ID_DER_ASN1_DN identity
//! (RFC 7296 §3.5).
//!
//! The form is strongSwan's, not RFC 4514's: the relative distinguished
//! names in the order they are encoded (C first above; RFC 4514 writes the
//! last first), separated by `,` (spaces around it ignored) or, in the
//! OpenSSL form, each introduced by `/` (`/C=CH/O=strongSwan/CN=moon`); a
//! `\` takes the next character as it is (`O=Acme\, Inc.`). The attribute
//! names are strongSwan's (note `SN` is serialNumber and `S` the surname);
//! a value is a PrintableString where its characters allow, else a
//! UTF8String, as strongSwan encodes it. One attribute per RDN.
//!
//! The encoding is x509-cert's (RustCrypto); only the text form, which no
//! crate reads in strongSwan's order and names, is read here.

use x509_cert::{
    attr::AttributeTypeAndValue,
    der::{
        self, Encode as _,
        asn1::{Any, ObjectIdentifier, PrintableStringRef, SetOfVec, Utf8StringRef},
    },
    name::{RdnSequence, RelativeDistinguishedName},
};

/// What is wrong with a Distinguished Name's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnError {
    #[error("`{0}` is not ATTRIBUTE=value")]
    NotAnAttribute(String),
    #[error(
        "unknown attribute `{0}` (C, ST, L, O, OU, CN, SN, S, G, I, T, D, N, DC, UID, E, dnQualifier, unstructuredName)"
    )]
    UnknownAttribute(String),
    #[error("`{0}` has an empty value")]
    EmptyValue(String),
    #[error("a Distinguished Name ends in a lone `\\`")]
    TrailingEscape,
    #[error("cannot be encoded: {0}")]
    Encoding(String),
}

/// strongSwan's attribute names (libstrongswan's identification.c x501rdns)
/// and their OIDs.
const ATTRIBUTES: &[(&str, &str)] = &[
    ("C", "2.5.4.6"),
    ("ST", "2.5.4.8"),
    ("L", "2.5.4.7"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("CN", "2.5.4.3"),
    ("SN", "2.5.4.5"),
    ("serialNumber", "2.5.4.5"),
    ("S", "2.5.4.4"),
    ("G", "2.5.4.42"),
    ("I", "2.5.4.43"),
    ("T", "2.5.4.12"),
    ("D", "2.5.4.13"),
    ("N", "2.5.4.41"),
    ("dnQualifier", "2.5.4.46"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("E", "1.2.840.113549.1.9.1"),
    ("Email", "1.2.840.113549.1.9.1"),
    ("emailAddress", "1.2.840.113549.1.9.1"),
    ("UN", "1.2.840.113549.1.9.2"),
    ("unstructuredName", "1.2.840.113549.1.9.2"),
];

fn oid_of(name: &str) -> Result<ObjectIdentifier, DnError> {
    let (_, oid) = ATTRIBUTES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .ok_or_else(|| DnError::UnknownAttribute(name.to_owned()))?;
    ObjectIdentifier::new(oid).map_err(|e| DnError::Encoding(e.to_string()))
}

/// Whether `text` has the form of a Distinguished Name (an `=` in it), as
/// strongSwan tells a DN from other identities.
pub fn looks_like_dn(text: &str) -> bool {
    text.contains('=')
}

/// The `ATTRIBUTE=value` parts of `text`, unescaped.
fn parts(text: &str) -> Result<Vec<String>, DnError> {
    let text = text.trim();
    let (sep, body) = match text.strip_prefix('/') {
        Some(rest) => ('/', rest),
        None => (',', text),
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.push(chars.next().ok_or(DnError::TrailingEscape)?),
            c if c == sep => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    Ok(out)
}

/// PrintableString's characters (X.680 §41.4).
fn printable(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c))
}

/// The DER of the Name `text` writes.
pub fn parse(text: &str) -> Result<Vec<u8>, DnError> {
    let enc = |e: der::Error| DnError::Encoding(e.to_string());
    let mut rdns = Vec::new();
    for part in parts(text)? {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| DnError::NotAnAttribute(part.trim().to_owned()))?;
        let (name, value) = (name.trim(), value.trim());
        let oid = oid_of(name)?;
        if value.is_empty() {
            return Err(DnError::EmptyValue(name.to_owned()));
        }
        let value = if printable(value) {
            Any::encode_from(&PrintableStringRef::new(value).map_err(enc)?)
        } else {
            Any::encode_from(&Utf8StringRef::new(value).map_err(enc)?)
        }
        .map_err(enc)?;
        let set = SetOfVec::try_from(vec![AttributeTypeAndValue { oid, value }]).map_err(enc)?;
        rdns.push(RelativeDistinguishedName(set));
    }
    RdnSequence(rdns).to_der().map_err(enc)
}

#[cfg(test)]
mod tests {
    use x509_parser::{prelude::FromDer as _, x509::X509Name};

    use super::*;

    fn printed(der: &[u8]) -> String {
        X509Name::from_der(der).unwrap().1.to_string()
    }

    #[test]
    fn strongswans_forms_give_the_name_in_their_order() {
        let comma = parse("C=CH, O=strongSwan Project, CN=moon.strongswan.org").unwrap();
        assert_eq!(
            printed(&comma),
            "C=CH, O=strongSwan Project, CN=moon.strongswan.org"
        );
        let slash = parse("/C=CH/O=strongSwan Project/CN=moon.strongswan.org").unwrap();
        assert_eq!(slash, comma);
        // Spaces around separators and names are not part of the name.
        assert_eq!(
            parse(" C = CH ,O=strongSwan Project,  CN=moon.strongswan.org ").unwrap(),
            comma
        );
    }

    #[test]
    fn escapes_names_and_string_types() {
        let der = parse(r"O=Acme\, Inc., E=ops@example.org, SN=42, CN=Zürich").unwrap();
        let (_, name) = X509Name::from_der(&der).unwrap();
        let attrs: Vec<_> = name.iter_attributes().collect();
        assert_eq!(attrs.len(), 4);
        assert_eq!(attrs[0].as_str().unwrap(), "Acme, Inc.");
        assert_eq!(attrs[1].attr_type().to_id_string(), "1.2.840.113549.1.9.1");
        assert_eq!(attrs[2].attr_type().to_id_string(), "2.5.4.5");
        // PrintableString where it can be, UTF8String otherwise.
        assert_eq!(attrs[0].attr_value().tag().0, 19, "PrintableString");
        assert_eq!(attrs[1].attr_value().tag().0, 12, "UTF8String");
        assert_eq!(attrs[3].as_str().unwrap(), "Zürich");
    }

    #[test]
    fn bad_names_are_named() {
        assert_eq!(
            parse("C=CH, XX=1"),
            Err(DnError::UnknownAttribute("XX".into()))
        );
        assert_eq!(
            parse("C=CH, moon"),
            Err(DnError::NotAnAttribute("moon".into()))
        );
        assert_eq!(parse("C=CH, CN="), Err(DnError::EmptyValue("CN".into())));
        assert_eq!(parse(r"CN=moon\"), Err(DnError::TrailingEscape));
    }
}
