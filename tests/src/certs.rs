//! A small PKI made with openssl for the certificate tests: a root CA
//! (ECDSA P-256), an intermediate CA (RSA-3072) and end entities signed by
//! it, `NAME.key` (PKCS#8, mode 600) and `NAME.pem` in one temporary
//! directory, removed when the [`Pki`] is dropped.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

/// Extensions of a CA certificate.
pub const CA_EXT: &str =
    "basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n";

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

    /// `NAME.key` of `kind` ("rsa": RSA-3072, "ec": P-256, "ed": Ed25519).
    pub fn key(&self, name: &str, kind: &str) {
        let key = format!("{name}.key");
        let d = self.dir.path();
        match kind {
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
        self.key(name, kind);
        let ext = format!("subjectAltName={san}\nkeyUsage=critical,{ku}\n");
        self.cert(
            name,
            &format!("/C=CH/O=mobike test/CN={name}.test"),
            Some("int"),
            &ext,
            "365",
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
