//! IKE_AUTH (RFC 7296 §1.2, §2.15) with a pre-shared key or a certificate
//! ([`super::pubkey`]), in both roles:
//! authentication, the first CHILD_SA (built in [`super::child`]), virtual
//! IPs in the configuration payload (§2.19) and MOBIKE_SUPPORTED
//! (RFC 4555 §3.2).

use std::net::IpAddr;

use tracing::{info, warn};

use crate::engine::{Ctx, DeleteReason, EndpointConfig, Event, vip};
use crate::{
    proposal,
    proto::{self, ExchangeType, NotifyType, Payload},
};

use super::{
    BuiltRequest, ChildOffer, ChildRefusal, IkeSa, SaOp, State, find, first_error, notify,
    notify_of, pubkey, sa_of,
};

impl IkeSa {
    pub(super) fn start_auth(&mut self, ctx: &mut Ctx<'_>) {
        let conn = self.conn(ctx);
        let Some(keys) = self.crypto.keys.as_ref() else {
            return;
        };
        let id_body = proto::id_payload_body(&conn.local_id);
        let who = pubkey::Signer {
            initiator: true,
            real_message: &self.init.request,
            peer_nonce: &self.crypto.nr,
        };
        let (certs, auth, used) = match pubkey::our_auth(
            conn,
            keys,
            who,
            &id_body,
            &self.init.peer_hashes,
            self.init.peer_certreq.as_deref(),
        ) {
            Ok(a) => a,
            Err(why) => {
                warn!(sa = self.id, why, "IKE_AUTH: cannot authenticate ourselves");
                self.destroy(ctx, DeleteReason::Negotiation);
                return;
            }
        };
        self.local_auth = Some(used);
        let mut payloads = vec![Payload::IdI(conn.local_id.clone())];
        payloads.extend(certs);
        payloads.extend(pubkey::certreq(std::iter::once(conn)));
        payloads.push(Payload::IdR(conn.remote_id.clone()));
        payloads.push(Payload::Auth(auth));
        if self.init.initial_contact {
            payloads.push(notify(NotifyType::INITIAL_CONTACT, vec![]));
        }
        if conn.mobike {
            payloads.push(notify(NotifyType::MOBIKE_SUPPORTED, vec![]));
            // RFC 4555 §3.4: our other addresses, beside MOBIKE_SUPPORTED.
            payloads.extend(self.auth_address_payloads(ctx));
        }
        if !conn.vips.is_empty() {
            payloads.push(Payload::Config(vip::request(&conn.vips)));
        }
        let offer = if conn.children.is_empty() {
            None
        } else {
            self.child_offer(ctx, 0, None, false, None)
        };
        if let Some(o) = &offer {
            payloads.extend(self.child_payloads(ctx, o));
        }
        self.state = State::AuthSent;
        self.send_request(
            ctx,
            ExchangeType::IKE_AUTH,
            &payloads,
            BuiltRequest::Auth(offer),
        );
    }

    /// Answers the peer's IKE_AUTH request with an error notify and ends
    /// the IKE SA.
    fn refuse_auth(
        &mut self,
        ctx: &mut Ctx<'_>,
        msg_id: u32,
        error: NotifyType,
        reason: DeleteReason,
    ) {
        self.respond(
            ctx,
            ExchangeType::IKE_AUTH,
            msg_id,
            &[notify(error, vec![])],
        );
        self.destroy(ctx, reason);
    }

    pub(super) fn respond_auth(&mut self, ctx: &mut Ctx<'_>, msg_id: u32, p: &[Payload]) {
        let idi = find(p, |x| match x {
            Payload::IdI(i) => Some(i.clone()),
            _ => None,
        });
        let auth = find(p, |x| match x {
            Payload::Auth(a) => Some(a.clone()),
            _ => None,
        });
        let (Some(idi), Some(auth)) = (idi, auth) else {
            self.refuse_auth(
                ctx,
                msg_id,
                NotifyType::INVALID_SYNTAX,
                DeleteReason::Negotiation,
            );
            return;
        };
        let Some(suite) = self.crypto.suite else {
            return;
        };
        // The connection: same peer identity, same IKE algorithms acceptable.
        let cfg: &EndpointConfig = ctx.config;
        let wire = proposal::ike_suite_to_wire(suite, 1, vec![]);
        let conn = cfg.connections.iter().enumerate().find(|(_, c)| {
            c.remote_id == idi
                && c.accepts_peer(self.path.remote.ip())
                && c.ike_proposals.iter().any(|p| p.select(&wire).is_some())
        });
        let who = pubkey::Signer {
            initiator: true,
            real_message: &self.init.request,
            peer_nonce: &self.crypto.nr,
        };
        let checked = match (conn, self.crypto.keys.as_ref()) {
            (Some((i, c)), Some(keys)) => {
                pubkey::check_peer(ctx, c, keys, who, &idi, &auth, p).map(|v| (i, v))
            }
            _ => Err("no connection for this identity, address and proposal".to_owned()),
        };
        let (conn_idx, (peer_auth, peer_cert)) = match checked {
            Ok(x) => x,
            Err(why) => {
                self.refused(&idi, &why);
                self.refuse_auth(
                    ctx,
                    msg_id,
                    NotifyType::AUTHENTICATION_FAILED,
                    DeleteReason::AuthenticationFailed,
                );
                return;
            }
        };
        self.remote_auth = Some(peer_auth);
        self.peer_cert = peer_cert;
        self.conn = conn_idx;
        pubkey::merge_certreq(&mut self.init.peer_certreq, pubkey::peer_certreq(p));
        if notify_of(p, NotifyType::INITIAL_CONTACT).is_some() {
            // §2.4: the peer restarted; what we still have with it is stale.
            ctx.sa_ops.push(SaOp::PurgeStale {
                keep: self.id,
                conn: conn_idx,
            });
        }
        let conn = self.conn(ctx);
        let Some(keys) = self.crypto.keys.as_ref() else {
            return;
        };
        let who = pubkey::Signer {
            initiator: false,
            real_message: &self.init.response,
            peer_nonce: &self.crypto.ni,
        };
        let (certs, our_auth, used) = match pubkey::our_auth(
            conn,
            keys,
            who,
            &proto::id_payload_body(&conn.local_id),
            &self.init.peer_hashes,
            self.init.peer_certreq.as_deref(),
        ) {
            Ok(a) => a,
            Err(why) => {
                warn!(sa = self.id, why, "IKE_AUTH: cannot authenticate ourselves");
                self.refuse_auth(
                    ctx,
                    msg_id,
                    NotifyType::AUTHENTICATION_FAILED,
                    DeleteReason::AuthenticationFailed,
                );
                return;
            }
        };
        self.local_auth = Some(used);
        self.peer_mobike = conn.mobike && notify_of(p, NotifyType::MOBIKE_SUPPORTED).is_some();
        let mut payloads = vec![Payload::IdR(conn.local_id.clone())];
        payloads.extend(certs);
        payloads.push(Payload::Auth(our_auth));
        if self.peer_mobike {
            payloads.push(notify(NotifyType::MOBIKE_SUPPORTED, vec![]));
            // RFC 4555 §3.4: the responder lists its other addresses too.
            payloads.extend(self.auth_address_payloads(ctx));
        }
        let address_failed = !self.assign_vips(ctx, &idi, p, &mut payloads);
        let (ni, nr) = (self.crypto.ni.clone(), self.crypto.nr.clone());
        let child = if address_failed {
            // §3.15.4: no address, no CHILD_SA; the IKE SA stays.
            Some(Err(ChildRefusal(
                NotifyType::INTERNAL_ADDRESS_FAILURE,
                vec![],
            )))
        } else if sa_of(p).is_some() {
            Some(self.accept_child(ctx, p, None, &ni, &nr, true))
        } else {
            None
        };
        match &child {
            Some(Ok((payl, _, _))) => payloads.extend(payl.iter().cloned()),
            Some(Err(ChildRefusal(n, data))) => payloads.push(notify(*n, data.clone())),
            None => {}
        }
        self.respond(ctx, ExchangeType::IKE_AUTH, msg_id, &payloads);
        self.become_established(ctx);
        self.take_peer_addresses(ctx, ExchangeType::IKE_AUTH, p);
        if let Some(Ok((_, c, keys))) = child {
            self.install_child(ctx, c, keys, false);
        } else if let Some(Err(ChildRefusal(n, _))) = child {
            ctx.event(Event::ChildSaFailed {
                sa: self.id,
                child: String::new(),
                reason: n,
            });
        }
    }

    /// As responder, the virtual IPs a CFG_REQUEST asks for, from the
    /// connection's pools (§2.19): the CFG_REPLY goes into `payloads`.
    /// False when addresses were asked for and none could be assigned
    /// (every pool of the family in use, or none of it); a request to a
    /// connection without pools is ignored (§3.15.4 lets the responder).
    pub(super) fn assign_vips(
        &mut self,
        ctx: &mut Ctx<'_>,
        peer: &proto::Identification,
        p: &[Payload],
        payloads: &mut Vec<Payload>,
    ) -> bool {
        let conn = self.conn(ctx);
        let Some(cp) = find(p, |x| match x {
            Payload::Config(c) => Some(c.clone()),
            _ => None,
        }) else {
            return true;
        };
        let asked = vip::requested(&cp);
        if asked.is_empty() || conn.pools.is_empty() {
            return true;
        }
        let mut owner = vec![peer.ty.0];
        owner.extend_from_slice(&peer.data);
        let mut got: Vec<IpAddr> = Vec::new();
        for (v6, wanted) in asked {
            // One address per family, however many the peer asks for: a
            // request cannot drain the pool.
            if got.iter().any(|a| a.is_ipv6() == v6) {
                continue;
            }
            let lease = conn
                .pools
                .iter()
                .filter(|pool| pool.is_ipv6() == v6)
                .find_map(|pool| ctx.leases.acquire(pool, wanted, &owner, self.id));
            match lease {
                Some(a) => got.push(a),
                None => warn!(sa = self.id, ipv6 = v6, "no virtual IP left to hand out"),
            }
        }
        if got.is_empty() {
            return false;
        }
        info!(sa = self.id, vips = ?got, "virtual IPs handed out");
        payloads.push(Payload::Config(vip::reply(&got)));
        self.vips.peers = got;
        true
    }

    pub(super) fn become_established(&mut self, ctx: &mut Ctx<'_>) {
        let conn = self.conn(ctx);
        self.state = State::Established;
        self.life.expires = None;
        self.rekey.at = ctx.rekey_at(conn.timers.ike_rekey_time, conn.timers.ike_rand_time);
        info!(sa = self.id, conn = %conn.name, local = %self.path.local, remote = %self.path.remote, "IKE SA established");
        ctx.event(Event::IkeSaEstablished {
            sa: self.id,
            connection: conn.name.clone(),
            initiator: self.initiator,
            path: self.path,
            mobike: self.peer_mobike,
        });
    }

    /// Completes our IKE_AUTH (initiator): the peer's AUTH, then the first
    /// CHILD_SA.
    pub(super) fn complete_auth(
        &mut self,
        ctx: &mut Ctx<'_>,
        offer: Option<ChildOffer>,
        p: &[Payload],
    ) {
        let conn = self.conn(ctx);
        let idr = find(p, |x| match x {
            Payload::IdR(i) => Some(i.clone()),
            _ => None,
        });
        let auth = find(p, |x| match x {
            Payload::Auth(a) => Some(a.clone()),
            _ => None,
        });
        let (Some(idr), Some(auth)) = (idr, auth) else {
            let reason = match first_error(p) {
                Some(NotifyType::AUTHENTICATION_FAILED) => DeleteReason::AuthenticationFailed,
                Some(n) => DeleteReason::PeerError(n),
                None => DeleteReason::Negotiation,
            };
            warn!(sa = self.id, ?reason, "IKE_AUTH refused by the peer");
            self.destroy(ctx, reason);
            return;
        };
        let who = pubkey::Signer {
            initiator: false,
            real_message: &self.init.response,
            peer_nonce: &self.crypto.ni,
        };
        let checked = if idr != conn.remote_id {
            Err(pubkey::identity_mismatch(&idr, &conn.remote_id))
        } else {
            match self.crypto.keys.as_ref() {
                Some(k) => pubkey::check_peer(ctx, conn, k, who, &idr, &auth, p),
                None => Err("no keys".to_owned()),
            }
        };
        let ok = match checked {
            Ok((used, cert)) => {
                self.remote_auth = Some(used);
                self.peer_cert = cert;
                true
            }
            Err(why) => {
                self.refused(&idr, &why);
                false
            }
        };
        if !ok {
            warn!(
                sa = self.id,
                "IKE_AUTH: the responder's AUTH does not verify"
            );
            // §2.21.2: tell the peer, once, then forget the SA.
            let payloads = [notify(NotifyType::AUTHENTICATION_FAILED, vec![])];
            let msg_id = self.window.next_msg_id;
            if let Some(b) = self.seal(
                self.header(ExchangeType::INFORMATIONAL, msg_id, false),
                &payloads,
            ) {
                ctx.send(self.path, ctx.config.nat_t_port, &b);
            }
            self.destroy(ctx, DeleteReason::AuthenticationFailed);
            return;
        }
        self.peer_mobike = conn.mobike && notify_of(p, NotifyType::MOBIKE_SUPPORTED).is_some();
        self.become_established(ctx);
        self.take_peer_addresses(ctx, ExchangeType::IKE_AUTH, p);
        // Our addresses may have changed since the request listed them.
        self.announce_if_changed(ctx);
        self.pin_nat_mapping(ctx);
        if !conn.vips.is_empty() {
            let cp = find(p, |x| match x {
                Payload::Config(c) => Some(c.clone()),
                _ => None,
            });
            let (addrs, dns) = cp.as_ref().map(vip::assigned).unwrap_or_default();
            if addrs.is_empty() {
                warn!(sa = self.id, "the peer assigned no virtual IP");
            } else {
                info!(sa = self.id, vips = ?addrs, dns = ?dns, "virtual IPs assigned");
                self.vips.ours = addrs.clone();
                self.vips.dns = dns.clone();
                ctx.event(Event::VirtualIps {
                    sa: self.id,
                    addrs,
                    dns,
                });
            }
        }
        if let Some(offer) = offer {
            self.complete_child(ctx, offer, p, true);
        }
    }
}
