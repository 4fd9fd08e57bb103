//! MOBIKE address updates (RFC 4555 §3.5) in both roles: the
//! UPDATE_SA_ADDRESSES request sent from the new address pair with NAT-D and
//! COOKIE2 (and NO_NATS_ALLOWED when configured, §3.9), and moving the
//! CHILD_SAs ([`KernelAction::MigrateChildSa`], both outer addresses of
//! one family, IPv4 or IPv6, whichever the new pair has); the answer to
//! the peer's is in [`super::return_routability`].
//!
//! Pending-update semantics (§3.5), initiator side:
//! - a new pair asked for while a request is outstanding takes effect for
//!   the IKE SA at once: the outstanding request is retransmitted from it,
//!   and the UPDATE_SA_ADDRESSES follows the answer (also when the request
//!   outstanding is itself an update: the newest pair wins);
//! - an update refused (UNACCEPTABLE_ADDRESSES or another error) or
//!   unanswered on one pair tries the next candidate of the command's
//!   ranked list before the SA is given up; with none left, a refused
//!   update stays on the old pair;
//! - each failed pair is reported ([`Event::UpdateFailed`]).
//!
//! Only the original initiator sends UPDATE_SA_ADDRESSES (§3.1: it decides
//! which addresses are used); one from the original responder is logged,
//! counted and not followed.

use tracing::{debug, info, warn};

use crate::engine::{CommandError, Ctx, Event, KernelAction, Path, UdpEncap, UpdateFailure};
use crate::{
    crypto,
    proto::{ExchangeType, NotifyType, Payload},
};

use super::{
    BuiltRequest, IkeSa, QueuedRequest, SentRequest, State, first_error, notify, notify_of,
    request::Probe,
};

impl IkeSa {
    /// Moves the IKE SA to the first of `paths`, the others being fallbacks
    /// in rank order (RFC 4555 §3.5).
    pub(in crate::engine) fn command_update_addresses(
        &mut self,
        ctx: &mut Ctx<'_>,
        paths: Vec<Path>,
    ) -> Result<(), CommandError> {
        self.require_mobike_initiator(&paths)?;
        let Some(&first) = paths.first() else {
            return Ok(());
        };
        // The newest addresses win over an update still waiting, and a
        // path test still waiting has lost its purpose (the pair is
        // chosen; what it would tell comes from the update). The update
        // goes first: whatever else waits would otherwise go on the pair
        // being left.
        self.window.queue.retain(|q| {
            !matches!(
                q,
                QueuedRequest::UpdateAddresses(_) | QueuedRequest::TestPaths(_)
            )
        });
        let lost = self.moving().is_some_and(|m| m.path_lost);
        if let Some(o) = self.window.in_flight.as_mut() {
            // §3.5: outstanding requests are retransmitted from the new
            // addresses; the update follows their answer. An outstanding
            // update moves the CHILD_SAs itself when answered; otherwise
            // they stay where they are until the update.
            if let Some(BuiltRequest::PathTest(t)) = o.request.as_mut() {
                // A path test goes on its own pairs, which may all be dead
                // (the window would stay shut for its whole retry budget):
                // it goes on the new pair too, now, so that the window is
                // free one round trip later (§3.10: the same request on
                // one more pair).
                if !t.probes.iter().any(|p| p.path == first) {
                    t.probes.push(Probe {
                        path: first,
                        first_sent: ctx.now,
                        answered: false,
                    });
                }
                ctx.send(first, ctx.config.nat_t_port, &o.bytes);
            } else if lost && !matches!(o.request, Some(BuiltRequest::UpdateAddresses { .. })) {
                // With the current pair lost, any other request (an address
                // announcement, a liveness check, a rekey) goes on the new
                // pair now, not at its next retransmission seconds later:
                // the update waits behind it. (While the old pair works,
                // its answer comes there.) An outstanding update is left to
                // its timer: its NAT-D notifies name its own pair.
                ctx.send(first, ctx.config.nat_t_port, &o.bytes);
            }
            if !matches!(o.request, Some(BuiltRequest::UpdateAddresses { .. })) {
                let path = self.path;
                self.moving_mut().update_from.get_or_insert(path);
            }
            debug!(sa = self.id, local = %first.local, remote = %first.remote, "outstanding request now retransmitted from the new pair");
            self.path = first;
        }
        self.window
            .queue
            .push_front(QueuedRequest::UpdateAddresses(paths));
        self.start_next_request(ctx);
        Ok(())
    }

    /// NAT-D notifies for `path` (RFC 7296 §2.23; RFC 4555 §3.5 carries
    /// them in UPDATE_SA_ADDRESSES exchanges too).
    pub(super) fn nat_d_payloads(&self, path: Path) -> [Payload; 2] {
        [
            notify(
                NotifyType::NAT_DETECTION_SOURCE_IP,
                crypto::nat_detection_hash(self.spi_i, self.spi_r, path.local),
            ),
            notify(
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                crypto::nat_detection_hash(self.spi_i, self.spi_r, path.remote),
            ),
        ]
    }

    /// Moves every CHILD_SA from `old` to the current path in the kernel.
    pub(super) fn migrate_children(&mut self, ctx: &mut Ctx<'_>, old: Path) {
        self.migrate_children_between(ctx, old, self.path);
        self.moved(ctx);
    }

    /// The kernel side of a move: every CHILD_SA from `from` to `to`, with
    /// the encapsulation the IKE SA has now.
    fn migrate_children_between(&self, ctx: &mut Ctx<'_>, from: Path, to: Path) {
        self.migrate_children_with(ctx, from, to, false);
    }

    /// `after_send`: the migrations may follow the datagrams queued with
    /// them ([`Ctx::kernel_after_send`]).
    fn migrate_children_with(&self, ctx: &mut Ctx<'_>, from: Path, to: Path, after_send: bool) {
        let encap = self.encap();
        for c in &self.children {
            let k = KernelAction::MigrateChildSa {
                reqid: c.reqid,
                inbound_spi: c.inbound_spi,
                outbound_spi: c.outbound_spi,
                from: (from.local.ip(), from.remote.ip()),
                to: (to.local.ip(), to.remote.ip()),
                encap,
            };
            if after_send {
                ctx.kernel_after_send(k);
            } else {
                ctx.kernel(k);
            }
        }
    }

    /// The IKE SA is on its new path: logged and reported.
    fn moved(&mut self, ctx: &mut Ctx<'_>) {
        self.take_moving(|m| {
            m.path_lost = false;
            None::<()>
        });
        info!(sa = self.id, local = %self.path.local, remote = %self.path.remote, "IKE SA moved (MOBIKE)");
        ctx.event(Event::PathChanged {
            sa: self.id,
            path: self.path,
        });
    }

    /// The current pair carries nothing any more (Command::PathLost).
    pub(in crate::engine) fn command_path_lost(&mut self) -> Result<(), CommandError> {
        self.require_mobike_initiator(&[])?;
        self.moving_mut().path_lost = true;
        Ok(())
    }

    /// CHILD_SAs an update moved as it was sent (`moved_early`) go back to
    /// `old`, where the IKE SA stays or from where the next update starts.
    fn undo_early_move(
        &self,
        ctx: &mut Ctx<'_>,
        moved_early: Option<(Path, Option<UdpEncap>)>,
        old: Path,
    ) {
        if let Some((at, _)) = moved_early
            && at != old
        {
            self.migrate_children_between(ctx, at, old);
        }
    }

    /// Make-before-break: the inbound SAs of every CHILD_SA (on `old`)
    /// also valid at the local address of `to` while the update to `to` is
    /// under way, so the peer's ESP is taken there as soon as it switches
    /// ([`KernelAction::PrepareInbound`]). Only for a move of our address:
    /// the inbound policies name the peer's address, so a pair with
    /// another peer address (or `to` = `old`) removes any copy instead.
    fn prepare_inbound(&self, ctx: &mut Ctx<'_>, old: Path, to: Path) {
        let local = if to.remote.ip() == old.remote.ip() {
            to.local.ip()
        } else {
            old.local.ip()
        };
        for c in &self.children {
            ctx.kernel(KernelAction::PrepareInbound {
                reqid: c.reqid,
                inbound_spi: c.inbound_spi,
                local,
            });
        }
    }

    /// Builds and sends UPDATE_SA_ADDRESSES from the first of `paths`
    /// (RFC 4555 §3.5); the rest are tried if it fails.
    pub(super) fn start_update_addresses(&mut self, ctx: &mut Ctx<'_>, mut paths: Vec<Path>) {
        if self.state != State::Established || paths.is_empty() {
            return;
        }
        let Some(cookie2) = ctx.random::<{ super::path_test::COOKIE2_LEN }>() else {
            warn!(
                sa = self.id,
                "no randomness for COOKIE2; address update dropped"
            );
            return;
        };
        let path = paths.remove(0);
        let old = self
            .take_moving(|m| m.update_from.take())
            .unwrap_or(self.path);
        let unanswered = match self.take_moving(|m| m.unanswered_updates.take()) {
            Some((id, cookies)) if id == self.window.next_msg_id => cookies,
            _ => Vec::new(),
        };
        // Sent (and retransmitted) from the new address (§3.5).
        self.path = path;
        let moved_early = match self.moving() {
            Some(m) if m.path_lost && path != old => {
                // The old pair is lost: the CHILD_SAs go now, right after
                // the update (the peer moves its SAs meanwhile).
                self.migrate_children_with(ctx, old, path, true);
                Some((path, self.encap()))
            }
            _ => {
                self.prepare_inbound(ctx, old, path);
                None
            }
        };
        let mut payloads = vec![notify(NotifyType::UPDATE_SA_ADDRESSES, vec![])];
        payloads.extend(self.nat_d_payloads(path));
        payloads.push(notify(NotifyType::COOKIE2, cookie2.to_vec()));
        payloads.extend(self.no_nats_payload(ctx, path));
        payloads.extend(self.update_address_list(ctx));
        self.send_request(
            ctx,
            ExchangeType::INFORMATIONAL,
            &payloads,
            BuiltRequest::UpdateAddresses {
                old,
                cookie2: cookie2.to_vec(),
                rest: paths,
                unanswered,
                moved_early,
            },
        );
    }

    /// Newer addresses wait for the window.
    pub(super) fn update_queued(&self) -> bool {
        self.window
            .queue
            .iter()
            .any(|q| matches!(q, QueuedRequest::UpdateAddresses(_)))
    }

    /// Reports the failed pair and tries the next candidate in `rest`
    /// unless newer addresses are queued; with neither, the IKE SA stays
    /// on `old`.
    fn update_failed(
        &mut self,
        ctx: &mut Ctx<'_>,
        (old, moved_early): (Path, Option<(Path, Option<UdpEncap>)>),
        rest: Vec<Path>,
        reason: UpdateFailure,
    ) {
        let failed = self.path;
        self.undo_early_move(ctx, moved_early, old);
        ctx.event(Event::UpdateFailed {
            sa: self.id,
            path: failed,
            reason,
        });
        self.path = old;
        if !self.update_queued() && !rest.is_empty() {
            info!(sa = self.id, next = %rest[0].local, "trying the next candidate pair");
            self.window
                .queue
                .push_front(QueuedRequest::UpdateAddresses(rest));
        } else if !self.update_queued() {
            // Staying on `old`: the inbound copies go.
            self.prepare_inbound(ctx, old, old);
        }
    }

    /// Completes our UPDATE_SA_ADDRESSES (RFC 4555 §3.5): on an answer that
    /// echoes our COOKIE2 and refuses nothing, the CHILD_SAs follow to the
    /// new path; on UNACCEPTABLE_ADDRESSES (or another error) the next
    /// candidate is tried, or the IKE SA goes back to `old`.
    ///
    /// An answer that echoes the COOKIE2 of an earlier update of ours under
    /// the same message ID (`unanswered`, see
    /// [`IkeSa::update_unanswered`]) is the peer's cached answer to that
    /// one (RFC 7296 §2.1): the peer took it, moved to its pair and
    /// advanced its window, and never saw this request. This pair is asked
    /// for again under the next message ID.
    pub(super) fn complete_update_addresses(
        &mut self,
        ctx: &mut Ctx<'_>,
        (old, moved_early): (Path, Option<(Path, Option<UdpEncap>)>),
        (cookie2, unanswered): (Vec<u8>, Vec<Vec<u8>>),
        rest: Vec<Path>,
        p: &[Payload],
    ) {
        if notify_of(p, NotifyType::COOKIE2).is_some_and(|n| unanswered.contains(&n.data)) {
            info!(sa = self.id, local = %self.path.local, remote = %self.path.remote, "the peer took an earlier address update whose answers were lost: updating again");
            self.undo_early_move(ctx, moved_early, old);
            self.moving_mut().update_from = Some(old);
            let mut again = vec![self.path];
            again.extend(rest);
            self.window
                .queue
                .push_front(QueuedRequest::UpdateAddresses(again));
            return;
        }
        // RFC 4555 §3.5: the answer must echo our COOKIE2.
        if !self.cookie2_matches(ctx, p, &cookie2, "UPDATE_SA_ADDRESSES") {
            self.update_failed(ctx, (old, moved_early), rest, UpdateFailure::BadCookie2);
            return;
        }
        if let Some(err) = first_error(p) {
            warn!(sa = self.id, notify = ?err, local = %self.path.local, remote = %self.path.remote, "address update refused");
            self.update_failed(ctx, (old, moved_early), rest, UpdateFailure::Refused(err));
            return;
        }
        let h = self.header(ExchangeType::INFORMATIONAL, 0, false);
        let path = self.path;
        self.detect_nat(ctx, path, &h, p);
        self.note_nat_mapping(p);
        match moved_early {
            // Moved as sent: again only if the pair moved on since (a
            // newer update) or the answer showed another NAT state.
            Some((at, encap)) => {
                if at != path || encap != self.encap() {
                    self.migrate_children_between(ctx, at, path);
                }
                if path != old {
                    self.moved(ctx);
                }
            }
            None if path != old => self.migrate_children(ctx, old),
            None => {}
        }
    }

    /// Our UPDATE_SA_ADDRESSES `o` went unanswered on its pair and another
    /// candidate is left (or newer addresses are queued): that one is
    /// tried, reusing the message ID (the peer most likely never saw this
    /// request: a message ID it did not receive must not be skipped, RFC
    /// 7296 §2.2). Should the peer have taken it and only the answers been
    /// lost, its cached answer comes back with this request's COOKIE2,
    /// kept for the next update ([`IkeSa::complete_update_addresses`]).
    pub(super) fn update_unanswered(&mut self, ctx: &mut Ctx<'_>, o: SentRequest) {
        let Some(BuiltRequest::UpdateAddresses {
            old,
            rest,
            cookie2,
            mut unanswered,
            moved_early,
        }) = o.request
        else {
            return;
        };
        warn!(sa = self.id, local = %self.path.local, remote = %self.path.remote, "address update unanswered on this pair");
        self.window.next_msg_id = o.msg_id;
        unanswered.push(cookie2);
        self.moving_mut().unanswered_updates = Some((o.msg_id, unanswered));
        self.update_failed(ctx, (old, moved_early), rest, UpdateFailure::Unanswered);
        self.moving_mut().update_from = Some(old);
    }
}

impl IkeSa {
    /// What moving or testing `paths` needs: an established IKE SA with
    /// MOBIKE, of which we are the original initiator (RFC 4555 §3.1: it
    /// decides which addresses are used), and pairs of one family each.
    pub(super) fn require_mobike_initiator(&self, paths: &[Path]) -> Result<(), CommandError> {
        self.require_established()?;
        if !self.peer_mobike {
            return Err(CommandError::NoMobike(self.id));
        }
        if !self.initiator {
            return Err(CommandError::NotInitiator(self.id));
        }
        check_families(paths)
    }
}

/// Every pair has both addresses of one family (RFC 4555 §3.5 moves
/// between IPv4 and IPv6 freely, but one pair is one family: the kernel's
/// MIGRATE carries one family for the old and one for the new addresses).
fn check_families(paths: &[Path]) -> Result<(), CommandError> {
    match paths
        .iter()
        .find(|p| p.local.is_ipv4() != p.remote.is_ipv4())
    {
        Some(p) => Err(CommandError::MixedFamilies {
            local: p.local,
            remote: p.remote,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::test_pair::{established, kernel_actions};
    use crate::engine::{Command, Endpoint, KernelAction};

    /// A's IKE SA updated to a local address of its own (192.0.2.9).
    fn update_from_a_new_address(a: &mut Endpoint, now: Instant) {
        let info = a.ike_sas()[0].clone();
        a.handle_command(
            now,
            Command::UpdateAddresses {
                sa: info.id,
                local: "192.0.2.9:4500".parse().unwrap(),
                remote: info.path.remote,
                fallback: vec![],
            },
        )
        .unwrap();
    }

    /// With the old pair lost, the CHILD_SAs are migrated right after the
    /// update goes out (the peer moves its SAs meanwhile), not before it;
    /// an action the engine asks for later still follows them.
    #[test]
    fn a_lost_pair_migrates_after_the_update_is_sent() {
        let (now, mut a, _b) = established();
        let info = a.ike_sas()[0].clone();
        a.handle_command(now, Command::PathLost { sa: info.id })
            .unwrap();
        update_from_a_new_address(&mut a, now);
        assert!(a.poll_transmit().is_some(), "the update is queued");
        assert_eq!(
            a.poll_kernel_action_before_send(),
            None,
            "nothing the update waits for"
        );
        let after = kernel_actions(&mut a);
        assert_eq!(after.len(), info.child_sas.len());
        assert!(
            after
                .iter()
                .all(|k| matches!(k, KernelAction::MigrateChildSa { .. })),
            "{after:?}"
        );
    }

    /// A request outstanding when the IKE SA leaves a lost pair (here a
    /// liveness check) is sent again on the new pair at once (RFC 4555
    /// §3.5), not at its next retransmission seconds later: the update
    /// waits behind it in the window. While the old pair works, it is not.
    #[test]
    fn an_outstanding_request_leaves_a_lost_pair_at_once() {
        let (now, mut a, _b) = established();
        let info = a.ike_sas()[0].clone();
        a.handle_command(now, Command::Dpd(info.id)).unwrap();
        let check = a.poll_transmit().expect("the liveness check");
        assert_eq!(check.local.ip(), info.path.local.ip());
        let mut working = {
            let (_, mut a2, _) = established();
            let id = a2.ike_sas()[0].id;
            a2.handle_command(now, Command::Dpd(id)).unwrap();
            a2.poll_transmit().expect("the liveness check");
            update_from_a_new_address(&mut a2, now);
            a2
        };
        assert!(
            working.poll_transmit().is_none(),
            "old pair working: the check's answer comes there"
        );
        a.handle_command(now, Command::PathLost { sa: info.id })
            .unwrap();
        update_from_a_new_address(&mut a, now);
        let again = a.poll_transmit().expect("the check again, at once");
        assert_eq!(again.local, "192.0.2.9:4500".parse().unwrap());
        let ike = |t: &[u8]| t.strip_prefix(&[0u8; 4][..]).unwrap_or(t).to_vec();
        assert_eq!(ike(&again.payload), ike(&check.payload));
        assert!(
            a.poll_transmit().is_none(),
            "the update waits for the check's answer"
        );
    }

    /// A move whose old pair still works prepares the inbound SAs at the
    /// new address before the update goes out.
    #[test]
    fn make_before_break_prepares_before_the_update_is_sent() {
        let (now, mut a, _b) = established();
        update_from_a_new_address(&mut a, now);
        assert!(matches!(
            a.poll_kernel_action_before_send(),
            Some(KernelAction::PrepareInbound { .. })
        ));
    }
}
