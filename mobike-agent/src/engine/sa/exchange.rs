//! The exchange machinery every IKE SA shares (RFC 7296 §2.1-§2.3): the
//! message-ID window of one in each direction, sealing and opening the
//! Encrypted payload, sending and retransmitting our requests with backoff,
//! the response cache that answers a retransmitted request again, and the
//! timers. [`IkeSa::start_next_request`] and [`IkeSa::handle_response`]
//! dispatch to the exchange modules, which build each request and complete
//! its response.

use std::time::Instant;

use tracing::{debug, warn};

use crate::engine::{Ctx, DeleteReason, EndpointConfig, Event, Path, Transmit};
use crate::{
    crypto,
    proto::{self, ExchangeType, Header, Message, NotifyType, Payload, flags},
};

use super::{
    BuiltRequest, ChildState, IkeSa, QueuedRequest, SentRequest, State, backoff, notify,
    unknown_critical,
};

impl IkeSa {
    pub(in crate::engine) fn next_deadline(&self, config: &EndpointConfig) -> Option<Instant> {
        let timers = &config.connections[self.conn].timers;
        // The earliest of the timers that apply, without collecting them
        // (this runs for every SA on every poll of the runtime's loop).
        let mut d: Option<Instant> = None;
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |m| m.min(t)));
            }
        };
        at(self.window.in_flight.as_ref().map(|o| o.next));
        at(self.lingering_test_deadline());
        at(self.life.expires);
        if self.established() {
            if self.window.in_flight.is_none()
                && !self.rekey.awaiting_peer
                && let Some(dpd) = timers.dpd_delay
            {
                at(Some(self.life.last_heard + dpd));
            }
            at(self.rekey.at);
            at(self
                .children
                .iter()
                .filter(|c| c.state == ChildState::Installed)
                .filter_map(|c| c.rekey_at)
                .min());
        }
        if self.nat.local_behind
            && matches!(
                self.state,
                State::Established | State::Deleting | State::Rekeyed
            )
        {
            at(self.nat.keepalive_at);
        }
        d
    }

    pub(in crate::engine) fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        if self.life.expires.is_some_and(|e| e <= now) {
            let reason = if self.state == State::Rekeyed {
                DeleteReason::Rekeyed
            } else {
                DeleteReason::HalfOpenTimeout
            };
            self.destroy(ctx, reason);
            return;
        }
        if self.lingering_test_deadline().is_some_and(|t| t <= now) {
            self.end_lingering_test(ctx, &[]);
        }
        let timers = &self.conn(ctx).timers;
        if let Some(o) = self.window.in_flight.as_ref()
            && o.next <= now
            && o.sent > timers.retransmit_tries
        {
            match &o.request {
                Some(BuiltRequest::PathTest(_)) => {
                    if let Some(o) = self.window.in_flight.take() {
                        self.give_up_path_test(ctx, o);
                    }
                }
                Some(BuiltRequest::UpdateAddresses { rest, .. })
                    if !rest.is_empty() || self.update_queued() =>
                {
                    if let Some(o) = self.window.in_flight.take() {
                        self.update_unanswered(ctx, o);
                    }
                }
                _ => {}
            }
        }
        let timers = &self.conn(ctx).timers;
        // Only a request due for retransmission needs its destinations.
        let destinations = self
            .window
            .in_flight
            .as_ref()
            .filter(|o| o.next <= now)
            .map(|o| self.destinations(o))
            .unwrap_or_default();
        if let Some(o) = self.window.in_flight.as_mut()
            && o.next <= now
        {
            if o.sent > timers.retransmit_tries {
                // An unanswered Delete still ends the SA as we wanted: the
                // peer may have deleted it and lost only the answer.
                // An IKE_SA_INIT that drew only an error notify ends with
                // that error now (§2.21.1).
                let reason = match (&o.request, self.init.peer_error) {
                    (Some(BuiltRequest::DeleteIke(r)), _) => *r,
                    (_, Some(err)) if self.state == State::InitSent => DeleteReason::PeerError(err),
                    _ => DeleteReason::PeerUnreachable,
                };
                warn!(
                    sa = self.id,
                    ?reason,
                    "peer does not answer, giving up on the IKE SA"
                );
                self.destroy(ctx, reason);
                return;
            }
            if o.sent == 2 && !matches!(o.request, Some(BuiltRequest::PathTest(_))) {
                // The first retransmission went unanswered too: tell the
                // mobility manager while there is time to move.
                ctx.event(Event::Unresponsive {
                    sa: self.id,
                    path: self.path,
                });
            }
            for p in &destinations {
                ctx.send(*p, ctx.config.nat_t_port, &o.bytes);
            }
            ctx.stats.retransmits += 1;
            o.next = now + backoff(timers.retransmit_timeout, o.sent);
            o.sent += 1;
            debug!(
                sa = self.id,
                msg_id = o.msg_id,
                try_ = o.sent,
                "retransmitted request"
            );
            self.send_check_to_candidates(ctx);
        }
        if self.established() {
            if let Some(dpd) = timers.dpd_delay
                && self.window.in_flight.is_none()
                && self.window.queue.is_empty()
                && self.life.last_heard + dpd <= now
            {
                self.window.queue.push_back(QueuedRequest::Dpd);
            }
            if self.rekey.at.is_some_and(|t| t <= now) {
                self.rekey.at = None;
                self.window.queue.push_back(QueuedRequest::RekeyIke(None));
            }
            for c in &mut self.children {
                if c.state == ChildState::Installed && c.rekey_at.is_some_and(|t| t <= now) {
                    c.rekey_at = None;
                    self.window
                        .queue
                        .push_back(QueuedRequest::RekeyChild(c.inbound_spi, None));
                }
            }
        }
        if self.nat.local_behind && self.nat.keepalive_at.is_some_and(|t| t <= now) {
            // RFC 3948 §2.3: a single 0xFF octet.
            ctx.out.transmits.push_back(Transmit {
                local: self.path.local,
                remote: self.path.remote,
                payload: vec![0xff],
            });
            self.nat.keepalive_at = Some(now + timers.nat_keepalive);
        }
        self.start_next_request(ctx);
    }

    pub(super) fn header(&self, exchange: ExchangeType, message_id: u32, response: bool) -> Header {
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            next_payload: proto::PayloadType::NONE,
            version: 0x20,
            exchange,
            flags: if self.initiator { flags::INITIATOR } else { 0 }
                | if response { flags::RESPONSE } else { 0 },
            message_id,
            length: 0,
        }
    }

    pub(super) fn seal(&mut self, header: Header, payloads: &[Payload]) -> Option<Vec<u8>> {
        let keys = self.crypto.keys.as_ref()?;
        let key = if self.initiator {
            &keys.sk_ei
        } else {
            &keys.sk_er
        };
        self.crypto.iv += 1;
        match crypto::seal_message(
            header,
            payloads,
            keys.aead,
            key,
            self.crypto.iv.to_be_bytes(),
        ) {
            Ok(b) => Some(b),
            Err(e) => {
                warn!(sa = self.id, error = %e, "cannot encrypt message");
                None
            }
        }
    }

    pub(super) fn open(
        &self,
        bytes: &[u8],
        msg: &Message,
    ) -> Result<Vec<Payload>, crypto::CryptoError> {
        let keys = self
            .crypto
            .keys
            .as_ref()
            .ok_or(crypto::CryptoError::NotEncrypted)?;
        let key = if self.initiator {
            &keys.sk_er
        } else {
            &keys.sk_ei
        };
        crypto::open_message(bytes, msg, keys.aead, key)
    }

    pub(super) fn send_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        payloads: &[Payload],
        request: BuiltRequest,
    ) {
        let msg_id = self.window.next_msg_id;
        let Some(bytes) = self.seal(self.header(exchange, msg_id, false), payloads) else {
            return;
        };
        self.window.next_msg_id = self.window.next_msg_id.wrapping_add(1);
        ctx.send(self.path, ctx.config.nat_t_port, &bytes);
        let timeout = self.conn(ctx).timers.retransmit_timeout;
        self.window.in_flight = Some(SentRequest {
            msg_id,
            exchange,
            bytes,
            request: Some(request),
            sent: 1,
            next: ctx.now + timeout,
        });
    }

    pub(super) fn respond(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        msg_id: u32,
        payloads: &[Payload],
    ) {
        let Some(bytes) = self.seal(self.header(exchange, msg_id, true), payloads) else {
            return;
        };
        // §2.11: a response goes back where the request came from.
        let to = self.window.reply_path.unwrap_or(self.path);
        ctx.send(to, ctx.config.nat_t_port, &bytes);
        self.window.cached_response = Some((msg_id, bytes));
    }

    /// Takes queued requests while the window is free (one request of ours
    /// at a time, §2.3): each is built and sent by its exchange's module;
    /// one that no longer applies is dropped and the next taken.
    pub(super) fn start_next_request(&mut self, ctx: &mut Ctx<'_>) {
        if self.rekey.awaiting_peer {
            return;
        }
        while self.window.in_flight.is_none()
            && matches!(self.state, State::Established | State::Rekeyed)
            && !self.life.dead
        {
            let Some(next) = self.window.queue.pop_front() else {
                return;
            };
            match next {
                QueuedRequest::Dpd => self.start_dpd(ctx),
                QueuedRequest::DeleteIke => self.start_delete_ike(ctx),
                QueuedRequest::DeleteChild(spis) => self.start_delete_child(ctx, spis),
                QueuedRequest::DeleteRefused(spi) => self.start_delete_refused(ctx, spi),
                QueuedRequest::RekeyChild(spi, group) => self.start_rekey_child(ctx, spi, group),
                QueuedRequest::CreateChild(cfg, group) => self.start_create_child(ctx, cfg, group),
                QueuedRequest::UpdateAddresses(paths) => self.start_update_addresses(ctx, paths),
                QueuedRequest::TestPaths(paths) => self.start_path_test(ctx, paths),
                QueuedRequest::ReturnRoutability => self.start_return_routability(ctx),
                QueuedRequest::RekeyIke(group) => self.start_rekey_ike(ctx, group),
                QueuedRequest::AnnounceAddresses => self.start_announce_addresses(ctx),
            }
        }
    }

    pub(in crate::engine) fn handle_message(
        &mut self,
        ctx: &mut Ctx<'_>,
        path: Path,
        bytes: &[u8],
        msg: Message,
    ) {
        let h = msg.header;
        if h.from_initiator() == self.initiator {
            ctx.stats.unexpected += 1;
            return;
        }
        if h.exchange == ExchangeType::IKE_SA_INIT {
            if h.is_response() && self.state == State::InitSent && h.message_id == 0 {
                self.complete_init(ctx, path, bytes, &msg);
            } else {
                ctx.stats.unexpected += 1;
            }
            return;
        }
        if self.crypto.keys.is_none() || msg.encrypted().is_none() {
            ctx.stats.unexpected += 1;
            return;
        }
        if h.is_response() {
            let ours = self
                .window
                .in_flight
                .as_ref()
                .is_some_and(|o| o.msg_id == h.message_id && o.exchange == h.exchange);
            if !ours {
                if self.lingering_test_id() == Some(h.message_id)
                    && h.exchange == ExchangeType::INFORMATIONAL
                {
                    match self.open(bytes, &msg) {
                        Ok(p) => {
                            if path == self.path {
                                self.life.last_heard = ctx.now;
                            }
                            self.late_path_test_answer(ctx, path, &p);
                        }
                        Err(_) => ctx.stats.integrity_failures += 1,
                    }
                    return;
                }
                ctx.stats.unexpected += 1;
                return;
            }
        } else if h.message_id != self.window.peer_next_msg_id {
            let replay = self
                .window
                .cached_response
                .as_ref()
                .filter(|(id, _)| *id == h.message_id)
                .map(|(_, b)| b.clone());
            match replay {
                // A retransmitted request: verify it, then resend our answer.
                Some(resp) if self.open(bytes, &msg).is_ok() => {
                    ctx.stats.replayed_responses += 1;
                    // §2.11: to where this copy of the request came from.
                    ctx.send(path, ctx.config.nat_t_port, &resp);
                    self.update_copy_from(ctx, h.message_id, path);
                }
                Some(_) => ctx.stats.integrity_failures += 1,
                None => ctx.stats.unexpected += 1,
            }
            return;
        }
        let payloads = match self.open(bytes, &msg) {
            Ok(p) => p,
            Err(e) => {
                debug!(sa = self.id, error = %e, "dropping message that does not verify");
                ctx.stats.integrity_failures += 1;
                return;
            }
        };
        // A path test's answer on another pair shows that the peer is
        // alive, not that the pair in use works: only what arrives on that
        // pair puts off the liveness check that judges it (RFC 7296 §2.4;
        // RFC 4555 §3.10 leaves the pair in use to DPD).
        let probe_elsewhere = h.is_response()
            && path != self.path
            && self
                .window
                .in_flight
                .as_ref()
                .is_some_and(|o| matches!(o.request, Some(BuiltRequest::PathTest(_))));
        if !probe_elsewhere {
            self.life.last_heard = ctx.now;
        }
        self.refuse_misplaced_list(ctx, h.exchange, h.is_response(), &payloads);
        // A message that verifies with this SA's keys: the peer has it.
        self.rekey.awaiting_peer = false;
        if h.is_response() {
            let Some(o) = self.window.in_flight.take() else {
                return;
            };
            self.window.answer_path = Some(path);
            if matches!(o.request, Some(BuiltRequest::PathTest(_))) {
                // The pair it came back on is the tested one (§2.11).
                self.complete_path_test(ctx, o, path, &payloads);
            } else {
                self.handle_response(ctx, o, &payloads);
            }
            self.window.answer_path = None;
        } else if self.state == State::AuthSent {
            // The responder is established once it has sent its IKE_AUTH
            // answer and may send a request at once (a liveness check, a
            // CREATE_CHILD_SA) that overtakes that answer. Until the answer
            // authenticates the peer there is nothing to answer with: leave
            // the request unanswered and its message ID unused, so the
            // peer's retransmission (§2.1) is taken once we are established.
            debug!(
                sa = self.id,
                msg_id = h.message_id,
                "request before our IKE_AUTH was answered; left for its retransmission"
            );
            ctx.stats.unexpected += 1;
        } else {
            self.window.peer_next_msg_id = self.window.peer_next_msg_id.wrapping_add(1);
            self.window.reply_path = Some(path);
            if self.state == State::InitReplied {
                // The initiator floats to 4500 for IKE_AUTH: answer where it came from.
                self.path = path;
            } else if self.nat.remote_behind && !self.peer_mobike && path != self.path {
                // §2.23: follow a NAT mapping change on an authenticated request.
                debug!(sa = self.id, old = %self.path.remote, new = %path.remote, "peer's NAT mapping changed");
                let old = std::mem::replace(&mut self.path, path);
                self.follow_nat_rebinding(ctx, old);
            }
            self.handle_request(ctx, h, &payloads);
            self.window.reply_path = None;
        }
        if !self.life.dead {
            self.start_next_request(ctx);
        }
    }

    /// Completes our request `o` with the verified answer `p`, in the
    /// module of its exchange.
    pub(super) fn handle_response(&mut self, ctx: &mut Ctx<'_>, o: SentRequest, p: &[Payload]) {
        match o.request {
            Some(BuiltRequest::Auth(offer)) => self.complete_auth(ctx, offer, p),
            Some(BuiltRequest::Dpd) => self.complete_dpd(ctx, p),
            None => {}
            Some(BuiltRequest::DeleteIke(reason)) => self.complete_delete_ike(ctx, reason),
            Some(BuiltRequest::DeleteChild(spis)) => self.complete_delete_child(ctx, spis),
            Some(BuiltRequest::CreateChild(offer)) => self.complete_child(ctx, offer, p, false),
            Some(BuiltRequest::RekeyIke(offer)) => self.complete_ike_rekey(ctx, offer, p),
            Some(BuiltRequest::UpdateAddresses {
                old,
                cookie2,
                rest,
                unanswered,
                moved_early,
            }) => self.complete_update_addresses(
                ctx,
                (old, moved_early),
                (cookie2, unanswered),
                rest,
                p,
            ),
            // Completed with the pair it came back on, in handle_message.
            Some(BuiltRequest::PathTest(_)) => {}
            Some(BuiltRequest::AnnounceAddresses) => self.complete_announce_addresses(p),
            Some(BuiltRequest::ReturnRoutability { cookie2 }) => {
                let from = self.window.answer_path.take();
                self.complete_return_routability(ctx, cookie2, from, p)
            }
        }
    }

    pub(super) fn handle_request(&mut self, ctx: &mut Ctx<'_>, h: Header, p: &[Payload]) {
        let id = h.message_id;
        if let Some(ty) = unknown_critical(p) {
            // §2.5: reject the whole message.
            self.respond(
                ctx,
                h.exchange,
                id,
                &[notify(NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD, vec![ty])],
            );
            return;
        }
        match (self.state, h.exchange) {
            (State::InitReplied, ExchangeType::IKE_AUTH) => self.respond_auth(ctx, id, p),
            (
                State::Established | State::Rekeyed | State::Deleting,
                ExchangeType::INFORMATIONAL,
            ) => {
                self.respond_informational(ctx, id, p);
            }
            (State::Established, ExchangeType::CREATE_CHILD_SA) => {
                self.respond_create_child(ctx, id, p)
            }
            (State::Rekeyed | State::Deleting, ExchangeType::CREATE_CHILD_SA) => {
                self.respond(
                    ctx,
                    h.exchange,
                    id,
                    &[notify(NotifyType::TEMPORARY_FAILURE, vec![])],
                );
            }
            _ => {
                ctx.stats.unexpected += 1;
                self.respond(
                    ctx,
                    h.exchange,
                    id,
                    &[notify(NotifyType::INVALID_SYNTAX, vec![])],
                );
            }
        }
    }
}
