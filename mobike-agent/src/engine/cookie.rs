//! The responder's IKE_SA_INIT cookies (RFC 7296 §2.6) and the secret they
//! are made with. §2.6: "the responder should change the value of
//! <secret> frequently", and "the responder should remember the previous
//! version of <secret> for a while": the secret rotates every
//! `cookie_rotation` (driven by the time of the requests, sans-IO), and a
//! cookie made with the secret before is accepted until the next rotation.
//! The first octet of a cookie names the secret's version.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use tracing::{debug, warn};

use super::Entropy;
use crate::crypto;

/// The current cookie secret and the one before.
#[derive(Debug, Clone, Default)]
pub(super) struct CookieSecrets {
    current: [u8; 32],
    /// Version octet of `current` (§2.6 `<VersionIDofSecret>`).
    version: u8,
    /// The secret before, still accepted.
    previous: Option<[u8; 32]>,
    /// Since when `current` is in use (set by the first request).
    since: Option<Instant>,
}

impl CookieSecrets {
    pub(super) fn new(secret: [u8; 32]) -> Self {
        CookieSecrets {
            current: secret,
            version: 1,
            previous: None,
            since: None,
        }
    }

    /// Replaces the secret if it is `period` old; the replaced one is
    /// accepted until the next replacement. A secret that went unreplaced
    /// for two periods (no requests) leaves no previous one.
    pub(super) fn rotate_if_due(
        &mut self,
        now: Instant,
        period: Duration,
        entropy: &mut dyn Entropy,
    ) {
        let Some(since) = self.since else {
            self.since = Some(now);
            return;
        };
        let age = now.saturating_duration_since(since);
        if age < period {
            return;
        }
        let mut next = [0u8; 32];
        if !entropy.fill(&mut next) {
            warn!("no randomness for a new cookie secret; keeping the current one");
            return;
        }
        self.previous = (age < period * 2).then_some(self.current);
        self.current = next;
        self.version = self.version.wrapping_add(1);
        self.since = Some(now);
        debug!(version = self.version, "cookie secret rotated");
    }

    /// The cookie for an initiator (§2.6): `<VersionIDofSecret> |
    /// Hash(Ni | IPi | SPIi | <secret>)`.
    pub(super) fn make(&self, ni: &[u8], remote: SocketAddr, spi_i: u64) -> Vec<u8> {
        cookie(self.version, &self.current, ni, remote.ip(), spi_i)
    }

    /// Whether `got` is a cookie we made, with the current or the previous
    /// secret, for these values.
    pub(super) fn verify(&self, got: &[u8], ni: &[u8], remote: SocketAddr, spi_i: u64) -> bool {
        let Some(&v) = got.first() else {
            return false;
        };
        let secret = if v == self.version {
            &self.current
        } else if v == self.version.wrapping_sub(1)
            && let Some(p) = &self.previous
        {
            p
        } else {
            return false;
        };
        crypto::verify_mac(&cookie(v, secret, ni, remote.ip(), spi_i), got)
    }
}

fn cookie(version: u8, secret: &[u8; 32], ni: &[u8], ip: IpAddr, spi_i: u64) -> Vec<u8> {
    let ip = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mut c = vec![version];
    c.extend_from_slice(&crypto::sha256(&[ni, &ip, &spi_i.to_be_bytes(), secret]));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts up: each fill a new secret.
    #[derive(Debug, Default)]
    struct Counter(u8);

    impl Entropy for Counter {
        fn fill(&mut self, buf: &mut [u8]) -> bool {
            self.0 += 1;
            buf.fill(self.0);
            true
        }
    }

    const PERIOD: Duration = Duration::from_secs(120);

    fn peer() -> SocketAddr {
        "192.0.2.7:500".parse().unwrap()
    }

    #[test]
    fn a_cookie_of_the_previous_secret_is_good_until_the_next_rotation() {
        let mut e = Counter::default();
        let t0 = Instant::now();
        let mut c = CookieSecrets::new([9; 32]);
        c.rotate_if_due(t0, PERIOD, &mut e);
        let old = c.make(b"nonce", peer(), 7);
        assert!(c.verify(&old, b"nonce", peer(), 7));
        c.rotate_if_due(t0 + PERIOD, PERIOD, &mut e);
        let new = c.make(b"nonce", peer(), 7);
        assert_ne!(old, new, "the secret changed");
        assert!(
            c.verify(&old, b"nonce", peer(), 7),
            "previous secret accepted"
        );
        assert!(c.verify(&new, b"nonce", peer(), 7));
        c.rotate_if_due(t0 + PERIOD * 2, PERIOD, &mut e);
        assert!(!c.verify(&old, b"nonce", peer(), 7), "two secrets back");
        assert!(c.verify(&new, b"nonce", peer(), 7));
    }

    #[test]
    fn no_rotation_before_the_period_and_no_stale_previous_after_a_quiet_spell() {
        let mut e = Counter::default();
        let t0 = Instant::now();
        let mut c = CookieSecrets::new([9; 32]);
        c.rotate_if_due(t0, PERIOD, &mut e);
        let first = c.make(b"n", peer(), 1);
        c.rotate_if_due(t0 + PERIOD / 2, PERIOD, &mut e);
        assert_eq!(c.make(b"n", peer(), 1), first);
        // Nothing for three periods: the old secret is not kept.
        c.rotate_if_due(t0 + PERIOD * 3, PERIOD, &mut e);
        assert!(!c.verify(&first, b"n", peer(), 1));
    }

    #[test]
    fn a_cookie_is_bound_to_nonce_address_and_spi() {
        let c = CookieSecrets::new([3; 32]);
        let k = c.make(b"nonce", peer(), 7);
        assert!(!c.verify(&k, b"other", peer(), 7));
        assert!(!c.verify(&k, b"nonce", "192.0.2.8:500".parse().unwrap(), 7));
        assert!(!c.verify(&k, b"nonce", peer(), 8));
        assert!(!c.verify(&[], b"nonce", peer(), 7));
    }
}
