//! IKE SA rekey with CREATE_CHILD_SA (RFC 7296 §1.3.2, §2.18) in both
//! roles, including simultaneous rekeys (§2.8.2): the new IKE SA takes over
//! the CHILD_SAs and the old one is deleted.

use tracing::{info, warn};

use crate::engine::{CommandError, Ctx, Event};
use crate::{
    crypto::{DhGroup, IkeKeys, KeyShare},
    proposal::{self, IkeSuite},
    proto::{self, ExchangeType, KeyExchange, Notify, NotifyType, Payload},
};

use super::{
    BuiltRequest, IkeRekeyOffer, IkeSa, QueuedRequest, REKEY_RETRY_FACTOR, SaOp, SentRequest,
    State, first_error, ke_of, min_nonce, nonce_of, notify, notify_of, sa_of,
};

impl IkeSa {
    pub(in crate::engine) fn command_rekey_ike(
        &mut self,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), CommandError> {
        self.require_established()?;
        self.window.queue.push_back(QueuedRequest::RekeyIke(None));
        self.start_next_request(ctx);
        Ok(())
    }

    pub(super) fn rekeyed_sa(
        &self,
        ctx: &mut Ctx<'_>,
        initiator: bool,
        spi_i: u64,
        spi_r: u64,
        keys: IkeKeys,
        suite: IkeSuite,
    ) -> IkeSa {
        let our = if initiator { spi_i } else { spi_r };
        let mut n = IkeSa::blank(our, self.conn, initiator, self.path, ctx.now);
        n.spi_i = spi_i;
        n.spi_r = spi_r;
        n.crypto.keys = Some(keys);
        n.crypto.suite = Some(suite);
        n.state = State::Established;
        n.nat.local_behind = self.nat.local_behind;
        n.nat.remote_behind = self.nat.remote_behind;
        n.nat.keepalive_at = self.nat.keepalive_at;
        n.peer_mobike = self.peer_mobike;
        // §2.18: the new IKE SA inherits the authentication of the old.
        n.local_auth = self.local_auth;
        n.remote_auth = self.remote_auth;
        n.peer_cert = self.peer_cert.clone();
        // Both lists stay true of the peers, whichever IKE SA carries them.
        n.addrs = self.addrs.clone();
        if n.peer_mobike {
            // An announce still queued here dies with this SA: the new one
            // sends our list if the peer does not have it (nothing if it
            // does).
            n.window.queue.push_back(QueuedRequest::AnnounceAddresses);
        }
        // The addresses belong to the connection, not to one IKE SA.
        n.vips.ours = self.vips.ours.clone();
        n.vips.dns = self.vips.dns.clone();
        n.vips.peers = self.vips.peers.clone();
        let timers = &self.conn(ctx).timers;
        n.rekey.at = ctx.rekey_at(timers.ike_rekey_time, timers.ike_rand_time);
        n
    }

    /// Moves the CHILD_SAs to the rekeyed IKE SA. Deletes that were queued
    /// or in flight on the old SA are lost with it, so replaced CHILD_SAs
    /// are deleted again from the new one (deleting twice is harmless: the
    /// second Delete gets an empty answer). A return routability check
    /// under way goes along: the CHILD_SAs stay on the verified pair.
    pub(super) fn move_children(&mut self, new: &mut IkeSa) {
        new.adopt_children(std::mem::take(&mut self.children));
        if let Some(u) = self.take_moving(|m| m.rr.take()) {
            new.carry_check(u);
        }
    }

    pub(super) fn respond_ike_rekey(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: u32,
        p: &[Payload],
        ni: Vec<u8>,
        nr: Vec<u8>,
    ) {
        let conn = self.conn(ctx);
        // §2.25.2: not while one of our CHILD_SA exchanges is in flight,
        // nor when we are about to delete the SA.
        if self.life.delete_requested
            || matches!(
                self.window.in_flight,
                Some(SentRequest {
                    request: Some(BuiltRequest::CreateChild(_) | BuiltRequest::DeleteChild(_)),
                    ..
                })
            )
        {
            let n = notify(NotifyType::TEMPORARY_FAILURE, vec![]);
            self.respond(ctx, ExchangeType::CREATE_CHILD_SA, id, &[n]);
            return;
        }
        let (Some(props), Some(ke)) = (sa_of(p), ke_of(p)) else {
            self.respond(
                ctx,
                ExchangeType::CREATE_CHILD_SA,
                id,
                &[notify(NotifyType::INVALID_SYNTAX, vec![])],
            );
            return;
        };
        let pick = props
            .iter()
            .filter(|o| o.spi.len() == 8)
            .find_map(|offered| {
                conn.ike_proposals
                    .iter()
                    .find_map(|ours| Some((offered, ours.select(offered)?)))
            });
        let Some((offered, mut suite)) = pick else {
            self.respond(
                ctx,
                ExchangeType::CREATE_CHILD_SA,
                id,
                &[notify(NotifyType::NO_PROPOSAL_CHOSEN, vec![])],
            );
            return;
        };
        if let Some(g) = DhGroup::from_number(ke.group)
            && conn.ike_proposals.iter().any(|x| x.dh.contains(&g))
            && offered
                .transforms
                .iter()
                .any(|t| t.ty == proto::TransformType::DH && t.id == ke.group)
        {
            suite.dh = g;
        }
        if !super::init::nonce_fits(&ni, suite.prf) {
            // §2.10, for the new IKE SA's PRF.
            let n = notify(NotifyType::INVALID_SYNTAX, vec![]);
            self.respond(ctx, ExchangeType::CREATE_CHILD_SA, id, &[n]);
            return;
        }
        if ke.group != suite.dh.number() {
            let n = notify(
                NotifyType::INVALID_KE_PAYLOAD,
                suite.dh.number().to_be_bytes().to_vec(),
            );
            self.respond(ctx, ExchangeType::CREATE_CHILD_SA, id, &[n]);
            return;
        }
        let (Ok(peer_spi), Some(spi), Ok(share)) = (
            <[u8; 8]>::try_from(offered.spi.as_slice()).map(u64::from_be_bytes),
            ctx.spi64(),
            KeyShare::generate(suite.dh, ctx.rng),
        ) else {
            return;
        };
        let public = share.public().to_vec();
        let (Ok(shared), Some(old_keys)) = (share.agree(&ke.data), self.crypto.keys.as_ref())
        else {
            self.respond(
                ctx,
                ExchangeType::CREATE_CHILD_SA,
                id,
                &[notify(NotifyType::INVALID_SYNTAX, vec![])],
            );
            return;
        };
        let Ok(keys) = IkeKeys::derive_rekeyed(
            old_keys, suite.prf, suite.encr, &ni, &nr, &shared, peer_spi, spi,
        ) else {
            return;
        };
        let exchange_min_nonce = min_nonce(&ni, &nr);
        let payloads = vec![
            Payload::Sa(vec![proposal::ike_suite_to_wire(
                suite,
                offered.number,
                spi.to_be_bytes().to_vec(),
            )]),
            Payload::Nonce(nr),
            Payload::Ke(KeyExchange {
                group: suite.dh.number(),
                data: public,
            }),
        ];
        self.respond(ctx, ExchangeType::CREATE_CHILD_SA, id, &payloads);
        let mut new = self.rekeyed_sa(ctx, false, peer_spi, spi, keys, suite);
        self.move_children(&mut new);
        if matches!(
            self.window.in_flight,
            Some(SentRequest {
                request: Some(BuiltRequest::RekeyIke(_)),
                ..
            })
        ) {
            // Simultaneous rekey (§2.8.2): settled when our own answer comes.
            new.rekey.collision_parent = Some(self.id);
            self.rekey.peer_rekey = Some((new.id, exchange_min_nonce));
        }
        info!(old = self.id, new = new.id, "IKE SA rekeyed by the peer");
        ctx.event(Event::IkeSaRekeyed {
            old: self.id,
            new: new.id,
        });
        self.state = State::Rekeyed;
        self.window.queue.clear();
        self.rekey.at = None;
        // The peer deletes this SA; until then it answers retransmissions
        // (in a collision, of the peer's own rekey request), but not for ever.
        self.life.expires = Some(ctx.now + self.linger(ctx.config));
        // Our answer may be lost, and until the peer has it the new SA does
        // not exist there: requests sent on it could only be dropped as for
        // an unknown SA while their retransmissions run out, and the peer
        // be declared dead while it retransmits its rekey request to us.
        // RFC 7296 §2.1 has the initiator "retransmit a request until it
        // either receives a corresponding response or deems the IKE SA to
        // have failed", and §2.4 lets an endpoint "conclude that the other
        // endpoint has failed only when repeated attempts to contact it
        // have gone unanswered": attempts on an SA the peer cannot know are
        // no such attempts. So, as §2.8 has the responder of a rekey wait
        // until it knows the initiator is ready for the new SA (a valid
        // message on it, or the request to close the replaced SA), nothing
        // of ours goes out on the new IKE SA before the peer has used it or
        // deleted this one (or this one's linger ran out).
        new.rekey.awaiting_peer = true;
        self.rekey.successor = Some(new.id);
        new.start_next_request(ctx);
        ctx.new_sas.push(new);
    }

    pub(super) fn complete_ike_rekey(
        &mut self,
        ctx: &mut Ctx<'_>,
        offer: IkeRekeyOffer,
        p: &[Payload],
    ) {
        let conn = self.conn(ctx);
        if let Some(err) = first_error(p) {
            warn!(sa = self.id, notify = ?err, "IKE SA rekey refused");
            if let Some((theirs, _)) = self.rekey.peer_rekey.take() {
                // Only the peer's rekey happened: no collision after all.
                ctx.sa_ops.push(SaOp::ClearCollision(theirs));
            }
            let retry = notify_of(p, NotifyType::INVALID_KE_PAYLOAD)
                .and_then(Notify::invalid_ke_group)
                .and_then(DhGroup::from_number)
                .filter(|g| {
                    *g != offer.share.group() && conn.ike_proposals.iter().any(|x| x.dh.contains(g))
                });
            if let Some(g) = retry
                && self.state == State::Established
            {
                self.window
                    .queue
                    .push_front(QueuedRequest::RekeyIke(Some(g)));
                return;
            }
            // Try again later (TEMPORARY_FAILURE after a collision, ...).
            self.rekey.at = Some(ctx.now + conn.timers.retransmit_timeout * REKEY_RETRY_FACTOR);
            return;
        }
        let (Some(props), Some(ke), Some(nr)) = (sa_of(p), ke_of(p), nonce_of(p)) else {
            return;
        };
        let suite = match props.as_slice() {
            [one] if one.spi.len() == 8 => proposal::ike_suite_from_wire(one)
                .filter(|s| {
                    s.dh == offer.share.group()
                        && conn.ike_proposals.iter().any(|x| x.select(one) == Some(*s))
                })
                .map(|s| {
                    (
                        s,
                        u64::from_be_bytes(one.spi.as_slice().try_into().unwrap_or_default()),
                    )
                }),
            _ => None,
        };
        // §2.10: the responder's nonce must suit the new IKE SA's PRF.
        let suite = suite.filter(|(s, _)| super::init::nonce_fits(&nr, s.prf));
        let Some((suite, peer_spi)) = suite.filter(|(_, spi)| *spi != 0) else {
            warn!(sa = self.id, "IKE SA rekey: unacceptable answer");
            self.rekey.at = Some(ctx.now + conn.timers.retransmit_timeout * REKEY_RETRY_FACTOR);
            return;
        };
        let (Ok(shared), Some(old_keys)) = (offer.share.agree(&ke.data), self.crypto.keys.as_ref())
        else {
            return;
        };
        let Ok(keys) = IkeKeys::derive_rekeyed(
            old_keys,
            suite.prf,
            suite.encr,
            &offer.nonce,
            &nr,
            &shared,
            offer.spi,
            peer_spi,
        ) else {
            return;
        };
        let mut new = self.rekeyed_sa(ctx, true, offer.spi, peer_spi, keys, suite);
        self.move_children(&mut new);
        if let Some((theirs, theirs_min)) = self.rekey.peer_rekey.take() {
            // §2.8.2: both ends rekeyed; the new SA made with the lowest of
            // the four nonces is deleted by its creator, and the creator of
            // the other deletes the old SA.
            ctx.stats.ike_rekey_collisions += 1;
            if min_nonce(&offer.nonce, &nr) < theirs_min {
                info!(
                    old = self.id,
                    redundant = new.id,
                    "IKE SA rekey collision lost"
                );
                ctx.sa_ops.push(SaOp::ClearCollision(theirs));
                if self.life.delete_requested {
                    ctx.sa_ops.push(SaOp::Delete(theirs));
                }
                new.state = State::Rekeyed;
                new.life.expires = Some(ctx.now + ctx.config.half_open_timeout);
                new.window.queue.push_back(QueuedRequest::DeleteIke);
                new.start_next_request(ctx);
                ctx.new_sas.push(new);
                return;
            }
            info!(
                old = self.id,
                new = new.id,
                redundant = theirs,
                "IKE SA rekey collision won"
            );
            ctx.sa_ops.push(SaOp::MoveChildren {
                from: theirs,
                to: new.id,
            });
            if self.life.delete_requested {
                ctx.sa_ops.push(SaOp::Delete(new.id));
            }
            ctx.event(Event::IkeSaRekeyed {
                old: theirs,
                new: new.id,
            });
            self.window.queue.clear();
            self.state = State::Rekeyed;
            self.life.expires = Some(ctx.now + ctx.config.half_open_timeout);
            self.window.queue.push_back(QueuedRequest::DeleteIke);
            new.start_next_request(ctx);
            ctx.new_sas.push(new);
            return;
        }
        info!(old = self.id, new = new.id, "IKE SA rekeyed");
        ctx.event(Event::IkeSaRekeyed {
            old: self.id,
            new: new.id,
        });
        if self.life.delete_requested {
            ctx.sa_ops.push(SaOp::Delete(new.id));
        }
        // Delete the old SA (§1.3.2); its CHILD_SAs already moved. If the
        // answer never comes, forget it after a while anyway.
        self.window.queue.clear();
        self.state = State::Rekeyed;
        self.life.expires = Some(ctx.now + ctx.config.half_open_timeout);
        self.window.queue.push_back(QueuedRequest::DeleteIke);
        new.start_next_request(ctx);
        ctx.new_sas.push(new);
    }

    /// Builds and sends a CREATE_CHILD_SA rekeying the IKE SA (§1.3.2).
    pub(super) fn start_rekey_ike(&mut self, ctx: &mut Ctx<'_>, group: Option<DhGroup>) {
        if self.state != State::Established {
            return;
        }
        let Some(mut suite) = self.crypto.suite else {
            return;
        };
        suite.dh = group.unwrap_or(suite.dh);
        let (Some(spi), Some(nonce)) = (ctx.spi64(), ctx.random::<32>()) else {
            return;
        };
        let Ok(share) = KeyShare::generate(suite.dh, ctx.rng) else {
            return;
        };
        let conn = self.conn(ctx);
        // Offer the configured proposals whose groups include the
        // current one, so our KE fits (§1.3.2).
        let props: Vec<proto::Proposal> = conn
            .ike_proposals
            .iter()
            .filter(|p| p.dh.contains(&suite.dh))
            .enumerate()
            .map(|(i, p)| {
                let mut p = p.clone();
                p.dh.retain(|g| *g == suite.dh);
                p.to_wire(i as u8 + 1, spi.to_be_bytes().to_vec())
            })
            .collect();
        let payloads = vec![
            Payload::Sa(props),
            Payload::Nonce(nonce.to_vec()),
            Payload::Ke(KeyExchange {
                group: suite.dh.number(),
                data: share.public().to_vec(),
            }),
        ];
        let offer = IkeRekeyOffer {
            spi,
            nonce: nonce.to_vec(),
            share,
        };
        self.send_request(
            ctx,
            ExchangeType::CREATE_CHILD_SA,
            &payloads,
            BuiltRequest::RekeyIke(offer),
        );
    }
}
