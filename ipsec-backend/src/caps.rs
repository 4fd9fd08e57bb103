//! Capability probe: what the running kernel's XFRM can do (XFRM netlink,
//! ALLOCSPI, ESP, each required algorithm, BEET, ESP-in-UDP, MIGRATE).
//!
//! Every probe runs in a private, throw-away network namespace, so the
//! host's SAs and policies are never touched; it needs CAP_SYS_ADMIN. The
//! probe reports; it does not load modules or change sysctls.

use std::net::{IpAddr, Ipv4Addr};

use errchain::chain;
use serde::Serialize;

use crate::error::Error;
use crate::handle::{PolicyKey, SaKey, XfrmHandle};
use crate::types::{
    Crypto, Dir, Encap, MigrateEntry, MigrateSpec, Mode, PolicySpec, Prefix, Proto, SaSpec,
    Template, TrafficSelector,
};

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// What was probed.
    pub name: String,
    /// Whether it works.
    pub ok: bool,
    /// The kernel's answer when it does not (errno text and ext-ack).
    pub detail: Option<String>,
}

/// What the kernel can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// XFRM netlink answers (xfrm_user).
    pub xfrm_netlink: bool,
    /// ESP SAs can be created (esp4/esp6).
    pub esp: bool,
    /// XFRM_MSG_MIGRATE works (CONFIG_XFRM_MIGRATE).
    pub migrate: bool,
    /// BEET mode ESP SAs can be created.
    pub beet: bool,
    /// ESP-in-UDP SAs can be created.
    pub esp_in_udp: bool,
    /// Each probe in order.
    pub probes: Vec<Probe>,
}

impl Capabilities {
    /// A few lines for people.
    pub fn summary(&self) -> String {
        let yn = |b: bool| if b { "yes" } else { "NO" };
        let mut s = format!(
            "kernel {}\nXFRM netlink: {}\nMIGRATE: {}\nESP: {}\nBEET: {}\nESP-in-UDP: {}\n",
            self.kernel,
            yn(self.xfrm_netlink),
            yn(self.migrate),
            yn(self.esp),
            yn(self.beet),
            yn(self.esp_in_udp)
        );
        if self.xfrm_netlink && !self.esp {
            s.push_str(
                "note: this kernel has XFRM but cannot create ESP SAs (no esp4/esp6 or \
                 missing crypto): policies, ALLOCSPI and policy MIGRATE work, ESP traffic does not\n",
            );
        }
        for p in &self.probes {
            s.push_str(&format!(
                "  {:<34} {}{}\n",
                p.name,
                if p.ok { "ok" } else { "no" },
                p.detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ));
        }
        s
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn sa(spi: u32, mode: Mode, crypto: Crypto, encap: Option<Encap>) -> SaSpec {
    SaSpec {
        src: v4(192, 0, 2, 1),
        dst: v4(192, 0, 2, 2),
        spi,
        proto: Proto::Esp,
        mode,
        reqid: 1,
        crypto,
        selector: None,
        selector_af_unspec: false,
        encap,
        mark: None,
        if_id: None,
        replay_window: 32,
        esn: false,
        lifetime: None,
    }
}

async fn probe_sa(h: &XfrmHandle, name: &str, s: SaSpec, out: &mut Vec<Probe>) -> bool {
    let r = h.state().add(&s).await;
    let ok = r.is_ok();
    if ok {
        let _ = h.state().delete(&SaKey::of(&s)).await;
    }
    out.push(Probe {
        name: name.into(),
        ok,
        detail: r.err().and_then(|e| e.kernel().map(|k| k.to_string())),
    });
    ok
}

async fn probe_inner() -> Result<Capabilities, Error> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let h = XfrmHandle::new()?;
    let mut probes = Vec::new();
    let netlink = h.policy().dump().await;
    probes.push(Probe {
        name: "XFRM netlink (policy dump)".into(),
        ok: netlink.is_ok(),
        detail: netlink.as_ref().err().map(|e| chain(e)),
    });
    let spi = h
        .state()
        .alloc_spi(
            v4(192, 0, 2, 9),
            v4(192, 0, 2, 8),
            Proto::Esp,
            Mode::Tunnel,
            9,
            0x100,
            0x1ff,
        )
        .await;
    probes.push(Probe {
        name: "ALLOCSPI".into(),
        ok: spi.is_ok(),
        detail: spi.as_ref().err().map(|e| chain(e)),
    });
    let null = Crypto::EncAuth {
        enc: "ecb(cipher_null)".into(),
        enc_key: vec![],
        auth: "digest_null".into(),
        auth_key: vec![],
        trunc_bits: 0,
    };
    let esp = probe_sa(
        &h,
        "ESP SA (null cipher)",
        sa(0x10, Mode::Tunnel, null.clone(), None),
        &mut probes,
    )
    .await;
    let k20 = [0x11u8; 20];
    let k36 = [0x22u8; 36];
    let algs = [
        ("ESP rfc4106(gcm(aes)) 128", Crypto::aes_gcm(&k20)),
        ("ESP rfc4106(gcm(aes)) 256", Crypto::aes_gcm(&k36)),
        (
            "ESP rfc7539esp(chacha20,poly1305)",
            Crypto::chacha20_poly1305(&k36),
        ),
        (
            "ESP cbc(aes)+hmac(sha256)/128",
            Crypto::aes_cbc_hmac_sha256(&[0x33; 16], &[0x44; 32]),
        ),
    ];
    for (i, (name, c)) in algs.into_iter().enumerate() {
        probe_sa(
            &h,
            name,
            sa(0x20 + i as u32, Mode::Tunnel, c, None),
            &mut probes,
        )
        .await;
    }
    let beet = probe_sa(
        &h,
        "ESP BEET mode",
        sa(0x30, Mode::Beet, null.clone(), None),
        &mut probes,
    )
    .await;
    let udp = probe_sa(
        &h,
        "ESP-in-UDP (espinudp 4500)",
        sa(
            0x31,
            Mode::Tunnel,
            null,
            Some(Encap {
                sport: 4500,
                dport: 4500,
            }),
        ),
        &mut probes,
    )
    .await;
    let sel = TrafficSelector::new(
        "10.1.0.0/24"
            .parse()
            .unwrap_or(Prefix::host(v4(10, 1, 0, 0))),
        "10.2.0.0/24"
            .parse()
            .unwrap_or(Prefix::host(v4(10, 2, 0, 0))),
    );
    let pol = PolicySpec {
        selector: sel,
        dir: Dir::Out,
        priority: 0,
        action: Default::default(),
        templates: vec![Template {
            src: v4(192, 0, 2, 1),
            dst: v4(192, 0, 2, 2),
            proto: Proto::Esp,
            mode: Mode::Tunnel,
            reqid: 1,
            spi: 0,
            optional: false,
        }],
        mark: None,
        if_id: None,
    };
    let mig = async {
        h.policy().add(&pol).await?;
        h.migrate(&MigrateSpec {
            selector: sel,
            dir: Dir::Out,
            entries: vec![MigrateEntry {
                old_src: v4(192, 0, 2, 1),
                old_dst: v4(192, 0, 2, 2),
                new_src: "2001:db8::1".parse().unwrap_or(v4(0, 0, 0, 0)),
                new_dst: "2001:db8::2".parse().unwrap_or(v4(0, 0, 0, 0)),
                proto: Proto::Esp,
                mode: Mode::Tunnel,
                reqid: 1,
            }],
            kmaddress: None,
            encap: None,
            if_id: None,
        })
        .await?;
        h.policy()
            .delete(&PolicyKey {
                selector: sel,
                dir: Dir::Out,
                mark: None,
                if_id: None,
            })
            .await
    }
    .await;
    probes.push(Probe {
        name: "MIGRATE (policy, v4 -> v6 outer)".into(),
        ok: mig.is_ok(),
        detail: mig.as_ref().err().map(|e| chain(e)),
    });
    Ok(Capabilities {
        kernel,
        xfrm_netlink: netlink.is_ok(),
        esp,
        migrate: mig.is_ok(),
        beet,
        esp_in_udp: udp,
        probes,
    })
}

/// Probe the running kernel in a private network namespace.
pub fn probe() -> Result<Capabilities, Error> {
    crate::netns::in_new_netns(probe_inner)?
}
