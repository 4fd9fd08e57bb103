//! CHILD_SAs (RFC 7296 §1.3.1, §1.3.3): offers and the answers to them in
//! IKE_AUTH and CREATE_CHILD_SA, traffic selector narrowing (§2.9), the
//! kernel install, rekeys and their collisions (§2.8.1), and the commands
//! and kernel expiries that start them.

use super::*;

impl IkeSa {
    pub(in crate::engine) fn command_rekey_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        spi: u32,
    ) -> Result<(), crate::engine::CommandError> {
        self.command_on_child(ctx, spi, QueuedRequest::RekeyChild(spi, None))
    }

    /// An ESP SA of the CHILD_SA `spi` (inbound SPI) reached a kernel
    /// limit ([`crate::engine::Command::ChildSaExpired`]).
    pub(in crate::engine) fn child_expired(
        &mut self,
        ctx: &mut Ctx<'_>,
        spi: u32,
        hard: bool,
    ) -> Result<(), crate::engine::CommandError> {
        let Some(child) = self.children.iter_mut().find(|c| c.inbound_spi == spi) else {
            return Err(crate::engine::CommandError::UnknownChild {
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
    ) -> Result<(), crate::engine::CommandError> {
        self.require_established()?;
        if cfg >= self.conn(ctx).children.len() {
            return Err(crate::engine::CommandError::UnknownChild {
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

    pub(super) fn encap(&self) -> Option<UdpEncap> {
        (self.nat.local_behind || self.nat.remote_behind).then_some(UdpEncap {
            local_port: self.path.local.port(),
            remote_port: self.path.remote.port(),
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
            local: self.path.local.ip(),
            remote: self.path.remote.ip(),
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
            match nonce_of(p) {
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

    pub(super) fn handle_create_child(&mut self, ctx: &mut Ctx<'_>, id: u32, p: &[Payload]) {
        let Some(ni) = nonce_of(p) else {
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
