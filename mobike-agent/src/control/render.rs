//! The text `mobike-agent status` prints: a table, or one JSON object per
//! IKE SA and line. Both are rendered from the `StatusResponse` as it
//! arrives over the control socket; nothing here talks to the agent.

use std::fmt::Write as _;

use trigger_proto::mobike_v1::{PeerCertificate, Stats, StatusResponse};

/// One JSON object per IKE SA, each on its own line (CHILD_SAs nested; the
/// engine's counters, the same in each, under `stats`).
pub fn json_lines(st: &StatusResponse) -> String {
    let stats = st.stats.as_ref().map(stats_json);
    let mut out = String::new();
    for sa in &st.ike_sas {
        let children: Vec<_> = sa
            .child_sas
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "state": c.state,
                    "mode": c.mode,
                    "reqid": c.reqid,
                    "spi_in": format!("{:08x}", c.spi_in),
                    "spi_out": format!("{:08x}", c.spi_out),
                    "local_ts": c.local_ts,
                    "remote_ts": c.remote_ts,
                    "counters_known": c.counters_known,
                    "bytes_in": c.bytes_in,
                    "bytes_out": c.bytes_out,
                    "packets_in": c.packets_in,
                    "packets_out": c.packets_out,
                    "last_used_in": c.last_used_in,
                    "last_used_out": c.last_used_out,
                    "installed_at": c.installed_at,
                    "replay_errors": c.replay_errors,
                    "integrity_failures": c.integrity_failures,
                    "counters_error": (!c.counters_error.is_empty()).then_some(&c.counters_error),
                    "rekey_in": c.rekey_in_seconds,
                })
            })
            .collect();
        let v = serde_json::json!({
            "name": sa.name,
            "state": sa.state,
            "initiator": sa.initiator,
            "local": sa.local,
            "remote": sa.remote,
            "spi_i": format!("{:016x}", sa.spi_initiator),
            "spi_r": format!("{:016x}", sa.spi_responder),
            "local_behind_nat": sa.local_behind_nat,
            "remote_behind_nat": sa.remote_behind_nat,
            "mobike": sa.mobike,
            "rekey_in": sa.rekey_in_seconds,
            "virtual_ips": sa.virtual_ips,
            "dns": sa.dns,
            "peer_virtual_ips": sa.peer_virtual_ips,
            "updating_addresses": sa.updating_addresses,
            "local_addrs": sa.local_addrs,
            "peer_addrs": sa.peer_addrs,
            "remote_addrs": sa.remote_addrs,
            "mobility": sa.mobility.as_ref().map(super::render_mobility::sa_json),
            "mobility_source": st.mobility.as_ref().map(super::render_mobility::source_json),
            "local_auth": (!sa.local_auth.is_empty()).then_some(&sa.local_auth),
            "remote_auth": (!sa.remote_auth.is_empty()).then_some(&sa.remote_auth),
            "peer_cert": sa.peer_certificate.as_ref().map(|c| serde_json::json!({
                "subject": c.subject,
                "issuer": c.issuer,
                "not_after": rfc3339(c.not_after),
                "expires_in": c.expires_in_seconds,
            })),
            "return_routability": sa.return_routability.as_ref().map(|r| serde_json::json!({
                "esp_local": r.esp_local,
                "esp_remote": r.esp_remote,
                "candidates": r.candidates,
            })),
            "backend": st.backend,
            "stats": stats,
            "child_sas": children,
        });
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}

fn stats_json(s: &Stats) -> serde_json::Value {
    serde_json::json!({
        "datagrams_received": s.datagrams_received,
        "malformed": s.malformed,
        "unknown_sa": s.unknown_sa,
        "integrity_failures": s.integrity_failures,
        "unexpected": s.unexpected,
        "replayed_responses": s.replayed_responses,
        "retransmits": s.retransmits,
        "cookies_sent": s.cookies_sent,
        "keepalives_received": s.keepalives_received,
        "rekey_collisions": s.rekey_collisions,
        "ike_rekey_collisions": s.ike_rekey_collisions,
        "bad_cookie2": s.bad_cookie2,
        "update_from_responder": s.update_from_responder,
        "address_lists_refused": s.address_lists_refused,
        "return_routability_checks": s.return_routability_checks,
        "half_open_limit_drops": s.half_open_limit_drops,
        "half_open_source_drops": s.half_open_source_drops,
        "bad_nonces": s.bad_nonces,
        "init_error_notifies": s.init_error_notifies,
        "half_open": s.half_open,
    })
}

/// Unix seconds as RFC 3339 UTC, to the second ("2027-12-06T11:18:34Z").
fn rfc3339(unix: i64) -> String {
    let d = std::time::Duration::from_secs(unix.unsigned_abs());
    let t = if unix >= 0 {
        std::time::UNIX_EPOCH.checked_add(d)
    } else {
        std::time::UNIX_EPOCH.checked_sub(d)
    };
    match t {
        Some(t) => humantime::format_rfc3339_seconds(t).to_string(),
        None => format!("@{unix}"),
    }
}

/// `expires 2027-12-06T11:18:34Z (in 364 days)`, or `expired ... ago`;
/// under a day to the second.
fn expiry(c: &PeerCertificate) -> String {
    let secs = c.expires_in_seconds.unsigned_abs();
    let left = if secs >= 86_400 {
        format!("{} days", secs / 86_400)
    } else {
        humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
    };
    if c.expires_in_seconds >= 0 {
        format!("expires {} (in {left})", rfc3339(c.not_after))
    } else {
        format!("expired {} ({left} ago)", rfc3339(c.not_after))
    }
}

/// ` (3s ago)` for a use time in Unix seconds, nothing when never used.
fn ago(t: u64, now: u64) -> String {
    if t == 0 {
        String::new()
    } else {
        format!(" ({}s ago)", now.saturating_sub(t))
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

/// `, rekey in 52m10s` (to the second), nothing when there is no rekey due.
fn rekey_in(s: Option<u64>) -> String {
    s.map_or_else(String::new, |s| {
        format!(
            ", rekey in {}",
            humantime::format_duration(std::time::Duration::from_secs(s))
        )
    })
}

/// A readable table: one line per IKE SA, its CHILD_SAs indented below.
pub fn table(st: &StatusResponse) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = String::new();
    if let Some(m) = &st.mobility {
        out.push_str(&super::render_mobility::source_line(m));
    }
    if st.ike_sas.is_empty() {
        out.push_str("no IKE SAs\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<12} {:<11} {:<24} {:<24} {:<33} {:<9} MOBIKE",
        "IKE SA", "STATE", "LOCAL", "REMOTE", "SPI_I/SPI_R", "NAT"
    );
    for sa in &st.ike_sas {
        let nat = match (sa.local_behind_nat, sa.remote_behind_nat) {
            (false, false) => "-",
            (true, false) => "local",
            (false, true) => "remote",
            (true, true) => "both",
        };
        let _ = writeln!(
            out,
            "{:<12} {:<11} {:<24} {:<24} {:016x}/{:016x} {:<9} {}{}",
            sa.name,
            sa.state,
            sa.local,
            sa.remote,
            sa.spi_initiator,
            sa.spi_responder,
            nat,
            if sa.mobike { "yes" } else { "no" },
            rekey_in(sa.rekey_in_seconds)
        );
        if !sa.local_auth.is_empty() || !sa.remote_auth.is_empty() {
            let or_unknown = |s: &str| {
                if s.is_empty() {
                    "-".to_owned()
                } else {
                    s.to_owned()
                }
            };
            let _ = writeln!(
                out,
                "  auth: ours {}, the peer's {}",
                or_unknown(&sa.local_auth),
                or_unknown(&sa.remote_auth)
            );
        }
        if let Some(c) = &sa.peer_certificate {
            let _ = writeln!(
                out,
                "  peer certificate: {}, issued by {}, {}",
                c.subject,
                c.issuer,
                expiry(c)
            );
        }
        if !sa.virtual_ips.is_empty() || !sa.peer_virtual_ips.is_empty() {
            let _ = writeln!(
                out,
                "  virtual IPs: ours {}, the peer's {}{}",
                list_or_none(&sa.virtual_ips),
                list_or_none(&sa.peer_virtual_ips),
                if sa.dns.is_empty() {
                    String::new()
                } else {
                    format!(", DNS {}", sa.dns.join(","))
                }
            );
        }
        if sa.mobike || !sa.remote_addrs.is_empty() {
            // RFC 4555 §3.4: each side's addresses besides the one in use.
            let _ = writeln!(
                out,
                "  addresses: ours {}, the peer's {}, configured peer {}",
                list_or_none(&sa.local_addrs),
                list_or_none(&sa.peer_addrs),
                list_or_none(&sa.remote_addrs)
            );
        }
        if let Some(r) = &sa.return_routability {
            // RFC 4555 §3.7, §5.2: ESP waits on the verified pair.
            let _ = writeln!(
                out,
                "  return routability check of {}: ESP stays on {} - {}",
                r.candidates.join(","),
                r.esp_local,
                r.esp_remote
            );
        }
        if let Some(m) = &sa.mobility {
            out.push_str(&super::render_mobility::sa_lines(m));
        }
        for c in &sa.child_sas {
            let counters = if c.counters_known {
                let mut t = format!(
                    "{} B/{} pkts in{}, {} B/{} pkts out{}",
                    c.bytes_in,
                    c.packets_in,
                    ago(c.last_used_in, now),
                    c.bytes_out,
                    c.packets_out,
                    ago(c.last_used_out, now)
                );
                if c.replay_errors > 0 || c.integrity_failures > 0 {
                    let _ = write!(
                        t,
                        ", dropped {} replayed, {} bad ICV",
                        c.replay_errors, c.integrity_failures
                    );
                }
                t
            } else if !c.counters_error.is_empty() {
                format!("counters unreadable: {}", c.counters_error)
            } else {
                format!("counters n/a (backend {})", st.backend)
            };
            let _ = writeln!(
                out,
                "  {:<10} {:<9} {:<9} in {:08x} out {:08x}  {} === {}  {}{}",
                c.name,
                c.state,
                c.mode,
                c.spi_in,
                c.spi_out,
                c.local_ts.join(","),
                c.remote_ts.join(","),
                counters,
                rekey_in(c.rekey_in_seconds)
            );
        }
    }
    if let Some(s) = &st.stats {
        let _ = writeln!(
            out,
            "MOBIKE: {} return routability checks, {} bad COOKIE2, {} updates from the responder, {} address lists refused; {} unexpected messages",
            s.return_routability_checks,
            s.bad_cookie2,
            s.update_from_responder,
            s.address_lists_refused,
            s.unexpected
        );
        let _ = writeln!(
            out,
            "IKE_SA_INIT: {} half-open, {} cookies sent, dropped {} at the half-open limit and {} at the limit per source; {} bad nonces, {} error notifies waited out",
            s.half_open,
            s.cookies_sent,
            s.half_open_limit_drops,
            s.half_open_source_drops,
            s.bad_nonces,
            s.init_error_notifies
        );
    }
    out
}
