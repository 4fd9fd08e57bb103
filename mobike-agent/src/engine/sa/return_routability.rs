//! The responder's side of a MOBIKE address update (RFC 4555 §3.5) and
//! the return routability check that guards ESP (§3.7, §5.2), the NAT
//! rules on it (NAT-D in INFORMATIONAL exchanges, §3.8; NO_NATS_ALLOWED,
//! §3.9), a NAT rebinding without MOBIKE (RFC 7296 §2.23), and a MIGRATE
//! the kernel refused.
//!
//! RFC 4555 §3.5 has the responder of UPDATE_SA_ADDRESSES take the new
//! addresses from the IP header into the IKE SA and answer, then, if
//! necessary, run a return routability check of the new address and wait
//! for it, and only then move the IPsec SAs. §3.7 says the check (a
//! protected INFORMATIONAL with COOKIE2, its answer must echo the cookie)
//! should be done by default and may be left out where the addresses are
//! trusted; §5.2 says why: an authenticated peer can still name a forged
//! source address (or an attacker can race a copy of a real update from
//! elsewhere) and have bulk ESP traffic flood a third party.
//! [`MobikeVerify`](config::MobikeVerify) says which addresses are checked.
//!
//! While a check runs, the IKE SA is on the new pair and the CHILD_SAs
//! stay on the last verified pair ([`Unverified::esp`]). Every
//! authenticated copy of the update request (the original, or a
//! retransmission from another address) names a candidate pair; the check
//! goes to each candidate, and ESP moves to the candidate its answer came
//! from, so a copy raced from a forged source never gets ESP.

use std::net::IpAddr;

use tracing::{info, warn};

use crate::engine::{CommandError, Ctx, Event, Path, config};
use crate::proto::{ExchangeType, NotifyType, Payload};

use super::{BuiltRequest, ChildState, IkeSa, QueuedRequest, notify, notify_of};

/// NAT-D data: a SHA-1 hash (RFC 7296 §2.23).
const NAT_D_LEN: usize = 20;

/// Candidates kept per check: each gets every transmission of the check,
/// so a flood of raced copies cannot multiply our traffic further.
const MAX_CANDIDATES: usize = 4;

/// A return routability check (RFC 4555 §3.7, §5.2) under way.
#[derive(Debug, Clone)]
pub(super) struct Unverified {
    /// Where the CHILD_SAs are: the last verified pair.
    esp: Path,
    /// Pairs an authenticated copy of the peer's update came from.
    candidates: Vec<Path>,
    /// Message ID of that update request (None once the check moved to a
    /// rekeyed IKE SA, where the update was never received).
    msg_id: Option<u32>,
}

impl IkeSa {
    /// The peer's UPDATE_SA_ADDRESSES (RFC 4555 §3.5): the IKE SA follows
    /// to where this authenticated request came from at once; the
    /// CHILD_SAs follow now or after a return routability check. Adds
    /// NAT-D (or UNEXPECTED_NAT_DETECTED, §3.9) to the `answer`; its COOKIE2
    /// is echoed with the other notifies.
    pub(super) fn respond_update_addresses(
        &mut self,
        ctx: &mut Ctx<'_>,
        msg_id: u32,
        p: &[Payload],
        answer: &mut Vec<Payload>,
    ) {
        if self.initiator {
            // §3.5: only the original initiator sends it.
            warn!(
                sa = self.id,
                "UPDATE_SA_ADDRESSES from the original responder ignored"
            );
            ctx.stats.update_from_responder += 1;
            return;
        }
        let Some(new) = self.window.reply_path else {
            return;
        };
        if let Some(known) = self.conn(ctx).remote_addr
            && known.is_ipv4() != new.remote.is_ipv4()
        {
            // §3.5: a responder that does not accept the new addresses
            // answers UNACCEPTABLE_ADDRESSES and stays. Ours refuses an
            // address family other than that of the peer address the
            // connection is configured with (remote_addr): that is the
            // family its policy names the peer in.
            warn!(sa = self.id, peer = %new.remote, configured = %known, "refusing to move the IKE SA to another address family than the configured peer's");
            answer.push(notify(NotifyType::UNACCEPTABLE_ADDRESSES, vec![]));
            return;
        }
        if let Some(n) = notify_of(p, NotifyType::NO_NATS_ALLOWED) {
            // §3.9: the addresses and ports the initiator sent from and to,
            // as it saw them; when they do not match the IP header, a NAT
            // is in between: the update is refused with
            // UNEXPECTED_NAT_DETECTED and the data is used for nothing else.
            match no_nats_data(new.remote, new.local) {
                _ if !matches!(n.data.len(), 12 | 36) => {
                    warn!(
                        sa = self.id,
                        len = n.data.len(),
                        "NO_NATS_ALLOWED of a wrong length: update refused"
                    );
                    ctx.stats.unexpected += 1;
                    answer.push(notify(NotifyType::INVALID_SYNTAX, vec![]));
                    return;
                }
                data if data != n.data => {
                    warn!(sa = self.id, from = %new.remote, "NO_NATS_ALLOWED: the addresses were translated, update refused");
                    answer.push(notify(NotifyType::UNEXPECTED_NAT_DETECTED, vec![]));
                    return;
                }
                _ => {}
            }
        }
        let old = self.path;
        self.path = new;
        // Our outstanding request is retransmitted to the addresses in use
        // (§3.5); it goes to the new ones now, not at its next
        // retransmission, which may be the last before we would give up.
        if new != old
            && let Some(o) = &self.window.in_flight
        {
            ctx.send(new, ctx.config.nat_t_port, &o.bytes);
        }
        let h = self.header(ExchangeType::INFORMATIONAL, 0, false);
        self.detect_nat(ctx, new, &h, p);
        answer.extend(self.nat_d_payloads(new));
        // The CHILD_SAs are where the last verified update put them.
        let esp = self.take_moving(|m| m.rr.take()).map_or(old, |u| u.esp);
        if esp == new {
            return;
        }
        if self.needs_check(ctx, esp, new) {
            info!(sa = self.id, from = %new.remote, "peer moved to an unverified address: IKE follows, ESP after the return routability check");
            self.moving_mut().rr = Some(Unverified {
                esp,
                candidates: vec![new],
                msg_id: Some(msg_id),
            });
            self.window
                .queue
                .push_back(QueuedRequest::ReturnRoutability);
        } else {
            self.migrate_children(ctx, esp);
        }
    }

    /// An INFORMATIONAL request without an address update.
    /// RFC 4555 §3.8: NAT-D in any INFORMATIONAL request is answered with
    /// NAT-D for the addresses it came from and to, so that an initiator
    /// behind a NAT sees its mapping change; a NAT-D notify other than the
    /// 20-octet SHA-1 hash is refused and counted.
    pub(super) fn answer_nat_d(
        &mut self,
        ctx: &mut Ctx<'_>,
        p: &[Payload],
        answer: &mut Vec<Payload>,
    ) {
        if notify_of(p, NotifyType::NO_NATS_ALLOWED).is_some() {
            // §3.9: it belongs in an UPDATE_SA_ADDRESSES request.
            warn!(
                sa = self.id,
                "NO_NATS_ALLOWED outside an address update: ignored"
            );
            ctx.stats.unexpected += 1;
        }
        let (Some(src), Some(dst)) = (
            notify_of(p, NotifyType::NAT_DETECTION_SOURCE_IP),
            notify_of(p, NotifyType::NAT_DETECTION_DESTINATION_IP),
        ) else {
            return;
        };
        if src.data.len() != NAT_D_LEN || dst.data.len() != NAT_D_LEN {
            warn!(
                sa = self.id,
                "NAT-D of a wrong length in an INFORMATIONAL: ignored"
            );
            ctx.stats.unexpected += 1;
            return;
        }
        let at = self.window.reply_path.unwrap_or(self.path);
        answer.extend(self.nat_d_payloads(at));
    }

    /// NAT-D for our liveness check, when we are a MOBIKE initiator behind
    /// a NAT (RFC 4555 §3.8: it should include them, as charon's DPD does,
    /// to notice a changed mapping).
    pub(super) fn liveness_nat_d(&self) -> Vec<Payload> {
        if self.initiator && self.peer_mobike && self.nat.local_behind {
            self.nat_d_payloads(self.path).to_vec()
        } else {
            Vec::new()
        }
    }

    /// The answer to our liveness check: when the peer now sees us at
    /// another address or port than before (its
    /// NAT_DETECTION_DESTINATION_IP changed), the NAT mapping changed and,
    /// as the responder does not follow it by itself under MOBIKE (§3.8),
    /// an UPDATE_SA_ADDRESSES from our pair tells it where we are.
    pub(super) fn complete_dpd(&mut self, ctx: &mut Ctx<'_>, p: &[Payload]) {
        if self.liveness_nat_d().is_empty() {
            return;
        }
        if self.note_nat_mapping(p) {
            info!(
                sa = self.id,
                "NAT mapping changed: updating the peer (MOBIKE)"
            );
            self.window
                .queue
                .push_back(QueuedRequest::UpdateAddresses(vec![self.path]));
            self.start_next_request(ctx);
        }
    }

    /// A MOBIKE initiator behind a NAT notices a changed mapping by
    /// comparing the NAT-D of the peer's answers (§3.8), which needs a
    /// first one. An address update from the pair in use, sent as soon as
    /// the IKE SA is up, gives it and takes the peer to the mapping as it
    /// is then, so a change before the first liveness check is noticed too.
    /// Not with NO_NATS_ALLOWED, which the peer would refuse (§3.9).
    pub(super) fn pin_nat_mapping(&mut self, ctx: &Ctx<'_>) {
        if self.peer_mobike && self.nat.local_behind && !self.conn(ctx).no_nats {
            self.window
                .queue
                .push_back(QueuedRequest::UpdateAddresses(vec![self.path]));
        }
    }

    /// Keeps the peer's NAT_DETECTION_DESTINATION_IP of an answer; true
    /// when it differs from the one kept before.
    pub(super) fn note_nat_mapping(&mut self, p: &[Payload]) -> bool {
        let Some(d) = notify_of(p, NotifyType::NAT_DETECTION_DESTINATION_IP)
            .filter(|d| d.data.len() == NAT_D_LEN)
        else {
            return false;
        };
        let before = self.nat.seen_as.replace(d.data.clone());
        before.is_some_and(|b| b != d.data)
    }

    /// The pair the CHILD_SAs use: the IKE SA's, or during a return
    /// routability check the last verified one.
    pub(super) fn esp_path(&self) -> Path {
        self.moving()
            .and_then(|m| m.rr.as_ref())
            .map_or(self.path, |u| u.esp)
    }

    /// The check `u` of the IKE SA this one rekeys (RFC 4555 §5.2): a new
    /// IKE SA does not make the peer's address verified. The check starts
    /// again here; the old IKE SA's one dies with it.
    pub(super) fn carry_check(&mut self, u: Unverified) {
        self.moving_mut().rr = Some(Unverified { msg_id: None, ..u });
        self.window
            .queue
            .push_back(QueuedRequest::ReturnRoutability);
    }

    /// The check under way, for status.
    pub(super) fn return_routability_info(&self) -> Option<crate::engine::ReturnRoutabilityInfo> {
        self.moving()
            .and_then(|m| m.rr.as_ref())
            .map(|u| crate::engine::ReturnRoutabilityInfo {
                esp: u.esp,
                candidates: u.candidates.iter().map(|c| c.remote).collect(),
            })
    }

    /// Whether `new` needs a return routability check before the CHILD_SAs
    /// leave `esp` for it ([`config::MobikeVerify`]). An address the peer
    /// already gets ESP at, one configured as the peer's (`remote_addrs`)
    /// or one in the peer's own address list (§3.6) is listed.
    fn needs_check(&self, ctx: &Ctx<'_>, esp: Path, new: Path) -> bool {
        let conn = self.conn(ctx);
        let listed = |ip: IpAddr| {
            ip == esp.remote.ip()
                || conn.remote_addrs().any(|a| a.ip() == ip)
                || self.peer_addresses().contains(&ip)
        };
        match conn.mobike_verify {
            config::MobikeVerify::Always => true,
            config::MobikeVerify::Never => false,
            config::MobikeVerify::Unlisted => !listed(new.remote.ip()),
        }
    }

    /// An authenticated copy of the peer's request `msg_id` came again,
    /// from `path` (a retransmission, or a copy raced from elsewhere):
    /// when it is the update under check, `path` is one more candidate and
    /// an outstanding check goes there at once, its retransmissions
    /// counted afresh.
    pub(super) fn update_copy_from(&mut self, ctx: &mut Ctx<'_>, msg_id: u32, path: Path) {
        let Some(u) = self.moving.as_deref_mut().and_then(|m| m.rr.as_mut()) else {
            return;
        };
        if u.msg_id != Some(msg_id) || u.candidates.contains(&path) {
            return;
        }
        if u.candidates.len() >= MAX_CANDIDATES {
            ctx.stats.unexpected += 1;
            return;
        }
        u.candidates.push(path);
        let timeout = self.conn(ctx).timers.retransmit_timeout;
        if let Some(o) = self.window.in_flight.as_mut()
            && matches!(o.request, Some(BuiltRequest::ReturnRoutability { .. }))
        {
            ctx.send(path, ctx.config.nat_t_port, &o.bytes);
            // The new candidate gets the whole retransmission budget: the
            // peer, alive at it, must not be given up for the silence of
            // the earlier ones (bounded by MAX_CANDIDATES).
            o.sent = 1;
            o.next = ctx.now + timeout;
        }
    }

    /// Sends the check (RFC 4555 §3.7): a protected INFORMATIONAL with a
    /// fresh, unpredictable COOKIE2 (§4.2.5: 8 to 64 octets; 16 here, as
    /// charon) to every candidate.
    pub(super) fn start_return_routability(&mut self, ctx: &mut Ctx<'_>) {
        if self.moving().is_none_or(|m| m.rr.is_none()) {
            return;
        }
        let Some(cookie2) = ctx.random::<{ super::path_test::COOKIE2_LEN }>() else {
            warn!(
                sa = self.id,
                "no randomness for COOKIE2; return routability check dropped"
            );
            return;
        };
        let payloads = [notify(NotifyType::COOKIE2, cookie2.to_vec())];
        self.send_request(
            ctx,
            ExchangeType::INFORMATIONAL,
            &payloads,
            BuiltRequest::ReturnRoutability {
                cookie2: cookie2.to_vec(),
            },
        );
        ctx.stats.return_routability_checks += 1;
        self.send_check_to_candidates(ctx);
    }

    /// Sends the outstanding check to the candidates other than the IKE
    /// SA's pair (which [`IkeSa::send_request`] and retransmissions use).
    pub(super) fn send_check_to_candidates(&mut self, ctx: &mut Ctx<'_>) {
        let (Some(u), Some(o)) = (
            self.moving().and_then(|m| m.rr.as_ref()),
            &self.window.in_flight,
        ) else {
            return;
        };
        if !matches!(o.request, Some(BuiltRequest::ReturnRoutability { .. })) {
            return;
        }
        for c in u.candidates.iter().filter(|c| **c != self.path) {
            ctx.send(*c, ctx.config.nat_t_port, &o.bytes);
        }
    }

    /// The check's answer, which came from `from`: when it echoes our
    /// COOKIE2 and came from a candidate, the peer is there; the IKE SA
    /// and the CHILD_SAs go to that pair.
    pub(super) fn complete_return_routability(
        &mut self,
        ctx: &mut Ctx<'_>,
        cookie2: Vec<u8>,
        from: Option<Path>,
        p: &[Payload],
    ) {
        let Some(u) = self.take_moving(|m| m.rr.take()) else {
            return;
        };
        if !self.cookie2_matches(ctx, p, &cookie2, "return routability check") {
            // §3.7: a COOKIE2 that does not match closes the IKE SA; ESP
            // never left the verified pair.
            self.path = u.esp;
            self.window.queue.push_back(QueuedRequest::DeleteIke);
            return;
        }
        let Some(at) = from.filter(|f| u.candidates.contains(f)) else {
            warn!(sa = self.id, from = ?from, "return routability answer from an address not checked: checking again");
            self.moving_mut().rr = Some(u);
            self.window
                .queue
                .push_back(QueuedRequest::ReturnRoutability);
            return;
        };
        info!(sa = self.id, remote = %at.remote, "peer address verified");
        self.path = at;
        if at != u.esp {
            self.migrate_children(ctx, u.esp);
        }
    }

    /// NO_NATS_ALLOWED for our update sent on `path` (RFC 4555 §3.9),
    /// when the connection asks for it.
    pub(super) fn no_nats_payload(&self, ctx: &Ctx<'_>, path: Path) -> Option<Payload> {
        self.conn(ctx).no_nats.then(|| {
            notify(
                NotifyType::NO_NATS_ALLOWED,
                no_nats_data(path.local, path.remote),
            )
        })
    }

    /// Without MOBIKE the peer's NAT mapping changed (RFC 7296 §2.23: the
    /// host not behind the NAT takes the new address and port from an
    /// authenticated message): the IKE SA moved from `old`; the CHILD_SAs'
    /// UDP encapsulation follows, or ESP goes to the stale mapping.
    pub(super) fn follow_nat_rebinding(&mut self, ctx: &mut Ctx<'_>, old: Path) {
        if self.encap().is_some() {
            self.migrate_children(ctx, old);
        }
    }

    /// The kernel saw the peer's ESP come from `remote`
    /// ([`Command::NatMapping`](crate::engine::Command::NatMapping)):
    /// without MOBIKE and with the peer behind a NAT, IKE and the CHILD_SAs'
    /// encapsulation follow (RFC 7296 §2.23), before the next IKE request
    /// would show it. Under MOBIKE the IKE SA does not follow a mapping by
    /// itself (RFC 4555 §3.8); its initiator sends an update.
    pub(in crate::engine) fn nat_mapping(
        &mut self,
        ctx: &mut Ctx<'_>,
        remote: std::net::SocketAddr,
    ) -> Result<(), CommandError> {
        if self.peer_mobike || !self.nat.remote_behind || self.path.remote == remote {
            tracing::debug!(sa = self.id, %remote, mobike = self.peer_mobike, "kernel NAT mapping: nothing to follow");
            return Ok(());
        }
        info!(sa = self.id, old = %self.path.remote, new = %remote, "kernel saw the peer's NAT mapping change");
        let old = self.path;
        self.path.remote = remote;
        self.follow_nat_rebinding(ctx, old);
        Ok(())
    }

    /// The kernel refused to move the CHILD_SA `spi` (inbound SPI) to the
    /// current pair: it stays where it was, which the peer no longer
    /// uses. It is replaced by a rekey on the current pair (the new SAs go
    /// in where they are needed; the old one is deleted with the peer), or
    /// deleted with the peer when it is already being replaced or deleted.
    pub(in crate::engine) fn migrate_failed(
        &mut self,
        ctx: &mut Ctx<'_>,
        spi: u32,
    ) -> Result<(), CommandError> {
        let Some(child) = self.children.iter_mut().find(|c| c.inbound_spi == spi) else {
            return Err(CommandError::UnknownChild {
                sa: self.id,
                what: format!("{spi:#010x}"),
            });
        };
        let replace = child.state == ChildState::Installed;
        warn!(
            sa = self.id,
            child = format_args!("{spi:#010x}"),
            replace,
            "the kernel refused to move the CHILD_SA: {}",
            if replace {
                "replacing it on the new addresses"
            } else {
                "deleting it"
            }
        );
        if replace {
            child.rekey_at = None;
            self.window
                .queue
                .push_back(QueuedRequest::RekeyChild(spi, None));
        } else {
            self.window
                .queue
                .push_back(QueuedRequest::DeleteChild(vec![spi]));
        }
        ctx.event(Event::MigrateFailed {
            sa: self.id,
            inbound_spi: spi,
            replaced: replace,
        });
        self.start_next_request(ctx);
        Ok(())
    }
}

/// NO_NATS_ALLOWED data (RFC 4555 §3.9, §4.2): source address, destination address, source port, destination
/// port, as sent (12 octets for IPv4, 36 for IPv6).
fn no_nats_data(src: std::net::SocketAddr, dst: std::net::SocketAddr) -> Vec<u8> {
    let mut v = Vec::with_capacity(36);
    for a in [src.ip(), dst.ip()] {
        match a {
            IpAddr::V4(a) => v.extend(a.octets()),
            IpAddr::V6(a) => v.extend(a.octets()),
        }
    }
    v.extend(src.port().to_be_bytes());
    v.extend(dst.port().to_be_bytes());
    v
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::engine::{Command, Endpoint, KernelAction};
    use crate::proto::Payload;

    use super::super::test_pair::{established, events, kernel_actions, shuttle};

    #[test]
    fn no_nats_data_is_addresses_then_ports() {
        let v4 = no_nats_data(
            "192.0.2.1:4500".parse().unwrap(),
            "198.51.100.2:500".parse().unwrap(),
        );
        assert_eq!(
            v4,
            [192, 0, 2, 1, 198, 51, 100, 2, 0x11, 0x94, 0x01, 0xf4].to_vec()
        );
        let v6 = no_nats_data(
            "[2001:db8::1]:4500".parse().unwrap(),
            "[2001:db8::2]:4500".parse().unwrap(),
        );
        assert_eq!(v6.len(), 36);
        assert_eq!(&v6[32..], &[0x11, 0x94, 0x11, 0x94]);
    }

    /// A's new address, not in B's configuration nor in A's list.
    const MOVED: &str = "192.0.2.9:4500";

    /// A moves its IKE SA to [`MOVED`]; B answers, takes it into the IKE
    /// SA and starts its return routability check. Returns B's check
    /// message ID; A's answer to the check is left undelivered.
    fn a_moves_and_b_checks(now: Instant, a: &mut Endpoint, b: &mut Endpoint) -> u32 {
        let info = a.ike_sas()[0].clone();
        a.handle_command(
            now,
            Command::UpdateAddresses {
                sa: info.id,
                local: MOVED.parse().unwrap(),
                remote: info.path.remote,
                fallback: vec![],
            },
        )
        .unwrap();
        let update = a.poll_transmit().expect("update sent");
        b.handle_datagram(now, update.remote, update.local, &update.payload);
        // B's answer and its check, both to the new address.
        let to_a: Vec<_> = std::iter::from_fn(|| b.poll_transmit()).collect();
        assert_eq!(to_a.len(), 2, "answer and check");
        assert!(to_a.iter().all(|t| t.remote == MOVED.parse().unwrap()));
        for t in &to_a {
            a.handle_datagram(now, t.remote, t.local, &t.payload);
        }
        // A's answer to the check: dropped.
        while a.poll_transmit().is_some() {}
        let b_sa = &b.ike_sas()[0];
        assert_eq!(b_sa.path.remote, MOVED.parse().unwrap(), "IKE moved");
        assert!(kernel_actions(b).is_empty(), "ESP waits for the check");
        b_sa.next_request_id - 1
    }

    /// A's answer to B's check `msg_id` with `cookie2`, sealed with A's
    /// keys and delivered to B from [`MOVED`].
    fn answer_check(now: Instant, a: &mut Endpoint, b: &mut Endpoint, msg_id: u32, cookie2: &[u8]) {
        let a_sa = a.sas.values_mut().next().unwrap();
        let h = a_sa.header(ExchangeType::INFORMATIONAL, msg_id, true);
        let answer = a_sa
            .seal(h, &[notify(NotifyType::COOKIE2, cookie2.to_vec())])
            .unwrap();
        let local = b.ike_sas()[0].path.local;
        let d = [&[0u8; 4][..], &answer].concat();
        b.handle_datagram(now, local, MOVED.parse().unwrap(), &d);
    }

    /// The COOKIE2 of B's outstanding check.
    fn check_cookie(b: &Endpoint) -> Vec<u8> {
        let b_sa = b.sas.values().next().unwrap();
        match b_sa
            .window
            .in_flight
            .as_ref()
            .and_then(|o| o.request.as_ref())
        {
            Some(BuiltRequest::ReturnRoutability { cookie2 }) => cookie2.clone(),
            other => panic!("no check outstanding: {other:?}"),
        }
    }

    fn migrations(actions: &[KernelAction]) -> Vec<(IpAddr, IpAddr)> {
        actions
            .iter()
            .filter_map(|k| match k {
                KernelAction::MigrateChildSa { to, .. } => Some(*to),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_check_answered_with_another_cookie2_never_moves_esp() {
        // RFC 4555 §3.5, §5.2: B's ESP stays on A's verified address when
        // the answer does not echo B's COOKIE2 (another one, or one of a
        // length §3.7 does not allow); B counts it, takes the IKE SA back
        // to the verified pair and deletes it.
        for cookie2 in [vec![7u8; 16], vec![7u8; 4]] {
            let (now, mut a, mut b) = established();
            let verified = b.ike_sas()[0].path;
            let msg_id = a_moves_and_b_checks(now, &mut a, &mut b);
            assert_ne!(check_cookie(&b), cookie2);
            answer_check(now, &mut a, &mut b, msg_id, &cookie2);
            assert_eq!(b.stats().bad_cookie2, 1, "{cookie2:?}");
            let actions = kernel_actions(&mut b);
            assert!(migrations(&actions).is_empty(), "{actions:?}");
            assert!(
                !events(&mut b)
                    .iter()
                    .any(|e| matches!(e, Event::PathChanged { .. }))
            );
            assert_eq!(b.ike_sas()[0].path, verified, "back on the verified pair");
            // The Delete goes to the verified pair.
            let delete = b.poll_transmit().expect("IKE SA deleted");
            assert_eq!(delete.remote, verified.remote);
            assert_eq!(b.ike_sas()[0].state, "deleting");
        }
    }

    #[test]
    fn a_check_answered_with_our_cookie2_moves_esp() {
        let (now, mut a, mut b) = established();
        let msg_id = a_moves_and_b_checks(now, &mut a, &mut b);
        let cookie2 = check_cookie(&b);
        answer_check(now, &mut a, &mut b, msg_id, &cookie2);
        assert_eq!(b.stats().bad_cookie2, 0);
        let moved: std::net::SocketAddr = MOVED.parse().unwrap();
        assert_eq!(
            migrations(&kernel_actions(&mut b)),
            vec![(b.ike_sas()[0].path.local.ip(), moved.ip())]
        );
        assert_eq!(b.ike_sas()[0].path.remote, moved);
    }

    /// A's UPDATE_SA_ADDRESSES with `extra` notifies, sealed with A's keys
    /// at A's next message ID, delivered to B from [`MOVED`].
    fn forged_request(now: Instant, a: &mut Endpoint, b: &mut Endpoint, payloads: &[Payload]) {
        let a_sa = a.sas.values_mut().next().unwrap();
        let h = a_sa.header(ExchangeType::INFORMATIONAL, a_sa.window.next_msg_id, false);
        a_sa.window.next_msg_id += 1;
        let req = a_sa.seal(h, payloads).unwrap();
        let local = b.ike_sas()[0].path.local;
        let d = [&[0u8; 4][..], &req].concat();
        b.handle_datagram(now, local, MOVED.parse().unwrap(), &d);
    }

    #[test]
    fn no_nats_allowed_of_a_bad_length_or_out_of_place_is_refused() {
        // RFC 4555 §3.9, §4.2: 12 octets (IPv4) or 36 (IPv6), in an
        // UPDATE_SA_ADDRESSES request. Anything else is refused, counted in
        // `unexpected`, and changes nothing; the request is answered.
        let (now, mut a, mut b) = established();
        let before = b.ike_sas()[0].clone();
        let update = |len: usize| {
            vec![
                notify(NotifyType::UPDATE_SA_ADDRESSES, vec![]),
                notify(NotifyType::NO_NATS_ALLOWED, vec![0; len]),
                notify(NotifyType::COOKIE2, vec![1; 16]),
            ]
        };
        let plain = vec![notify(NotifyType::NO_NATS_ALLOWED, vec![0; 12])];
        for (k, payloads) in [update(5), update(13), update(0), plain]
            .into_iter()
            .enumerate()
        {
            forged_request(now, &mut a, &mut b, &payloads);
            assert_eq!(b.stats().unexpected, k as u64 + 1, "{payloads:?}");
            let after = b.ike_sas()[0].clone();
            assert_eq!(after.path, before.path, "{payloads:?}");
            assert_eq!(after.children, before.children);
            assert_eq!(after.peer_addrs, before.peer_addrs);
            assert_eq!(
                after.next_peer_request_id,
                before.next_peer_request_id + k as u32 + 1
            );
            assert!(kernel_actions(&mut b).is_empty(), "{payloads:?}");
            assert!(events(&mut b).is_empty(), "{payloads:?}");
            let answer = b.poll_transmit().expect("answered");
            assert_eq!(answer.remote, MOVED.parse().unwrap());
            assert!(b.poll_transmit().is_none(), "no check started");
        }
        // The SA still works: A's own requests resume where the forged ones
        // left the message IDs.
        shuttle(now, &mut a, &mut b);
        assert_eq!(b.ike_sas()[0].state, "established");
    }
}
