//! The record of every IKE message on the wire and what the network did
//! to it, scripted losses, and the accounting that tells an outage the
//! link caused from one it did not.

use std::time::Instant;

use mobike_agent::{
    engine::{DeleteReason, Event, SaId},
    proto::{ExchangeType, Header},
};

use super::Sim;

/// Lose the next `count` IKE messages of `exchange` sent by node `from`
/// (requests or responses), whatever the link model says.
#[derive(Debug, Clone)]
pub struct ScriptedLoss {
    pub from: usize,
    pub exchange: ExchangeType,
    pub response: bool,
    pub count: u32,
}

/// What happened to an IKE message: sent by `from`, then lost (by the
/// link model, a killed path or address, or sent from an address the node
/// no longer has) or delivered (duplication can deliver one twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Sent,
    Lost,
    Delivered,
}

/// One entry of [`Sim::wire`].
#[derive(Debug, Clone, Copy)]
pub struct Wire {
    pub at: Instant,
    pub from: usize,
    pub fate: Fate,
    pub header: Header,
}

/// The IKE header of a datagram as sent (after the non-ESP marker on the
/// NAT-T port); None for keepalives and anything else.
pub fn ike_header(payload: &[u8]) -> Option<Header> {
    match payload {
        [0, 0, 0, 0, rest @ ..] => Header::decode(rest).or_else(|_| Header::decode(payload)),
        _ => Header::decode(payload),
    }
    .ok()
}

/// What the network did to one request and to the peer's answers to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestFate {
    /// Transmissions of the request (the first and every retransmission).
    pub sent: usize,
    /// Of those, lost by the link.
    pub lost: usize,
    /// Copies delivered to the peer (duplication may deliver two of one).
    pub delivered: usize,
    /// Answers the peer sent (a fresh one or a replay from its cache).
    pub answers_sent: usize,
    /// Of those, lost by the link.
    pub answers_lost: usize,
    /// Answers delivered back to the requester.
    pub answers_delivered: usize,
}

impl Sim {
    /// The last request `node` sent on its IKE SA `sa` (the one outstanding
    /// when the SA ended), the wire entries of its copies and of the peer's
    /// answers, and their count.
    pub fn last_request_fate(
        &self,
        node: usize,
        sa: SaId,
    ) -> Option<(Header, Vec<Wire>, RequestFate)> {
        let request = self
            .wire
            .iter()
            .filter(|w| w.from == node && w.fate == Fate::Sent && !w.header.is_response())
            .map(|w| w.header)
            .filter(|h| (if h.from_initiator() { h.spi_i } else { h.spi_r }) == sa)
            .max_by_key(|h| h.message_id)?;
        // An IKE_SA_INIT request has no responder SPI yet; its answers do.
        let exchange: Vec<Wire> = self
            .wire
            .iter()
            .filter(|w| {
                let h = &w.header;
                h.spi_i == request.spi_i
                    && (request.spi_r == 0 || h.spi_r == request.spi_r)
                    && h.exchange == request.exchange
                    && h.message_id == request.message_id
                    && h.is_response() == (w.from != node)
            })
            .copied()
            .collect();
        let count = |response: bool, fate: Fate| {
            exchange
                .iter()
                .filter(|w| w.header.is_response() == response && w.fate == fate)
                .count()
        };
        let fate = RequestFate {
            sent: count(false, Fate::Sent),
            lost: count(false, Fate::Lost),
            delivered: count(false, Fate::Delivered),
            answers_sent: count(true, Fate::Sent),
            answers_lost: count(true, Fate::Lost),
            answers_delivered: count(true, Fate::Delivered),
        };
        Some((request, exchange, fate))
    }

    /// Accounts for every IKE SA of nodes 0 and 1 (peers of each other) that
    /// ended as `PeerUnreachable`. Each must
    /// have used its whole retransmission budget with no answer delivered,
    /// and one of these must hold:
    ///
    /// - the link lost every attempt: each copy of the request was lost, or
    ///   delivered and answered (fresh or from the response cache) with
    ///   every answer lost;
    /// - it was IKE_AUTH and the peer's half-open SA expired first, a whole
    ///   half-open timeout after the peer's last IKE_SA_INIT answer, with no
    ///   copy of IKE_AUTH delivered before that;
    /// - the peer had given up on the same IKE SA in one of those ways, and
    ///   only copies delivered after its last attempt (when it had nothing
    ///   left to answer them with) went unanswered.
    ///
    /// Returns one line per such SA, or what the link does not explain.
    pub fn explain_unreachable(&self) -> Result<Vec<String>, String> {
        let ended = |n: usize, why: DeleteReason| {
            self.nodes[n].events.iter().filter_map(move |e| match e {
                Event::IkeSaDeleted { sa, reason } if *reason == why => Some(*sa),
                _ => None,
            })
        };
        let config = |n: usize| self.nodes[n].ep.config();
        let tries = |n: usize| {
            config(n)
                .connections
                .first()
                .map_or(0, |c| c.timers.retransmit_tries as usize)
        };
        // A death the link caused on its own (or with the peer's half-open
        // timeout); None when it needs the peer's death to explain it.
        type Verdict = (String, Option<&'static str>);
        let by_loss = |n: usize, sa: SaId| -> Result<Verdict, String> {
            let (h, exchange, f) = self
                .last_request_fate(n, sa)
                .ok_or_else(|| format!("node {n}: SA {sa:#018x} died without a request"))?;
            let what = format!(
                "node {n}: SA {sa:#018x} {:?} #{}: {} sends ({} lost, {} copies delivered), \
                 {} answers (all lost)",
                h.exchange, h.message_id, f.sent, f.lost, f.delivered, f.answers_sent
            );
            if f.sent != tries(n) + 1 {
                return Err(format!(
                    "{what}: gave up after {} sends, not {}",
                    f.sent,
                    tries(n) + 1
                ));
            }
            if f.answers_delivered > 0 || f.answers_lost != f.answers_sent {
                return Err(format!("{what}: an answer got through ({f:?})"));
            }
            if f.answers_sent == f.delivered && f.lost + f.answers_lost >= f.sent {
                return Ok((what, Some("the link lost every attempt")));
            }
            let peer = 1 - n;
            let last_init_answer = self
                .wire
                .iter()
                .filter(|w| {
                    w.from == peer
                        && w.fate == Fate::Sent
                        && w.header.exchange == ExchangeType::IKE_SA_INIT
                        && w.header.is_response()
                        && w.header.spi_i == h.spi_i
                        && w.header.spi_r == h.spi_r
                })
                .map(|w| w.at)
                .max();
            let first_delivery = exchange
                .iter()
                .filter(|w| w.fate == Fate::Delivered)
                .map(|w| w.at)
                .min();
            if h.exchange == ExchangeType::IKE_AUTH
                && f.answers_sent == 0
                && ended(peer, DeleteReason::HalfOpenTimeout).any(|p| p == h.spi_r)
                && last_init_answer.is_some_and(|t| {
                    first_delivery.is_none_or(|d| d >= t + config(peer).half_open_timeout)
                })
            {
                return Ok((
                    what,
                    Some("the link lost every attempt until the peer's half-open SA expired"),
                ));
            }
            Ok((what, None))
        };
        let mut out = Vec::new();
        for n in 0..2 {
            for sa in ended(n, DeleteReason::PeerUnreachable) {
                let (what, why) = by_loss(n, sa)?;
                if let Some(why) = why {
                    out.push(format!("{what}: {why}"));
                    continue;
                }
                let Some((h, exchange, _)) = self.last_request_fate(n, sa) else {
                    continue;
                };
                // The peer's SPI for the same IKE SA, and when it last tried
                // its own failing request there.
                let theirs = if h.from_initiator() { h.spi_r } else { h.spi_i };
                let peer_lost_it = ended(1 - n, DeleteReason::PeerUnreachable)
                    .any(|p| p == theirs && by_loss(1 - n, p).is_ok_and(|(_, w)| w.is_some()));
                let peer_last_try = self.last_request_fate(1 - n, theirs).and_then(|(_, e, _)| {
                    e.iter()
                        .filter(|w| w.from != n && w.fate == Fate::Sent)
                        .map(|w| w.at)
                        .max()
                });
                // Copies delivered while the peer still had the SA were
                // answered (the answer goes out at the same instant).
                let before = |response: bool, fate: Fate| {
                    exchange
                        .iter()
                        .filter(|w| {
                            w.header.is_response() == response
                                && w.fate == fate
                                && peer_last_try.is_some_and(|t| w.at <= t)
                        })
                        .count()
                };
                if !peer_lost_it || before(true, Fate::Sent) < before(false, Fate::Delivered) {
                    return Err(format!(
                        "{what}: delivered copies went unanswered and the peer did not \
                         lose the SA to the link first"
                    ));
                }
                out.push(format!("{what}: the peer had lost the SA to the link"));
            }
        }
        Ok(out)
    }
}
