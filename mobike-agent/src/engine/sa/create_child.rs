//! CREATE_CHILD_SA for CHILD_SAs (RFC 7296 §1.3.1, §1.3.3), in both roles:
//! the commands and kernel expiries that queue a new CHILD_SA or a rekey,
//! building those requests, answering the peer's, and simultaneous CHILD_SA
//! rekeys (§2.8.1). The negotiation itself (offers, selectors, the answer,
//! the install) is shared with IKE_AUTH in [`super::child`].

use tracing::{debug, info, warn};

use crate::engine::{CommandError, Ctx, Event};
use crate::{
    crypto::DhGroup,
    proto::{ExchangeType, KeyExchange, Notify, NotifyType, Payload, ProtocolId},
};

use super::{
    BuiltRequest, ChildOffer, ChildRefusal, ChildState, IkeSa, QueuedRequest, SentRequest, State,
    notify, notify_of, sa_of,
};

impl IkeSa {
    pub(in crate::engine) fn command_rekey_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        spi: u32,
    ) -> Result<(), CommandError> {
        self.command_on_child(ctx, spi, QueuedRequest::RekeyChild(spi, None))
    }

    /// An ESP SA of the CHILD_SA `spi` (inbound SPI) reached a kernel
    /// limit ([`Command::ChildSaExpired`](crate::engine::Command::ChildSaExpired)).
    pub(in crate::engine) fn child_expired(
        &mut self,
        ctx: &mut Ctx<'_>,
        spi: u32,
        hard: bool,
    ) -> Result<(), CommandError> {
        let Some(child) = self.children.iter_mut().find(|c| c.inbound_spi == spi) else {
            return Err(CommandError::UnknownChild {
                sa: self.id,
                what: format!("{spi:#010x}"),
            });
        };
        if child.state != ChildState::Installed {
            // Being rekeyed or deleted already: its end is near anyway.
            debug!(sa = self.id, child = format_args!("{spi:#010x}"), hard, state = ?child.state,
                   "kernel limit reached by a CHILD_SA already on its way out");
            return Ok(());
        }
        if hard {
            // RFC 7296 §2.8: an SA past its lifetime is deleted, not used.
            warn!(
                sa = self.id,
                child = format_args!("{spi:#010x}"),
                "CHILD_SA reached its hard limit in the kernel: deleting it"
            );
            self.window
                .queue
                .push_back(QueuedRequest::DeleteChild(vec![spi]));
        } else {
            info!(
                sa = self.id,
                child = format_args!("{spi:#010x}"),
                "CHILD_SA reached its soft limit in the kernel: rekeying"
            );
            child.rekey_at = None;
            self.window
                .queue
                .push_back(QueuedRequest::RekeyChild(spi, None));
        }
        self.start_next_request(ctx);
        Ok(())
    }

    pub(in crate::engine) fn command_create_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        cfg: usize,
    ) -> Result<(), CommandError> {
        self.require_established()?;
        if cfg >= self.conn(ctx).children.len() {
            return Err(CommandError::UnknownChild {
                sa: self.id,
                what: format!("config #{cfg}"),
            });
        }
        self.window
            .queue
            .push_back(QueuedRequest::CreateChild(cfg, None));
        self.start_next_request(ctx);
        Ok(())
    }

    pub(super) fn create_child_payloads(&self, ctx: &Ctx<'_>, offer: &ChildOffer) -> Vec<Payload> {
        let mut v = self.child_payloads(ctx, offer);
        // SA, Ni, [KEi], TSi, TSr (§1.3.1)
        v.insert(1, Payload::Nonce(offer.nonce.clone()));
        if let Some(s) = &offer.share {
            v.insert(
                2,
                Payload::Ke(KeyExchange {
                    group: s.group().number(),
                    data: s.public().to_vec(),
                }),
            );
        }
        v
    }

    /// §2.8.1: when both ends rekeyed the same CHILD_SA, the new SA made with
    /// the lowest of the four nonces is deleted by whoever initiated it.
    /// Returns, when this completed a collision, whether the redundant
    /// SA is one we created.
    pub(super) fn resolve_rekey_collision(
        &mut self,
        ctx: &mut Ctx<'_>,
        new_spi: u32,
    ) -> Option<bool> {
        let origin = self
            .children
            .iter()
            .find(|c| c.inbound_spi == new_spi)
            .and_then(|c| c.rekey_origin.clone())?;
        let sibling = self.children.iter().find(|c| {
            c.inbound_spi != new_spi
                && c.rekey_origin.as_ref().is_some_and(|o| {
                    o.old_inbound_spi == origin.old_inbound_spi && o.by_us != origin.by_us
                })
        });
        let sibling = sibling?;
        let sib_spi = sibling.inbound_spi;
        let sib_origin = sibling.rekey_origin.clone()?;
        let (loser_spi, loser_by_us) = if origin.min_nonce < sib_origin.min_nonce {
            (new_spi, origin.by_us)
        } else {
            (sib_spi, sib_origin.by_us)
        };
        debug!(
            sa = self.id,
            loser = format_args!("{loser_spi:#010x}"),
            by_us = loser_by_us,
            "CHILD_SA rekey collision"
        );
        ctx.stats.rekey_collisions += 1;
        if loser_by_us {
            if let Some(c) = self
                .children
                .iter_mut()
                .find(|c| c.inbound_spi == loser_spi)
            {
                c.state = ChildState::Rekeyed;
                c.rekey_at = None;
            }
            self.window
                .queue
                .push_back(QueuedRequest::DeleteChild(vec![loser_spi]));
        }
        // Both new SAs are now known: forget the collision bookkeeping.
        for c in &mut self.children {
            if c.inbound_spi == new_spi || c.inbound_spi == sib_spi {
                c.rekey_origin = None;
            }
        }
        Some(loser_by_us)
    }

    pub(super) fn respond_create_child(&mut self, ctx: &mut Ctx<'_>, id: u32, p: &[Payload]) {
        let Some(ni) = self.peer_nonce(p) else {
            self.respond(
                ctx,
                ExchangeType::CREATE_CHILD_SA,
                id,
                &[notify(NotifyType::INVALID_SYNTAX, vec![])],
            );
            return;
        };
        let Some(nr) = ctx.random::<32>().map(|n| n.to_vec()) else {
            return;
        };
        // IKE SA rekey: an SA payload with protocol IKE (§1.3.2).
        if sa_of(p).is_some_and(|s| s.iter().any(|x| x.protocol == ProtocolId::IKE)) {
            self.respond_ike_rekey(ctx, id, p, ni, nr);
            return;
        }
        // §2.25.1: no CHILD_SA changes while we rekey the IKE SA; the
        // CHILD_SA would end up on the wrong IKE SA.
        if matches!(
            self.window.in_flight,
            Some(SentRequest {
                request: Some(BuiltRequest::RekeyIke(_)),
                ..
            })
        ) {
            let n = notify(NotifyType::TEMPORARY_FAILURE, vec![]);
            self.respond(ctx, ExchangeType::CREATE_CHILD_SA, id, &[n]);
            return;
        }
        let rekey = notify_of(p, NotifyType::REKEY_SA).filter(|n| n.protocol == ProtocolId::ESP);
        let old_idx = match rekey {
            Some(n) => {
                let spi = <[u8; 4]>::try_from(n.spi.as_slice())
                    .map(u32::from_be_bytes)
                    .ok();
                // §1.3.3: the SPI is the one the initiator expects inbound,
                // i.e. our outbound SPI.
                match spi.and_then(|s| self.children.iter().position(|c| c.outbound_spi == s)) {
                    // §2.25.1: we are deleting it (or replaced it and will):
                    // not now.
                    Some(i)
                        if matches!(
                            self.children[i].state,
                            ChildState::Deleting | ChildState::Rekeyed
                        ) =>
                    {
                        let n = notify(NotifyType::TEMPORARY_FAILURE, vec![]);
                        self.respond(ctx, ExchangeType::CREATE_CHILD_SA, id, &[n]);
                        return;
                    }
                    Some(i) => Some(i),
                    None => {
                        let n = Payload::Notify(Notify {
                            protocol: ProtocolId::ESP,
                            spi: n.spi.clone(),
                            ty: NotifyType::CHILD_SA_NOT_FOUND,
                            data: vec![],
                        });
                        self.respond(ctx, ExchangeType::CREATE_CHILD_SA, id, &[n]);
                        return;
                    }
                }
            }
            None => None,
        };
        let old = old_idx.map(|i| &self.children[i]);
        match self.accept_child(ctx, p, old, &ni, &nr, false) {
            Ok((payloads, child, keys)) => {
                self.respond(ctx, ExchangeType::CREATE_CHILD_SA, id, &payloads);
                if let Some(i) = old_idx
                    && self.children[i].state == ChildState::Installed
                {
                    // The peer deletes the old one after this (§1.3.3).
                    self.children[i].state = ChildState::Rekeyed;
                    self.children[i].rekey_at = None;
                }
                self.install_child(ctx, child, keys, false);
            }
            Err(ChildRefusal(reason, data)) => {
                self.respond(
                    ctx,
                    ExchangeType::CREATE_CHILD_SA,
                    id,
                    &[notify(reason, data)],
                );
                ctx.event(Event::ChildSaFailed {
                    sa: self.id,
                    child: String::new(),
                    reason,
                });
            }
        }
    }

    /// Builds and sends a CREATE_CHILD_SA rekeying the CHILD_SA `spi`
    /// (§1.3.3).
    pub(super) fn start_rekey_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        spi: u32,
        group: Option<DhGroup>,
    ) {
        if self.state != State::Established {
            return;
        }
        let Some(idx) = self
            .children
            .iter()
            .position(|c| c.inbound_spi == spi && c.state == ChildState::Installed)
        else {
            return;
        };
        let cfg = self.children[idx].cfg;
        let pfs = self
            .conn(ctx)
            .children
            .get(cfg)
            .is_some_and(|c| c.esp_proposals.iter().any(|p| !p.dh.is_empty()));
        let Some(offer) = self.child_offer(ctx, cfg, Some(&self.children[idx]), pfs, group) else {
            return;
        };
        self.children[idx].state = ChildState::Rekeying;
        let mut payloads = vec![Payload::Notify(Notify {
            protocol: ProtocolId::ESP,
            spi: spi.to_be_bytes().to_vec(),
            ty: NotifyType::REKEY_SA,
            data: vec![],
        })];
        payloads.extend(self.create_child_payloads(ctx, &offer));
        self.send_request(
            ctx,
            ExchangeType::CREATE_CHILD_SA,
            &payloads,
            BuiltRequest::CreateChild(offer),
        );
    }

    /// Builds and sends a CREATE_CHILD_SA for child config `cfg` (§1.3.1).
    pub(super) fn start_create_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        cfg: usize,
        group: Option<DhGroup>,
    ) {
        if self.state != State::Established {
            return;
        }
        let pfs = self
            .conn(ctx)
            .children
            .get(cfg)
            .is_some_and(|c| c.esp_proposals.iter().any(|p| !p.dh.is_empty()));
        let Some(offer) = self.child_offer(ctx, cfg, None, pfs, group) else {
            return;
        };
        let payloads = self.create_child_payloads(ctx, &offer);
        self.send_request(
            ctx,
            ExchangeType::CREATE_CHILD_SA,
            &payloads,
            BuiltRequest::CreateChild(offer),
        );
    }
}
