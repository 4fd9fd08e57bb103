//! A small PKI made with openssl for the certificate tests: a root CA
//! (ECDSA P-256), an intermediate CA (RSA-3072) and end entities signed by
//! it (or by another CA, and valid for given days or between given dates,
//! past ones for expired certificates), `NAME.key` (PKCS#8, mode 600) and
//! `NAME.pem` in one temporary directory, removed when the [`Pki`] is
//! dropped.
//!
//! Dates in the past need `openssl ca` (`openssl x509 -req` of OpenSSL 3.0
//! only counts days from now), with a throwaway database in the directory.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

/// Extensions of a CA certificate.
pub const CA_EXT: &str =
    "basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n";

/// When an end entity's certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From now on for this many days.
    Days(u32),
    /// From `not_before` to `not_after`, each `YYYYMMDDHHMMSSZ` (UTC).
    Between {
        not_before: &'static str,
        not_after: &'static str,
    },
}

/// A validity that ended years ago (2020 to 2021).
pub const EXPIRED: Validity = Validity::Between {
    not_before: "20200101000000Z",
    not_after: "20210101000000Z",
};

/// `openssl ca`'s configuration for [`Validity::Between`]: any subject,
/// its order kept (`-preserveDN`), the extensions from `-extfile` only.
const CA_CNF: &str = "[ ca ]
default_ca = dated
[ dated ]
database = ca-index.txt
new_certs_dir = ca-issued
serial = ca-serial.txt
policy = any
default_md = sha256
unique_subject = no
email_in_dn = no
[ any ]
countryName = optional
organizationName = optional
commonName = supplied
";

/// The directory of the certificates and keys.
#[derive(Debug)]
pub struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl) runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A root CA `root` and an intermediate `int` under it.
    pub fn new() -> Self {
        let p = Pki {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        p.key("root", "ec");
        p.cert(
            "root",
            "/C=CH/O=mobike test/CN=Root CA",
            None,
            CA_EXT,
            "3650",
        );
        p.key("int", "rsa");
        p.cert(
            "int",
            "/C=CH/O=mobike test/CN=Intermediate CA",
            Some("root"),
            CA_EXT,
            "3650",
        );
        p
    }

    /// `NAME.key` of `kind` ("rsa": RSA-3072, "ec": P-256, "ec521": P-521,
    /// "ed": Ed25519).
    pub fn key(&self, name: &str, kind: &str) {
        let key = format!("{name}.key");
        let d = self.dir.path();
        match kind {
            "ec521" => openssl(
                d,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-521",
                    "-out",
                    &key,
                ],
            ),
            "rsa" => openssl(
                d,
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:3072",
                    "-out",
                    &key,
                ],
            ),
            "ec" => openssl(
                d,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    &key,
                ],
            ),
            "ed" => openssl(d, &["genpkey", "-algorithm", "ED25519", "-out", &key]),
            other => panic!("key kind {other}"),
        }
        std::fs::set_permissions(d.join(&key), std::fs::Permissions::from_mode(0o600))
            .expect("chmod key");
    }

    /// `NAME.pem` for `NAME.key`, signed by `ca` (self-signed if None),
    /// with the extensions `ext` (openssl's extfile syntax), valid `days`.
    pub fn cert(&self, name: &str, subject: &str, ca: Option<&str>, ext: &str, days: &str) {
        let d = self.dir.path();
        let (key, csr, pem, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(d.join(&extfile), ext).expect("extfile");
        openssl(
            d,
            &["req", "-new", "-key", &key, "-subj", subject, "-out", &csr],
        );
        match ca {
            None => openssl(
                d,
                &[
                    "x509", "-req", "-in", &csr, "-key", &key, "-days", days, "-extfile", &extfile,
                    "-out", &pem,
                ],
            ),
            Some(ca) => openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-days",
                    days,
                    "-extfile",
                    &extfile,
                    "-out",
                    &pem,
                ],
            ),
        }
    }

    /// An end entity `NAME` with a key of `kind`, signed by the
    /// intermediate, subject CN=NAME.test, the subjectAltNames `san` and
    /// the key usage `ku`, valid a year.
    pub fn end_entity(&self, name: &str, kind: &str, san: &str, ku: &str) {
        self.end_entity_by(name, kind, san, ku, "int", Validity::Days(365));
    }

    /// An end entity as [`Pki::end_entity`], signed by the CA `ca`
    /// (`ca.pem`, `ca.key`), valid as `validity` says.
    pub fn end_entity_by(
        &self,
        name: &str,
        kind: &str,
        san: &str,
        ku: &str,
        ca: &str,
        validity: Validity,
    ) {
        self.key(name, kind);
        let ext = format!("subjectAltName={san}\nkeyUsage=critical,{ku}\n");
        let subject = format!("/C=CH/O=mobike test/CN={name}.test");
        match validity {
            Validity::Days(days) => {
                self.cert(name, &subject, Some(ca), &ext, &days.to_string());
            }
            Validity::Between {
                not_before,
                not_after,
            } => self.cert_between(name, &subject, ca, &ext, not_before, not_after),
        }
    }

    /// `NAME.pem` for `NAME.key`, signed by `ca`, valid from `not_before`
    /// to `not_after` (`YYYYMMDDHHMMSSZ`), by `openssl ca`.
    fn cert_between(
        &self,
        name: &str,
        subject: &str,
        ca: &str,
        ext: &str,
        not_before: &str,
        not_after: &str,
    ) {
        let d = self.dir.path();
        if !d.join("ca.cnf").exists() {
            std::fs::write(d.join("ca.cnf"), CA_CNF).expect("ca.cnf");
            std::fs::write(d.join("ca-index.txt"), "").expect("ca-index.txt");
            std::fs::write(d.join("ca-serial.txt"), "1000\n").expect("ca-serial.txt");
            std::fs::create_dir(d.join("ca-issued")).expect("ca-issued");
        }
        let (key, csr, pem, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(d.join(&extfile), ext).expect("extfile");
        openssl(
            d,
            &["req", "-new", "-key", &key, "-subj", subject, "-out", &csr],
        );
        openssl(
            d,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-preserveDN",
                "-notext",
                "-startdate",
                not_before,
                "-enddate",
                not_after,
                "-cert",
                &format!("{ca}.pem"),
                "-keyfile",
                &format!("{ca}.key"),
                "-in",
                &csr,
                "-extfile",
                &extfile,
                "-out",
                &pem,
            ],
        );
    }

    /// `NAME-chain.pem`: the certificate, then the intermediate.
    pub fn chain(&self, name: &str) -> PathBuf {
        let out = self.path(&format!("{name}-chain.pem"));
        if !out.exists() {
            let mut text = std::fs::read(self.path(&format!("{name}.pem"))).expect("cert");
            text.extend(std::fs::read(self.path("int.pem")).expect("intermediate"));
            std::fs::write(&out, text).expect("chain");
        }
        out
    }

    /// Runs openssl in the directory.
    pub fn openssl(&self, args: &[&str]) {
        openssl(self.dir.path(), args);
    }

    /// A file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
