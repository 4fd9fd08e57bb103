//! What the certificate interop tests against charon share (`mod` it
//! into a test binary with `#[path]`, beside support/interop.rs as
//! `interop`): their PKI, charon's credentials and `auth = pubkey`
//! connection, the agent's `pubkey` configuration, and an engine of the
//! agent's library driven over UDP in a namespace, for what the agent
//! binary must never do (sign with a key that is not its certificate's,
//! which its configuration loader refuses).
#![allow(dead_code)]

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use mobike_agent::{
    config_file::FileConfig,
    engine::{Command, Credentials, DeleteReason, Endpoint, Event, LocalAuth},
};
use system_tests::{
    certs::{CA_EXT, EXPIRED, Pki, Validity},
    netns::Netns,
};

use crate::interop::{Interop, PSK, SUITE, agent_conf};

/// The PKI of the certificate tests: for the agent `a` (P-256), `arsa` (RSA-3072),
/// `aold` (P-256, expired), `aoth` (P-256, from the other CA), all for
/// a.test; for charon `b` (RSA-3072), `bec` (P-256), `bold` (RSA-3072,
/// expired), all for b.test, and `bx` (P-256, c.test only). `other.pem`
/// is a CA nobody's certificate but `aoth`'s comes from.
pub fn make_pki() -> Pki {
    let pki = Pki::new();
    let ku = "digitalSignature";
    pki.end_entity("a", "ec", "DNS:a.test", ku);
    pki.end_entity("arsa", "rsa", "DNS:a.test", ku);
    pki.end_entity_by("aold", "ec", "DNS:a.test", ku, "int", EXPIRED);
    pki.end_entity("b", "rsa", "DNS:b.test", ku);
    pki.end_entity("bec", "ec", "DNS:b.test", ku);
    pki.end_entity_by("bold", "rsa", "DNS:b.test", ku, "int", EXPIRED);
    pki.end_entity("bx", "ec", "DNS:c.test", ku);
    pki.end_entity("a521", "ec521", "DNS:a.test", ku);
    pki.end_entity("b521", "ec521", "DNS:b.test", ku);
    pki.key("other", "ec");
    pki.cert(
        "other",
        "/C=CH/O=elsewhere/CN=Other CA",
        None,
        CA_EXT,
        "3650",
    );
    pki.end_entity_by("aoth", "ec", "DNS:a.test", ku, "other", Validity::Days(365));
    pki
}

/// Gives charon its certificates and keys (x509/, private/) and the root
/// and intermediate as its CAs (x509ca/).
pub fn install_charon_credentials(t: &Interop, pki: &Pki) {
    let b = t.charon_dir();
    let mut files = vec![
        ("root.pem".to_owned(), "x509ca/root.pem".to_owned()),
        ("int.pem".to_owned(), "x509ca/int.pem".to_owned()),
    ];
    for name in ["b", "bec", "bold", "bx", "b521"] {
        files.push((format!("{name}.pem"), format!("x509/{name}.pem")));
        files.push((format!("{name}.key"), format!("private/{name}.key")));
    }
    for (from, to) in files {
        let dst = b.join(to);
        std::fs::create_dir_all(dst.parent().expect("a directory")).expect("charon dir");
        std::fs::copy(pki.path(&from), dst).expect("copy to charon");
    }
}

/// charon as b.test with the certificate `cert` (in x509/), the agent
/// must be a.test with a certificate; `remote_addrs` set when charon is
/// to initiate.
pub fn charon_pubkey_conf(cert: &str, remote_addrs: &str) -> String {
    charon_pubkey_conf_as(cert, "b.test", remote_addrs)
}

/// [`charon_pubkey_conf`] with charon's identity `id`.
pub fn charon_pubkey_conf_as(cert: &str, id: &str, remote_addrs: &str) -> String {
    let remote = if remote_addrs.is_empty() {
        String::new()
    } else {
        format!("remote_addrs = {remote_addrs}")
    };
    format!(
        "connections {{ c {{ version = 2
  {remote}
  proposals = {SUITE}
  mobike = yes
  encap = yes
  local {{ auth = pubkey
          certs = {cert}.pem
          id = {id} }}
  remote {{ auth = pubkey
           id = a.test }}
  children {{ net {{ local_ts = 10.2.0.0/24
                   remote_ts = 10.1.0.0/24
                   esp_proposals = aes256gcm16 }} }} }} }}
"
    )
}

/// The agent's `pubkey` lines: certificate `cert` (with the intermediate
/// when `int`), key `key`, trusting the CA file `ca`.
pub fn agent_auth(pki: &Pki, cert: &str, key: &str, ca: &str) -> String {
    let cert = if cert == "aoth" {
        pki.path("aoth.pem")
    } else {
        pki.chain(cert)
    };
    format!(
        "local_auth = \"pubkey\"\ncert = {:?}\nkey = {:?}\ncacerts = [{:?}]",
        cert.display().to_string(),
        pki.path(&format!("{key}.key")).display().to_string(),
        pki.path(ca).display().to_string(),
    )
}

/// The agent's configuration for `start` ("initiate" or "listen") with
/// the certificate `cert`, the key `key`, trusting `ca`.
pub fn agent_cert_conf(pki: &Pki, start: &str, cert: &str, key: &str, ca: &str) -> String {
    agent_conf(
        start,
        SUITE,
        "aes256gcm16",
        PSK,
        &agent_auth(pki, cert, key, ca),
        "",
    )
}

/// Whether a line of `log` has all of `parts`, in any order.
pub fn has_line_with_all(log: &str, parts: &[&str]) -> bool {
    log.lines().any(|l| parts.iter().all(|p| l.contains(p)))
}

/// An engine of the agent's library for `conf` (an agent configuration of
/// connection `c`), its private key replaced by the one in `key`: the
/// signer whose AUTH is not made with its certificate's key.
pub fn engine_with_key(conf: &str, key: &std::path::Path) -> Endpoint {
    let mut cfg = FileConfig::parse(conf)
        .and_then(|f| f.to_agent_config())
        .unwrap_or_else(|e| panic!("engine config: {e}"));
    let other = mobike_agent::pki::files::read_private_key(key).expect("the other key");
    let conn = &mut cfg.endpoint.connections[0];
    let LocalAuth::Pubkey(cred) = &conn.local_auth else {
        panic!("no certificate configured");
    };
    conn.local_auth = LocalAuth::Pubkey(Arc::new(Credentials {
        key: other,
        chain: cred.chain.clone(),
        chain_hashes: cred.chain_hashes.clone(),
        send_cert: cred.send_cert,
    }));
    Endpoint::new(cfg.endpoint).expect("endpoint")
}

/// Runs `ep` in `ns` on UDP ports 500 and 4500 of `addr` (initiating
/// connection `c` first when `initiate`) until it reports its IKE SA
/// deleted, or `secs` pass: the reason, if it was deleted.
pub fn drive(
    ns: &Netns,
    addr: &str,
    mut ep: Endpoint,
    initiate: bool,
    secs: u64,
) -> Option<DeleteReason> {
    let ip: IpAddr = addr.parse().expect("address");
    ns.enter(move || {
        let socks: Vec<(SocketAddr, UdpSocket)> = [500, 4500]
            .into_iter()
            .map(|port| {
                let local = SocketAddr::new(ip, port);
                let s = UdpSocket::bind(local).expect("bind the engine's socket");
                s.set_nonblocking(true).expect("nonblocking");
                (local, s)
            })
            .collect();
        let start = Instant::now();
        if initiate {
            ep.handle_command(
                start,
                Command::Initiate {
                    connection: "c".into(),
                    local: None,
                },
            )
            .expect("initiate");
        }
        let mut buf = vec![0; 65_536];
        while start.elapsed() < Duration::from_secs(secs) {
            let now = Instant::now();
            if ep.poll_timeout().is_some_and(|t| t <= now) {
                ep.handle_timeout(now);
            }
            while ep.poll_kernel_action_before_send().is_some() {}
            while let Some(t) = ep.poll_transmit() {
                if let Some((_, s)) = socks.iter().find(|(l, _)| l.port() == t.local.port()) {
                    let _ = s.send_to(&t.payload, t.remote);
                }
            }
            while ep.poll_kernel_action().is_some() {}
            while let Some(ev) = ep.poll_event() {
                if let Event::IkeSaDeleted { reason, .. } = ev {
                    return Some(reason);
                }
            }
            let mut idle = true;
            for (local, s) in &socks {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    ep.handle_datagram(Instant::now(), *local, from, &buf[..n]);
                    idle = false;
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        None
    })
}
