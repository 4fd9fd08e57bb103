//! MOBIKE address lists (RFC 4555 §3.4, §3.6) in both roles: our list in
//! IKE_AUTH and, when our usable addresses change
//! ([`Command::AnnounceAddresses`]), in an INFORMATIONAL exchange; the
//! peer's list, which replaces the one before ([`Event::PeerAddresses`]);
//! and the refusal of lists that are malformed or out of place.
//!
//! A list names the sender's addresses other than the one in the IP header
//! (§3.6: "If the exchange initiator has several addresses, one of them is
//! placed in the IP header, and the rest in ADDITIONAL_IP4_ADDRESS/
//! ADDITIONAL_IP6_ADDRESS notifications"). Either role announces; only the
//! original initiator decides to move (§3.6: a responder whose address
//! went away sends its new list and the initiator updates), so nothing here
//! sends UPDATE_SA_ADDRESSES.
//!
//! [`Command::AnnounceAddresses`]: crate::engine::Command::AnnounceAddresses

use std::net::IpAddr;

use tracing::{debug, info, warn};

use crate::engine::{Ctx, Event, Stats};
use crate::proto::{self, ExchangeType, Notify, NotifyType, Payload};

use super::{BuiltRequest, IkeSa, QueuedRequest, State, first_error, notify};

/// The address lists of one IKE SA.
#[derive(Debug, Default, Clone)]
pub(super) struct AddressLists {
    /// Our list as last sent (IKE_AUTH or INFORMATIONAL); None before the
    /// first.
    sent: Option<Vec<IpAddr>>,
    /// The peer's list, as last received.
    peer: Vec<IpAddr>,
}

/// Whether a notify is one of the address-list notifies.
fn is_list_notify(n: &Notify) -> bool {
    matches!(
        n.ty,
        NotifyType::ADDITIONAL_IP4_ADDRESS
            | NotifyType::ADDITIONAL_IP6_ADDRESS
            | NotifyType::NO_ADDITIONAL_ADDRESSES
    )
}

/// Whether `payloads` carry an address list at all.
fn has_list(payloads: &[Payload]) -> bool {
    proto::notifies(payloads).any(is_list_notify)
}

/// The address list in `payloads`: None when there is none, Some(empty)
/// for NO_ADDITIONAL_ADDRESSES, or why it is refused. RFC 4555 §4: an
/// ADDITIONAL_IP4_ADDRESS carries 4 octets, an ADDITIONAL_IP6_ADDRESS 16,
/// NO_ADDITIONAL_ADDRESSES nothing; NO_ADDITIONAL_ADDRESSES beside
/// addresses contradicts itself.
pub(super) fn parse_list(payloads: &[Payload]) -> Result<Option<Vec<IpAddr>>, String> {
    let mut addrs: Vec<IpAddr> = Vec::new();
    let mut none = false;
    for n in proto::notifies(payloads).filter(|n| is_list_notify(n)) {
        if n.ty == NotifyType::NO_ADDITIONAL_ADDRESSES {
            if !n.data.is_empty() {
                return Err(format!(
                    "NO_ADDITIONAL_ADDRESSES with {} octets of data",
                    n.data.len()
                ));
            }
            none = true;
            continue;
        }
        match n.additional_address() {
            Some(a) if a.is_unspecified() || a.is_multicast() => {
                return Err(format!("{:?} with unusable address {a}", n.ty));
            }
            Some(a) => {
                if !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
            None => {
                return Err(format!(
                    "{:?} with {} octets (4 for IPv4, 16 for IPv6)",
                    n.ty,
                    n.data.len()
                ));
            }
        }
    }
    match (none, addrs.is_empty()) {
        (true, false) => Err("NO_ADDITIONAL_ADDRESSES beside ADDITIONAL_*_ADDRESS".into()),
        (true, true) => Ok(Some(Vec::new())),
        (false, true) => Ok(None),
        (false, false) => Ok(Some(addrs)),
    }
}

/// The notifies for our list `addrs`. RFC 4555 §3.6: in an INFORMATIONAL
/// exchange, a sender with no address but the one in the IP header says
/// so with NO_ADDITIONAL_ADDRESSES ("the message contains the
/// NO_ADDITIONAL_ADDRESSES notification"); §3.4 has IKE_AUTH carry only
/// ADDITIONAL_*_ADDRESS notifies, none when there are none.
pub(super) fn list_payloads(addrs: &[IpAddr], informational: bool) -> Vec<Payload> {
    if addrs.is_empty() && informational {
        return vec![notify(NotifyType::NO_ADDITIONAL_ADDRESSES, vec![])];
    }
    addrs
        .iter()
        .map(|a| Payload::Notify(Notify::for_additional_address(*a)))
        .collect()
}

/// Counts and logs an address list in IKE_SA_INIT, where none belongs
/// (RFC 4555 §3.4 puts the first one in IKE_AUTH); the message is
/// unprotected, so it changes nothing either way.
pub(in crate::engine) fn refuse_in_init(stats: &mut Stats, msg: &proto::Message) {
    if has_list(&msg.payloads) {
        warn!(
            spi_i = msg.header.spi_i,
            "address list in IKE_SA_INIT refused: it belongs in IKE_AUTH or INFORMATIONAL (RFC 4555 §3.4, §3.6)"
        );
        stats.address_lists_refused += 1;
    }
}

impl IkeSa {
    /// Our list: the usable local addresses (the last
    /// [`crate::engine::Command::AnnounceAddresses`], else the
    /// connection's configured ones) less the one this IKE SA uses.
    fn our_address_list(&self, ctx: &Ctx<'_>) -> Vec<IpAddr> {
        let in_use = self.path.local.ip();
        let usable: Vec<IpAddr> = match ctx.usable_addrs {
            Some(a) => a.to_vec(),
            None => self.conn(ctx).local_addrs().collect(),
        };
        let mut list: Vec<IpAddr> = Vec::new();
        for a in usable {
            if a != in_use && !a.is_unspecified() && !list.contains(&a) {
                list.push(a);
            }
        }
        list
    }

    /// Our list for IKE_AUTH (RFC 4555 §3.4: "Both the initiator and
    /// responder MAY include one or more ADDITIONAL_IP4_ADDRESS and/or
    /// ADDITIONAL_IP6_ADDRESS notifications in the IKE_AUTH exchange"),
    /// beside MOBIKE_SUPPORTED.
    pub(super) fn auth_address_payloads(&mut self, ctx: &Ctx<'_>) -> Vec<Payload> {
        let list = self.our_address_list(ctx);
        let payloads = list_payloads(&list, false);
        self.addrs.sent = Some(list);
        payloads
    }

    /// Our list differs from the one the peer has: an INFORMATIONAL with
    /// the new one waits its turn (RFC 4555 §3.6).
    pub(super) fn announce_if_changed(&mut self, ctx: &mut Ctx<'_>) {
        if !self.established() || !self.peer_mobike {
            return;
        }
        let queued = self
            .window
            .queue
            .iter()
            .any(|q| matches!(q, QueuedRequest::AnnounceAddresses));
        if queued || self.addrs.sent.as_ref() == Some(&self.our_address_list(ctx)) {
            return;
        }
        self.window
            .queue
            .push_back(QueuedRequest::AnnounceAddresses);
        self.start_next_request(ctx);
    }

    /// [`crate::engine::Command::AnnounceAddresses`] reached this IKE SA
    /// (the endpoint already holds the new addresses).
    pub(in crate::engine) fn command_announce_addresses(&mut self, ctx: &mut Ctx<'_>) {
        self.announce_if_changed(ctx);
    }

    /// Builds and sends our list (RFC 4555 §3.6: "This is done by sending
    /// an INFORMATIONAL exchange request containing the new list"), as it
    /// is now; nothing when the peer already has it.
    pub(super) fn start_announce_addresses(&mut self, ctx: &mut Ctx<'_>) {
        if self.state != State::Established || !self.peer_mobike {
            return;
        }
        let list = self.our_address_list(ctx);
        if self.addrs.sent.as_ref() == Some(&list) {
            return;
        }
        info!(sa = self.id, addrs = ?list, "announcing our address list (MOBIKE)");
        let payloads = list_payloads(&list, true);
        self.addrs.sent = Some(list);
        self.send_request(
            ctx,
            ExchangeType::INFORMATIONAL,
            &payloads,
            BuiltRequest::AnnounceAddresses,
        );
    }

    /// Our list as of the address this IKE SA moves to, for its
    /// UPDATE_SA_ADDRESSES (RFC 4555 §3.6: the new list goes in "an
    /// INFORMATIONAL exchange request", which the update is): none when
    /// the peer has it already. The move then needs no exchange of its own
    /// for the list.
    pub(super) fn update_address_list(&mut self, ctx: &Ctx<'_>) -> Vec<Payload> {
        let list = self.our_address_list(ctx);
        if !self.peer_mobike || self.addrs.sent.as_ref() == Some(&list) {
            return Vec::new();
        }
        info!(sa = self.id, addrs = ?list, "our address list goes with the update (MOBIKE)");
        let payloads = list_payloads(&list, true);
        self.addrs.sent = Some(list);
        payloads
    }

    /// The peer answered our list.
    pub(super) fn complete_announce_addresses(&mut self, p: &[Payload]) {
        if let Some(err) = first_error(p) {
            warn!(sa = self.id, notify = ?err, "the peer refused our address list");
        }
    }

    /// Takes the peer's list from a verified IKE_AUTH message or
    /// INFORMATIONAL request (RFC 4555 §3.4 "The recipient stores this
    /// information"; §3.6 "The new list of addresses replaces the old
    /// information"). A malformed list, or one without MOBIKE in an
    /// INFORMATIONAL exchange, is refused and counted and changes nothing.
    pub(super) fn take_peer_addresses(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        p: &[Payload],
    ) {
        if !has_list(p) {
            return;
        }
        if !self.peer_mobike {
            if exchange == ExchangeType::IKE_AUTH {
                // A MOBIKE peer lists its addresses before it knows whether
                // we agree; without MOBIKE the list means nothing.
                debug!(sa = self.id, "address list ignored: MOBIKE not negotiated");
            } else {
                warn!(
                    sa = self.id,
                    ?exchange,
                    "address list refused: MOBIKE was not negotiated on this IKE SA"
                );
                ctx.stats.address_lists_refused += 1;
            }
            return;
        }
        let list = match parse_list(p) {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(why) => {
                warn!(sa = self.id, ?exchange, %why, "malformed address list refused (RFC 4555 §4)");
                ctx.stats.address_lists_refused += 1;
                return;
            }
        };
        if list == self.addrs.peer {
            return;
        }
        info!(sa = self.id, addrs = ?list, "the peer's address list changed (MOBIKE)");
        self.addrs.peer = list.clone();
        ctx.event(Event::PeerAddresses {
            sa: self.id,
            addrs: list,
        });
    }

    /// Refuses a list in a verified message of an exchange it does not
    /// belong in: RFC 4555 §3.4 and §3.6 carry lists in IKE_AUTH and in
    /// INFORMATIONAL requests only, so one in CREATE_CHILD_SA or in an
    /// answer to our INFORMATIONAL is logged, counted and not taken; the
    /// rest of the message is handled as usual.
    pub(super) fn refuse_misplaced_list(
        &self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        response: bool,
        p: &[Payload],
    ) {
        let allowed = exchange == ExchangeType::IKE_AUTH
            || (exchange == ExchangeType::INFORMATIONAL && !response);
        if !allowed && has_list(p) {
            warn!(
                sa = self.id,
                ?exchange,
                response,
                "address list refused: it belongs in IKE_AUTH or an INFORMATIONAL request (RFC 4555 §3.4, §3.6)"
            );
            ctx.stats.address_lists_refused += 1;
        }
    }

    /// Our list as last sent (empty before any, and without MOBIKE, where
    /// the peer has no use for it).
    pub(super) fn sent_addresses(&self) -> Vec<IpAddr> {
        if !self.peer_mobike {
            return Vec::new();
        }
        self.addrs.sent.clone().unwrap_or_default()
    }

    /// The peer's list.
    pub(super) fn peer_addresses(&self) -> &[IpAddr] {
        &self.addrs.peer
    }
}

#[cfg(test)]
#[path = "addresses_tests.rs"]
mod tests;
