//! Negotiating a CHILD_SA (RFC 7296 §1.3.1, §1.3.3), shared by IKE_AUTH and
//! CREATE_CHILD_SA: our offer and its payloads, our selectors (§2.9
//! narrowing, virtual IPs), accepting the peer's offer as responder,
//! completing the answer to ours as initiator, and the kernel install. The
//! CREATE_CHILD_SA exchange around it is in [`super::create_child`].

use std::net::IpAddr;

use tracing::{debug, info, warn};

use crate::engine::{ChildSaInstall, Ctx, EspSa, Event, KernelAction, Mode, UdpEncap, config};
use crate::{
    crypto::{ChildKeys, DhGroup, KeyShare},
    proposal,
    proto::{self, KeyExchange, Notify, NotifyType, Payload, TrafficSelector},
};

use super::{
    Child, ChildOffer, ChildRefusal, ChildState, IkeSa, QueuedRequest, REKEY_RETRY_FACTOR,
    RekeyOrigin, first_error, host_selectors, ke_of, min_nonce, notify, notify_of, sa_of, ts_of,
};

impl IkeSa {
    /// UDP encapsulation of the CHILD_SAs, on the pair ESP uses
    /// ([`IkeSa::esp_path`]).
    pub(super) fn encap(&self) -> Option<UdpEncap> {
        let esp = self.esp_path();
        (self.nat.local_behind || self.nat.remote_behind).then_some(UdpEncap {
            local_port: esp.local.port(),
            remote_port: esp.remote.port(),
        })
    }

    pub(super) fn child_offer(
        &self,
        ctx: &mut Ctx<'_>,
        cfg: usize,
        rekey_of: Option<&Child>,
        pfs: bool,
        group: Option<DhGroup>,
    ) -> Option<ChildOffer> {
        let child = self.conn(ctx).children.get(cfg)?;
        let group = if pfs {
            group.or_else(|| {
                child
                    .esp_proposals
                    .first()
                    .and_then(|p| p.dh.first().copied())
            })
        } else {
            None
        };
        let share = match group {
            Some(g) => Some(KeyShare::generate(g, ctx.rng).ok()?),
            None => None,
        };
        Some(ChildOffer {
            cfg,
            spi: ctx.spi32()?,
            nonce: ctx.random::<32>()?.to_vec(),
            share,
            rekey_of: rekey_of.map(|c| c.inbound_spi),
            local_ts: rekey_of.map_or_else(
                || self.own_selectors(&self.conn(ctx).vips, &child.local_ts),
                |c| c.local_ts.clone(),
            ),
            remote_ts: rekey_of.map_or_else(|| child.remote_ts.clone(), |c| c.remote_ts.clone()),
        })
    }

    /// Our selectors for a new CHILD_SA: the configured ones; without
    /// any, our virtual IPs once assigned, before that the whole of each
    /// family asked for, for the peer to narrow to what it assigns
    /// (§2.19, §3.15.4).
    pub(super) fn own_selectors(
        &self,
        asked: &[IpAddr],
        configured: &[TrafficSelector],
    ) -> Vec<TrafficSelector> {
        if !configured.is_empty() {
            return configured.to_vec();
        }
        if !self.vips.ours.is_empty() {
            return host_selectors(&self.vips.ours);
        }
        let mut out: Vec<TrafficSelector> = Vec::new();
        for a in asked {
            let whole = if a.is_ipv6() { "::/0" } else { "0.0.0.0/0" };
            if let Ok(t) = config::parse_ts(whole)
                && !out.contains(&t)
            {
                out.push(t);
            }
        }
        out
    }

    pub(super) fn child_payloads(&self, ctx: &Ctx<'_>, offer: &ChildOffer) -> Vec<Payload> {
        let child = &self.conn(ctx).children[offer.cfg];
        let with_dh = offer.share.is_some();
        vec![
            Payload::Sa(
                child
                    .esp_proposals
                    .iter()
                    .enumerate()
                    .map(|(i, p)| p.to_wire(i as u8 + 1, offer.spi, with_dh))
                    .collect(),
            ),
            Payload::TsI(offer.local_ts.clone()),
            Payload::TsR(offer.remote_ts.clone()),
        ]
        .into_iter()
        // §1.3.1; again with each rekey (§1.3.3).
        .chain(
            (child.mode == Mode::Transport).then(|| notify(NotifyType::USE_TRANSPORT_MODE, vec![])),
        )
        .collect()
    }

    /// Responder side of a CHILD_SA negotiation (IKE_AUTH or
    /// CREATE_CHILD_SA): picks child config, proposal and selectors.
    /// Returns the payloads of the answer and the CHILD_SA to install.
    pub(super) fn accept_child(
        &self,
        ctx: &mut Ctx<'_>,
        p: &[Payload],
        rekeying: Option<&Child>,
        ni: &[u8],
        nr: &[u8],
        in_auth: bool,
    ) -> Result<(Vec<Payload>, Child, ChildKeys), ChildRefusal> {
        let conn = self.conn(ctx);
        let props = sa_of(p).ok_or(NotifyType::INVALID_SYNTAX)?;
        let (tsi, tsr) = ts_of(p).ok_or(NotifyType::INVALID_SYNTAX)?;
        let ke = ke_of(p);
        let transport_asked = notify_of(p, NotifyType::USE_TRANSPORT_MODE).is_some();
        let mut chosen = None;
        let mut reason = NotifyType::TS_UNACCEPTABLE;
        for (ci, child) in conn.children.iter().enumerate() {
            if rekeying.is_some_and(|r| r.cfg != ci) {
                continue;
            }
            // TSi are the initiator's (= the peer's) selectors; a peer we
            // gave addresses gets its addresses.
            let mut remote_ts = config::narrow(tsi, &child.remote_ts);
            if !self.vips.peers.is_empty() {
                remote_ts = config::narrow(&remote_ts, &host_selectors(&self.vips.peers));
            }
            let local_ts = config::narrow(tsr, &child.local_ts);
            if remote_ts.is_empty() || local_ts.is_empty() {
                continue;
            }
            reason = NotifyType::NO_PROPOSAL_CHOSEN;
            // A transport-mode child is not for a peer that wants a tunnel
            // (a tunnel child takes a peer that asks for transport mode, as
            // §1.3.1 allows, and answers without the notify).
            if child.mode == Mode::Transport && !transport_asked {
                continue;
            }
            let pick = props.iter().find_map(|offered| {
                child
                    .esp_proposals
                    .iter()
                    .find_map(|ours| Some((offered, ours.select(offered, ke.is_some())?)))
            });
            if let Some((offered, suite)) = pick {
                chosen = Some((ci, offered, suite, local_ts, remote_ts));
                break;
            }
        }
        let (ci, offered, mut suite, local_ts, remote_ts) = chosen.ok_or(reason)?;
        // Prefer the group the initiator already sent a KE for.
        if let (Some(_), Some(ke)) = (suite.dh, ke)
            && let Some(g) = DhGroup::from_number(ke.group)
            && conn.children[ci]
                .esp_proposals
                .iter()
                .any(|x| x.dh.contains(&g))
            && offered
                .transforms
                .iter()
                .any(|t| t.ty == proto::TransformType::DH && t.id == ke.group)
        {
            suite.dh = Some(g);
        }
        let peer_spi = u32::from_be_bytes(
            offered
                .spi
                .as_slice()
                .try_into()
                .map_err(|_| NotifyType::INVALID_SYNTAX)?,
        );
        let mut payloads = Vec::new();
        let mut shared = None;
        let spi = ctx.spi32().ok_or(NotifyType::TEMPORARY_FAILURE)?;
        payloads.push(Payload::Sa(vec![proposal::esp_suite_to_wire(
            suite,
            offered.number,
            spi,
        )]));
        if !in_auth {
            // CREATE_CHILD_SA answer: SA, Nr, [KEr], TSi, TSr (§1.3.1).
            payloads.push(Payload::Nonce(nr.to_vec()));
        }
        if let (Some(g), Some(ke)) = (suite.dh, ke) {
            if ke.group != g.number() {
                // §1.3.1 / §3.10.1: name the group we want.
                return Err(ChildRefusal(
                    NotifyType::INVALID_KE_PAYLOAD,
                    g.number().to_be_bytes().to_vec(),
                ));
            }
            let s = KeyShare::generate(g, ctx.rng).map_err(|_| NotifyType::TEMPORARY_FAILURE)?;
            payloads.push(Payload::Ke(KeyExchange {
                group: g.number(),
                data: s.public().to_vec(),
            }));
            shared = Some(s.agree(&ke.data).map_err(|_| NotifyType::INVALID_SYNTAX)?);
        }
        payloads.push(Payload::TsI(remote_ts.clone()));
        payloads.push(Payload::TsR(local_ts.clone()));
        let mode = if transport_asked && conn.children[ci].mode == Mode::Transport {
            payloads.push(notify(NotifyType::USE_TRANSPORT_MODE, vec![]));
            Mode::Transport
        } else {
            Mode::Tunnel
        };
        let keys = self
            .crypto
            .keys
            .as_ref()
            .ok_or(NotifyType::TEMPORARY_FAILURE)?
            .child_keys(suite.encr, shared.as_deref(), ni, nr)
            .map_err(|_| NotifyType::TEMPORARY_FAILURE)?;
        let reqid = rekeying.map_or_else(|| ctx.reqid(), |r| r.reqid);
        let child = Child {
            cfg: ci,
            mode,
            reqid,
            inbound_spi: spi,
            outbound_spi: peer_spi,
            suite,
            local_ts,
            remote_ts,
            state: ChildState::Installed,
            rekey_at: ctx.rekey_at(conn.children[ci].rekey_time, conn.children[ci].rand_time),
            rekey_origin: rekeying.map(|r| RekeyOrigin {
                old_inbound_spi: r.inbound_spi,
                min_nonce: min_nonce(ni, nr),
                by_us: false,
            }),
        };
        Ok((payloads, child, keys))
    }

    /// Hands the CHILD_SA to the kernel. Keys are not kept on the `Child`.
    /// `we_initiated`: we initiated the exchange that made it, so our
    /// inbound key is the responder-to-initiator one (§2.17).
    pub(super) fn install_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        child: Child,
        keys: ChildKeys,
        we_initiated: bool,
    ) -> Option<bool> {
        let (inbound_key, outbound_key) = if we_initiated {
            (keys.r_to_i, keys.i_to_r)
        } else {
            (keys.i_to_r, keys.r_to_i)
        };
        let conn = self.conn(ctx);
        let (name, limits) = conn
            .children
            .get(child.cfg)
            .map(|c| (c.name.clone(), c.limits))
            .unwrap_or_default();
        ctx.kernel(KernelAction::InstallChildSa(Box::new(ChildSaInstall {
            ike_sa: self.id,
            name: name.clone(),
            reqid: child.reqid,
            mode: child.mode,
            // Not on an address still under a return routability check.
            local: self.esp_path().local.ip(),
            remote: self.esp_path().remote.ip(),
            encap: self.encap(),
            inbound: EspSa {
                spi: child.inbound_spi,
                aead: child.suite.encr,
                key: inbound_key,
            },
            outbound: EspSa {
                spi: child.outbound_spi,
                aead: child.suite.encr,
                key: outbound_key,
            },
            esn: child.suite.esn == proposal::Esn::Yes,
            local_ts: child.local_ts.clone(),
            remote_ts: child.remote_ts.clone(),
            limits,
        })));
        info!(sa = self.id, child = %name, inbound = format_args!("{:#010x}", child.inbound_spi),
              outbound = format_args!("{:#010x}", child.outbound_spi), "CHILD_SA installed");
        if let Some(origin) = child.rekey_origin.clone() {
            ctx.event(Event::ChildSaRekeyed {
                sa: self.id,
                old_inbound_spi: origin.old_inbound_spi,
                new_inbound_spi: child.inbound_spi,
            });
        } else {
            ctx.event(Event::ChildSaEstablished {
                sa: self.id,
                child: name,
                inbound_spi: child.inbound_spi,
                outbound_spi: child.outbound_spi,
            });
        }
        let new_spi = child.inbound_spi;
        self.children.push(child);
        self.resolve_rekey_collision(ctx, new_spi)
    }

    /// Initiator side: the peer's answer to our CHILD_SA offer.
    /// `in_auth`: the CHILD_SA came with IKE_AUTH and uses the IKE SA's
    /// nonces; otherwise the exchange's own.
    pub(super) fn complete_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        offer: ChildOffer,
        p: &[Payload],
        in_auth: bool,
    ) {
        let conn = self.conn(ctx);
        let name = conn
            .children
            .get(offer.cfg)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let fail = |ctx: &mut Ctx<'_>, sa: &mut IkeSa, reason: NotifyType| {
            warn!(sa = sa.id, child = %name, ?reason, "CHILD_SA not created");
            if let Some(old) = offer.rekey_of
                && let Some(c) = sa
                    .children
                    .iter_mut()
                    .find(|c| c.inbound_spi == old && c.state == ChildState::Rekeying)
            {
                // Keep the old CHILD_SA and try again later. Even after
                // CHILD_SA_NOT_FOUND: the peer may simply not have seen the
                // answer to the exchange that created it yet.
                c.state = ChildState::Installed;
                c.rekey_at = Some(ctx.now + conn.timers.retransmit_timeout * REKEY_RETRY_FACTOR);
            }
            ctx.event(Event::ChildSaFailed {
                sa: sa.id,
                child: name.clone(),
                reason,
            });
        };
        if let Some(err) = first_error(p) {
            // INVALID_KE_PAYLOAD (§1.3.1): retry at once with the group the
            // peer wants, if we accept it.
            let retry = notify_of(p, NotifyType::INVALID_KE_PAYLOAD)
                .and_then(Notify::invalid_ke_group)
                .and_then(DhGroup::from_number)
                .filter(|g| {
                    offer.share.as_ref().is_some_and(|s| s.group() != *g)
                        && conn.children[offer.cfg]
                            .esp_proposals
                            .iter()
                            .any(|x| x.dh.contains(g))
                });
            if let Some(g) = retry {
                debug!(sa = self.id, group = ?g, "CREATE_CHILD_SA: INVALID_KE_PAYLOAD, retrying");
                match offer.rekey_of {
                    Some(old) => {
                        if let Some(c) = self.children.iter_mut().find(|c| c.inbound_spi == old) {
                            c.state = ChildState::Installed;
                        }
                        self.window
                            .queue
                            .push_front(QueuedRequest::RekeyChild(old, Some(g)));
                    }
                    None => self
                        .window
                        .queue
                        .push_front(QueuedRequest::CreateChild(offer.cfg, Some(g))),
                }
                return;
            }
            fail(ctx, self, err);
            return;
        }
        let child_cfg = &conn.children[offer.cfg];
        let (Some(props), Some((tsi, tsr))) = (sa_of(p), ts_of(p)) else {
            fail(ctx, self, NotifyType::INVALID_SYNTAX);
            return;
        };
        let with_dh = offer.share.is_some();
        let suite = match props.as_slice() {
            [one] => child_cfg
                .esp_proposals
                .iter()
                .find_map(|ours| ours.select(one, with_dh))
                .map(|s| (one, s)),
            _ => None,
        };
        let ts_ok = !tsi.is_empty()
            && !tsr.is_empty()
            && tsi
                .iter()
                .all(|t| offer.local_ts.iter().any(|o| config::ts_contains(o, t)))
            && tsr
                .iter()
                .all(|t| offer.remote_ts.iter().any(|o| config::ts_contains(o, t)));
        let Some((chosen, suite)) = suite.filter(|_| ts_ok) else {
            fail(
                ctx,
                self,
                if ts_ok {
                    NotifyType::NO_PROPOSAL_CHOSEN
                } else {
                    NotifyType::TS_UNACCEPTABLE
                },
            );
            // The responder installed it: delete it again.
            if let [one] = props.as_slice()
                && one.spi.len() == 4
            {
                self.window
                    .queue
                    .push_back(QueuedRequest::DeleteRefused(offer.spi));
            }
            return;
        };
        let Ok(peer_spi) = <[u8; 4]>::try_from(chosen.spi.as_slice()).map(u32::from_be_bytes)
        else {
            fail(ctx, self, NotifyType::INVALID_SYNTAX);
            return;
        };
        let (ni, nr) = if in_auth {
            (self.crypto.ni.clone(), self.crypto.nr.clone())
        } else {
            match self.peer_nonce(p) {
                Some(n) => (offer.nonce.clone(), n),
                None => {
                    fail(ctx, self, NotifyType::INVALID_SYNTAX);
                    return;
                }
            }
        };
        let mut shared = None;
        if let Some(share) = offer.share {
            let Some(ke) = ke_of(p).filter(|k| k.group == share.group().number()) else {
                fail(ctx, self, NotifyType::INVALID_KE_PAYLOAD);
                return;
            };
            match share.agree(&ke.data) {
                Ok(s) => shared = Some(s),
                Err(_) => {
                    fail(ctx, self, NotifyType::INVALID_SYNTAX);
                    return;
                }
            }
        }
        let Some(keys) = self
            .crypto
            .keys
            .as_ref()
            .and_then(|k| k.child_keys(suite.encr, shared.as_deref(), &ni, &nr).ok())
        else {
            return;
        };
        let old = offer
            .rekey_of
            .and_then(|spi| self.children.iter().find(|c| c.inbound_spi == spi));
        let reqid = old.map_or_else(|| ctx.reqid(), |c| c.reqid);
        let transport = notify_of(p, NotifyType::USE_TRANSPORT_MODE).is_some();
        let mode = match child_cfg.mode {
            Mode::Transport if transport => Mode::Transport,
            Mode::Transport => {
                // §1.3.1: the responder keeps it a tunnel.
                warn!(sa = self.id, child = %name, "peer did not accept transport mode: the CHILD_SA is in tunnel mode");
                Mode::Tunnel
            }
            Mode::Tunnel => Mode::Tunnel,
        };
        let child = Child {
            cfg: offer.cfg,
            mode,
            reqid,
            inbound_spi: offer.spi,
            outbound_spi: peer_spi,
            suite,
            local_ts: tsi.clone(),
            remote_ts: tsr.clone(),
            state: ChildState::Installed,
            rekey_at: ctx.rekey_at(child_cfg.rekey_time, child_cfg.rand_time),
            rekey_origin: offer.rekey_of.map(|old| RekeyOrigin {
                old_inbound_spi: old,
                min_nonce: min_nonce(&ni, &nr),
                by_us: true,
            }),
        };
        let new_spi = child.inbound_spi;
        let old_exists = offer
            .rekey_of
            .is_some_and(|old| self.children.iter().any(|c| c.inbound_spi == old));
        let collision = self.install_child(ctx, child, keys, true);
        let Some(old) = offer.rekey_of else { return };
        if !old_exists {
            // The peer deleted the old SA while our rekey was in flight (it
            // rekeyed it too and won): ours is redundant.
            debug!(sa = self.id, "CHILD_SA rekey/delete collision");
            if let Some(c) = self.children.iter_mut().find(|c| c.inbound_spi == new_spi) {
                c.state = ChildState::Rekeyed;
                c.rekey_at = None;
            }
            self.window
                .queue
                .push_back(QueuedRequest::DeleteChild(vec![new_spi]));
            return;
        }
        if let Some(c) = self.children.iter_mut().find(|c| c.inbound_spi == old) {
            c.state = ChildState::Rekeyed;
            c.rekey_at = None;
        }
        // The rekey's initiator deletes the old SA (§1.3.3); after a
        // collision only the creator of the surviving SA does (§2.8.1).
        if collision != Some(true) {
            self.window
                .queue
                .push_back(QueuedRequest::DeleteChild(vec![old]));
        }
    }
}
