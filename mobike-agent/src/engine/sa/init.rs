//! IKE_SA_INIT (RFC 7296 §1.2) in both roles: the initiator's request and
//! its restarts on a cookie demand (§2.6) or INVALID_KE_PAYLOAD (§1.2), the
//! responder's stateless answers, and NAT detection (§2.23).

use tracing::{debug, info, warn};

use crate::engine::{Ctx, DeleteReason, Event, Path, cookie::CookieSecrets};
use crate::{
    crypto::{self, DhGroup, IkeKeys, KeyShare, Prf},
    proposal,
    proto::{self, ExchangeType, Header, KeyExchange, Message, Notify, NotifyType, Payload, flags},
};

use super::{
    IkeSa, MAX_INIT_RESTARTS, SentRequest, State, first_error, ke_of, nonce_of, notify, notify_of,
    pubkey, sa_of, unknown_critical,
};

/// A stateless IKE_SA_INIT answer (errors and cookie demands, §2.6, §2.7).
fn init_error_response(ctx: &mut Ctx<'_>, path: Path, req: &Header, payload: Payload) {
    let msg = Message {
        header: Header {
            spi_i: req.spi_i,
            spi_r: 0,
            next_payload: proto::PayloadType::NONE,
            version: 0x20,
            exchange: ExchangeType::IKE_SA_INIT,
            flags: flags::RESPONSE,
            message_id: 0,
            length: 0,
        },
        payloads: vec![payload],
    };
    ctx.send(path, ctx.config.nat_t_port, &msg.encode());
}

/// What the endpoint knows when an IKE_SA_INIT request arrives: the
/// half-open SAs in all and from its source address.
#[derive(Debug, Clone, Copy)]
pub(in crate::engine) struct Admission {
    pub half_open: usize,
    pub from_source: usize,
}

/// §3.9: "The size of the Nonce Data MUST be between 16 and 256 octets,
/// inclusive"; §2.10: "at least half the key size of the negotiated
/// pseudorandom function (PRF)". The PRF's key size is its output size
/// (§2.14, "the preferred key size").
pub(super) fn nonce_fits(nonce: &[u8], prf: Prf) -> bool {
    (16..=256).contains(&nonce.len()) && nonce.len() * 2 >= prf.output_len()
}

impl IkeSa {
    /// `initial_contact`: we have no other IKE SA with this peer, so tell it
    /// to drop any it still has with us (§2.4).
    pub(in crate::engine) fn initiate(
        ctx: &mut Ctx<'_>,
        conn: usize,
        path: Path,
        initial_contact: bool,
    ) -> Option<Self> {
        let spi_i = ctx.spi64()?;
        let mut sa = IkeSa::blank(spi_i, conn, true, path, ctx.now);
        sa.spi_i = spi_i;
        sa.init.initial_contact = initial_contact;
        sa.crypto.ni = ctx.random::<32>()?.to_vec();
        let group = sa.conn(ctx).ike_proposals.first()?.dh.first().copied()?;
        sa.init.share = Some(KeyShare::generate(group, ctx.rng).ok()?);
        info!(sa = sa.id, conn = %sa.conn(ctx).name, remote = %path.remote, "initiating IKE SA");
        sa.start_init(ctx);
        Some(sa)
    }

    pub(super) fn start_init(&mut self, ctx: &mut Ctx<'_>) {
        let conn = self.conn(ctx);
        let Some(share) = self.init.share.as_ref() else {
            return;
        };
        let mut payloads = Vec::new();
        if let Some(c) = &self.init.cookie {
            // §2.6: the COOKIE notify MUST be the first payload.
            payloads.push(notify(NotifyType::COOKIE, c.clone()));
        }
        payloads.push(Payload::Sa(
            conn.ike_proposals
                .iter()
                .enumerate()
                .map(|(i, p)| p.to_wire(i as u8 + 1, vec![]))
                .collect(),
        ));
        payloads.push(Payload::Ke(KeyExchange {
            group: share.group().number(),
            data: share.public().to_vec(),
        }));
        payloads.push(Payload::Nonce(self.crypto.ni.clone()));
        payloads.push(notify(
            NotifyType::NAT_DETECTION_SOURCE_IP,
            crypto::nat_detection_hash(self.spi_i, 0, self.path.local),
        ));
        payloads.push(notify(
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            crypto::nat_detection_hash(self.spi_i, 0, self.path.remote),
        ));
        if conn.uses_pubkey() {
            payloads.push(pubkey::hash_notify());
        }
        let msg = Message {
            header: self.header(ExchangeType::IKE_SA_INIT, 0, false),
            payloads,
        };
        let bytes = msg.encode();
        ctx.send(self.path, ctx.config.nat_t_port, &bytes);
        self.init.request = bytes.clone();
        self.state = State::InitSent;
        // IKE_SA_INIT is message 0; IKE_AUTH follows with 1 (§2.2).
        self.window.next_msg_id = 1;
        self.window.in_flight = Some(SentRequest {
            msg_id: 0,
            exchange: ExchangeType::IKE_SA_INIT,
            bytes,
            request: None,
            sent: 1,
            next: ctx.now + conn.timers.retransmit_timeout,
        });
    }

    pub(super) fn complete_init(
        &mut self,
        ctx: &mut Ctx<'_>,
        path: Path,
        bytes: &[u8],
        msg: &Message,
    ) {
        let conn = self.conn(ctx);
        let p = &msg.payloads;
        if let Some(c) = notify_of(p, NotifyType::COOKIE) {
            if self.init.restarts >= MAX_INIT_RESTARTS || c.data.is_empty() || c.data.len() > 64 {
                return;
            }
            debug!(
                sa = self.id,
                "responder demands a cookie, restarting IKE_SA_INIT"
            );
            self.init.restarts += 1;
            self.init.cookie = Some(c.data.clone());
            self.start_init(ctx);
            return;
        }
        if let Some(g) =
            notify_of(p, NotifyType::INVALID_KE_PAYLOAD).and_then(Notify::invalid_ke_group)
        {
            let acceptable = conn
                .ike_proposals
                .iter()
                .flat_map(|p| p.dh.iter())
                .any(|d| d.number() == g);
            let current = self.init.share.as_ref().map(|s| s.group().number());
            match DhGroup::from_number(g) {
                Some(group)
                    if acceptable
                        && current != Some(g)
                        && self.init.restarts < MAX_INIT_RESTARTS =>
                {
                    debug!(
                        sa = self.id,
                        ?group,
                        "INVALID_KE_PAYLOAD, retrying with the responder's group"
                    );
                    self.init.restarts += 1;
                    let Ok(share) = KeyShare::generate(group, ctx.rng) else {
                        return;
                    };
                    self.init.share = Some(share);
                    self.start_init(ctx);
                }
                _ => self.destroy(ctx, DeleteReason::Negotiation),
            }
            return;
        }
        if let Some(err) = first_error(p) {
            // §2.21.1: an error notify in the IKE_SA_INIT answer is not
            // authenticated, so "the initiator MUST NOT act on it
            // immediately": it keeps retransmitting and waits for a proper
            // answer; only when none comes does the error end the attempt
            // (see `handle_timeout`).
            warn!(sa = self.id, notify = ?err, "IKE_SA_INIT refused (unauthenticated; waiting for another answer)");
            ctx.stats.init_error_notifies += 1;
            self.init.peer_error = Some(err);
            return;
        }
        let (Some(props), Some(ke), Some(nr)) = (sa_of(p), ke_of(p), nonce_of(p)) else {
            ctx.stats.unexpected += 1;
            return;
        };
        self.init.peer_hashes = pubkey::peer_hashes(p);
        self.init.peer_certreq = pubkey::peer_certreq(p);
        let suite = match props.as_slice() {
            [one] => proposal::ike_suite_from_wire(one).filter(|s| {
                conn.ike_proposals
                    .iter()
                    .any(|ours| ours.select(one) == Some(*s))
            }),
            _ => None,
        };
        let Some(suite) =
            suite.filter(|s| Some(s.dh) == self.init.share.as_ref().map(KeyShare::group))
        else {
            warn!(sa = self.id, "responder chose a proposal we did not offer");
            self.destroy(ctx, DeleteReason::Negotiation);
            return;
        };
        if msg.header.spi_r == 0 || ke.group != suite.dh.number() {
            self.destroy(ctx, DeleteReason::Negotiation);
            return;
        }
        if !nonce_fits(&nr, suite.prf) {
            // Unauthenticated as an error notify is (§2.21.1): not a reason
            // to give up on a peer that may still answer properly.
            warn!(sa = self.id, len = nr.len(), prf = ?suite.prf, "IKE_SA_INIT answer with a nonce of a length §2.10 does not allow; ignored");
            ctx.stats.bad_nonces += 1;
            return;
        }
        let Some(share) = self.init.share.take() else {
            return;
        };
        let shared = match share.agree(&ke.data) {
            Ok(s) => s,
            Err(e) => {
                warn!(sa = self.id, error = %e, "key exchange failed");
                self.destroy(ctx, DeleteReason::Negotiation);
                return;
            }
        };
        self.spi_r = msg.header.spi_r;
        let Ok(keys) = IkeKeys::derive(
            suite.prf,
            suite.encr,
            &self.crypto.ni,
            &nr,
            &shared,
            self.spi_i,
            self.spi_r,
        ) else {
            return;
        };
        self.crypto.keys = Some(keys);
        self.crypto.suite = Some(suite);
        self.crypto.nr = nr;
        self.init.response = bytes.to_vec();
        self.window.in_flight = None;
        self.detect_nat(ctx, path, &msg.header, p);
        // §2.23 and RFC 4555 §3.3: switch to port 4500 for IKE_AUTH when a
        // NAT is detected or MOBIKE is offered.
        if self.nat.local_behind || self.nat.remote_behind || conn.mobike {
            self.path.local.set_port(ctx.config.nat_t_port);
            self.path.remote.set_port(ctx.config.nat_t_port);
        }
        self.start_auth(ctx);
    }

    pub(super) fn detect_nat(&mut self, ctx: &mut Ctx<'_>, path: Path, h: &Header, p: &[Payload]) {
        let src: Vec<&Notify> = proto::notifies(p)
            .filter(|n| n.ty == NotifyType::NAT_DETECTION_SOURCE_IP)
            .collect();
        let dst = notify_of(p, NotifyType::NAT_DETECTION_DESTINATION_IP);
        if src.is_empty() || dst.is_none() {
            return; // peer does not do NAT-T
        }
        self.nat.local_behind =
            dst.is_some_and(|d| d.data != crypto::nat_detection_hash(h.spi_i, h.spi_r, path.local));
        let theirs = crypto::nat_detection_hash(h.spi_i, h.spi_r, path.remote);
        self.nat.remote_behind = !src.iter().any(|n| n.data == theirs);
        if self.nat.local_behind || self.nat.remote_behind {
            ctx.event(Event::NatDetected {
                sa: self.id,
                local_behind_nat: self.nat.local_behind,
                remote_behind_nat: self.nat.remote_behind,
            });
        }
        if self.nat.local_behind {
            self.nat.keepalive_at = Some(ctx.now + self.conn(ctx).timers.nat_keepalive);
        }
    }

    pub(in crate::engine) fn respond_init(
        ctx: &mut Ctx<'_>,
        path: Path,
        bytes: &[u8],
        msg: &Message,
        admission: Admission,
        cookies: &CookieSecrets,
    ) -> Option<Self> {
        let h = msg.header;
        let p = &msg.payloads;
        if h.message_id != 0 {
            ctx.stats.unexpected += 1;
            return None;
        }
        if let Some(ty) = unknown_critical(p) {
            init_error_response(
                ctx,
                path,
                &h,
                notify(NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD, vec![ty]),
            );
            return None;
        }
        let (Some(props), Some(ke), Some(ni)) = (sa_of(p), ke_of(p), nonce_of(p)) else {
            init_error_response(ctx, path, &h, notify(NotifyType::INVALID_SYNTAX, vec![]));
            return None;
        };
        if admission.half_open >= ctx.config.cookie_threshold {
            let got = match p.first() {
                Some(Payload::Notify(n)) if n.ty == NotifyType::COOKIE => Some(&n.data),
                _ => None,
            };
            if got.is_none_or(|c| !cookies.verify(c, &ni, path.remote, h.spi_i)) {
                ctx.stats.cookies_sent += 1;
                let cookie = cookies.make(&ni, path.remote, h.spi_i);
                init_error_response(ctx, path, &h, notify(NotifyType::COOKIE, cookie));
                return None;
            }
        }
        // The limits strongSwan users know (`init_limit_half_open`,
        // `block_threshold`): beyond them IKE_SA_INIT is dropped unanswered
        // before any DH work, and the peer retransmits or gives up.
        let limits = &ctx.config;
        if limits.half_open_limit != 0 && admission.half_open >= limits.half_open_limit {
            ctx.stats.half_open_limit_drops += 1;
            debug!(remote = %path.remote, half_open = admission.half_open, "IKE_SA_INIT dropped: half-open limit");
            return None;
        }
        if limits.half_open_per_source != 0 && admission.from_source >= limits.half_open_per_source
        {
            ctx.stats.half_open_source_drops += 1;
            debug!(remote = %path.remote, half_open = admission.from_source, "IKE_SA_INIT dropped: half-open limit per source");
            return None;
        }
        // First connection that accepts one of the offered proposals.
        let choice = ctx
            .config
            .connections
            .iter()
            .enumerate()
            .find_map(|(i, c)| {
                if !c.accepts_peer(path.remote.ip()) {
                    return None;
                }
                props.iter().find_map(|offered| {
                    c.ike_proposals.iter().find_map(|ours| {
                        let mut s = ours.select(offered)?;
                        // Prefer the group the initiator already sent a KE for.
                        if let Some(g) = DhGroup::from_number(ke.group)
                            && ours.dh.contains(&g)
                            && (proposal::IkeProposal {
                                encr: vec![s.encr],
                                prf: vec![s.prf],
                                dh: vec![g],
                            })
                            .select(offered)
                            .is_some()
                        {
                            s.dh = g;
                        }
                        Some((i, offered.number, s))
                    })
                })
            });
        let Some((conn, number, suite)) = choice else {
            debug!(remote = %path.remote, "IKE_SA_INIT: no proposal chosen");
            init_error_response(
                ctx,
                path,
                &h,
                notify(NotifyType::NO_PROPOSAL_CHOSEN, vec![]),
            );
            return None;
        };
        if ke.group != suite.dh.number() {
            init_error_response(
                ctx,
                path,
                &h,
                notify(
                    NotifyType::INVALID_KE_PAYLOAD,
                    suite.dh.number().to_be_bytes().to_vec(),
                ),
            );
            return None;
        }
        if !nonce_fits(&ni, suite.prf) {
            debug!(remote = %path.remote, len = ni.len(), prf = ?suite.prf, "IKE_SA_INIT: nonce of a length §2.10 does not allow");
            ctx.stats.bad_nonces += 1;
            init_error_response(ctx, path, &h, notify(NotifyType::INVALID_SYNTAX, vec![]));
            return None;
        }
        let spi_r = ctx.spi64()?;
        let mut sa = IkeSa::blank(spi_r, conn, false, path, ctx.now);
        sa.spi_i = h.spi_i;
        sa.spi_r = spi_r;
        sa.crypto.ni = ni;
        sa.crypto.nr = ctx.random::<32>()?.to_vec();
        let share = KeyShare::generate(suite.dh, ctx.rng).ok()?;
        let public = share.public().to_vec();
        let shared = match share.agree(&ke.data) {
            Ok(s) => s,
            Err(e) => {
                debug!(remote = %path.remote, error = %e, "IKE_SA_INIT: bad KE");
                init_error_response(ctx, path, &h, notify(NotifyType::INVALID_SYNTAX, vec![]));
                return None;
            }
        };
        sa.crypto.keys = Some(
            IkeKeys::derive(
                suite.prf,
                suite.encr,
                &sa.crypto.ni,
                &sa.crypto.nr,
                &shared,
                sa.spi_i,
                sa.spi_r,
            )
            .ok()?,
        );
        sa.crypto.suite = Some(suite);
        sa.detect_nat(ctx, path, &h, p);
        let [nat_src, nat_dst] = sa.nat_d_payloads(path);
        let mut payloads = vec![
            Payload::Sa(vec![proposal::ike_suite_to_wire(suite, number, vec![])]),
            Payload::Ke(KeyExchange {
                group: suite.dh.number(),
                data: public,
            }),
            Payload::Nonce(sa.crypto.nr.clone()),
            nat_src,
            nat_dst,
        ];
        // RFC 7427 §4, and the CAs we take certificates from (§3.7): which
        // connection the peer is for is known only in IKE_AUTH.
        sa.init.peer_hashes = pubkey::peer_hashes(p);
        // §3.7 puts the initiator's CERTREQ in IKE_AUTH; one here is taken
        // as well.
        sa.init.peer_certreq = pubkey::peer_certreq(p);
        if ctx.config.connections.iter().any(|c| c.uses_pubkey()) {
            payloads.push(pubkey::hash_notify());
            payloads.extend(pubkey::certreq(ctx.config.connections.iter()));
        }
        let out = Message {
            header: sa.header(ExchangeType::IKE_SA_INIT, 0, true),
            payloads,
        }
        .encode();
        ctx.send(path, ctx.config.nat_t_port, &out);
        sa.init.request = bytes.to_vec();
        sa.init.response = out.clone();
        sa.window.cached_response = Some((0, out));
        sa.window.peer_next_msg_id = 1;
        sa.state = State::InitReplied;
        sa.init.half_open_peer = Some((path.remote, h.spi_i));
        sa.life.expires = Some(ctx.now + ctx.config.half_open_timeout);
        debug!(sa = sa.id, remote = %path.remote, ?suite, "IKE_SA_INIT answered");
        Some(sa)
    }

    pub(in crate::engine) fn replay_init_response(&mut self, ctx: &mut Ctx<'_>, request: &[u8]) {
        // Once IKE_AUTH arrived the initiator has our answer: late copies
        // of its IKE_SA_INIT are dropped.
        if self.state == State::InitReplied && request == self.init.request.as_slice() {
            if let Some((_, r)) = &self.window.cached_response {
                ctx.stats.replayed_responses += 1;
                ctx.send(self.path, ctx.config.nat_t_port, r);
                // RFC 7296 §2.1: a retransmission "belonging to an existing
                // 'half-open' IKE SA (in which case the responder
                // retransmits the same response)". The half-open timeout
                // still runs from our first answer: anyone who saw the
                // request could resend the same bytes for ever, and the SA
                // must not live for ever. An initiator whose first
                // answers were lost still has the rest of the 30 s
                // default after the replay to send IKE_AUTH.
            }
        } else {
            ctx.stats.unexpected += 1;
        }
    }
}
