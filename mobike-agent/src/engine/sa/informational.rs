//! INFORMATIONAL exchanges (RFC 7296 §1.4): liveness checks, Delete of the
//! IKE SA or of CHILD_SAs (§1.4.1), AUTHENTICATION_FAILED (§2.21.2) and the
//! answers to the peer's.

use tracing::warn;

use crate::engine::{CommandError, Ctx, DeleteReason};
use crate::proto::{Delete, ExchangeType, NotifyType, Payload, ProtocolId};

use super::{BuiltRequest, ChildState, IkeSa, QueuedRequest, SaOp, State, notify, notify_of};

impl IkeSa {
    /// Deletes one CHILD_SA with the peer (INFORMATIONAL with a Delete of
    /// its ESP SPI, RFC 7296 §1.4.1); the kernel state goes when the peer
    /// answers (or with the IKE SA).
    pub(in crate::engine) fn command_delete_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        spi: u32,
    ) -> Result<(), CommandError> {
        self.command_on_child(ctx, spi, QueuedRequest::DeleteChild(vec![spi]))
    }

    pub(in crate::engine) fn command_dpd(&mut self, ctx: &mut Ctx<'_>) -> Result<(), CommandError> {
        self.require_established()?;
        self.window.queue.push_back(QueuedRequest::Dpd);
        self.start_next_request(ctx);
        Ok(())
    }

    /// INFORMATIONAL with a Delete of our inbound ESP SPIs (§1.4.1).
    pub(super) fn send_child_delete(&mut self, ctx: &mut Ctx<'_>, spis: Vec<u32>) {
        let d = Payload::Delete(Delete {
            protocol: ProtocolId::ESP,
            spi_size: 4,
            spis: spis.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
        });
        self.send_request(
            ctx,
            ExchangeType::INFORMATIONAL,
            &[d],
            BuiltRequest::DeleteChild(spis),
        );
    }

    pub(super) fn respond_informational(&mut self, ctx: &mut Ctx<'_>, id: u32, p: &[Payload]) {
        if notify_of(p, NotifyType::AUTHENTICATION_FAILED).is_some() {
            // §2.21.2: the initiator could not verify our AUTH.
            warn!(sa = self.id, "peer reports AUTHENTICATION_FAILED");
            self.destroy(ctx, DeleteReason::AuthenticationFailed);
            return;
        }
        let deletes: Vec<&Delete> = p
            .iter()
            .filter_map(|x| match x {
                Payload::Delete(d) => Some(d),
                _ => None,
            })
            .collect();
        if deletes.iter().any(|d| d.protocol == ProtocolId::IKE) {
            self.respond(ctx, ExchangeType::INFORMATIONAL, id, &[]);
            if let Some(parent) = self.rekey.collision_parent.take() {
                // §2.8.2: the peer found this SA redundant before our own
                // rekey finished; our rekey's SA gets the CHILD_SAs.
                let children = std::mem::take(&mut self.children);
                ctx.sa_ops.push(SaOp::HandOff {
                    to: parent,
                    children,
                });
                self.state = State::Rekeyed;
            }
            let reason = if self.state == State::Rekeyed {
                DeleteReason::Rekeyed
            } else {
                DeleteReason::PeerDeleted
            };
            self.destroy(ctx, reason);
            return;
        }
        // RFC 4555 §3.6: the peer's new address list, in any INFORMATIONAL
        // request (alone or with other MOBIKE notifies).
        self.take_peer_addresses(ctx, ExchangeType::INFORMATIONAL, p);
        let mut ours = Vec::new();
        for d in deletes.iter().filter(|d| d.protocol == ProtocolId::ESP) {
            for spi in &d.spis {
                let Ok(spi) = <[u8; 4]>::try_from(spi.as_slice()).map(u32::from_be_bytes) else {
                    warn!(
                        sa = self.id,
                        len = spi.len(),
                        "Delete with an ESP SPI that is not 4 octets: ignored"
                    );
                    ctx.stats.unexpected += 1;
                    continue;
                };
                // The peer names its inbound SPI, our outbound (§1.4.1).
                if let Some(c) = self.children.iter().find(|c| c.outbound_spi == spi) {
                    let inbound = c.inbound_spi;
                    // If we were deleting it too, our Delete gets an empty
                    // answer; answer with it only once.
                    ours.push(inbound);
                }
            }
        }
        for spi in &ours {
            self.remove_child(ctx, *spi);
        }
        let mut answer: Vec<Payload> = if deletes.is_empty() {
            Vec::new()
        } else {
            vec![Payload::Delete(Delete {
                protocol: ProtocolId::ESP,
                spi_size: 4,
                spis: ours.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
            })]
        };
        if self.peer_mobike && notify_of(p, NotifyType::UPDATE_SA_ADDRESSES).is_some() {
            self.respond_update_addresses(ctx, id, p, &mut answer);
        } else {
            self.answer_nat_d(ctx, p, &mut answer);
        }
        if let Some(c2) = notify_of(p, NotifyType::COOKIE2) {
            // RFC 4555 §3.6 / §5.2.1: return routability check. §3.7: the
            // data is 8 to 64 octets; anything else is not echoed (the
            // peer's check fails as with any wrong answer) but counted.
            if (8..=64).contains(&c2.data.len()) {
                answer.push(notify(NotifyType::COOKIE2, c2.data.clone()));
            } else {
                warn!(
                    sa = self.id,
                    len = c2.data.len(),
                    "COOKIE2 of a length RFC 4555 §3.7 does not allow: not echoed"
                );
                ctx.stats.bad_cookie2 += 1;
            }
        }
        // Liveness checks and other notifies get an (otherwise) empty answer.
        self.respond(ctx, ExchangeType::INFORMATIONAL, id, &answer);
    }

    /// Sends a liveness check: an empty INFORMATIONAL (§2.4), with NAT-D
    /// when a MOBIKE initiator behind a NAT watches its mapping (RFC 4555
    /// §3.8, [`IkeSa::liveness_nat_d`]).
    pub(super) fn start_dpd(&mut self, ctx: &mut Ctx<'_>) {
        let payloads = self.liveness_nat_d();
        self.send_request(
            ctx,
            ExchangeType::INFORMATIONAL,
            &payloads,
            BuiltRequest::Dpd,
        )
    }

    /// Builds and sends our Delete of the IKE SA (§1.4.1).
    pub(super) fn start_delete_ike(&mut self, ctx: &mut Ctx<'_>) {
        // An old SA after a rekey keeps its state (and reason).
        let reason = if self.state == State::Rekeyed {
            DeleteReason::Rekeyed
        } else {
            self.state = State::Deleting;
            DeleteReason::Local
        };
        let d = Payload::Delete(Delete {
            protocol: ProtocolId::IKE,
            spi_size: 0,
            spis: vec![],
        });
        self.send_request(
            ctx,
            ExchangeType::INFORMATIONAL,
            &[d],
            BuiltRequest::DeleteIke(reason),
        );
    }

    /// Builds and sends our Delete of these CHILD_SAs (inbound SPIs) that
    /// still exist.
    pub(super) fn start_delete_child(&mut self, ctx: &mut Ctx<'_>, spis: Vec<u32>) {
        let spis: Vec<u32> = spis
            .into_iter()
            .filter(|s| self.children.iter().any(|c| c.inbound_spi == *s))
            .collect();
        if spis.is_empty() || self.state != State::Established {
            return;
        }
        for c in &mut self.children {
            if spis.contains(&c.inbound_spi) {
                c.state = ChildState::Deleting;
            }
        }
        self.send_child_delete(ctx, spis);
    }

    /// Deletes a CHILD_SA the peer made in an exchange we refused.
    pub(super) fn start_delete_refused(&mut self, ctx: &mut Ctx<'_>, spi: u32) {
        if self.state != State::Established {
            return;
        }
        self.send_child_delete(ctx, vec![spi]);
    }

    /// Our Delete of the IKE SA was answered: it ends.
    pub(super) fn complete_delete_ike(&mut self, ctx: &mut Ctx<'_>, reason: DeleteReason) {
        self.destroy(ctx, reason);
    }

    /// Our Delete of CHILD_SAs was answered: they go from the kernel.
    pub(super) fn complete_delete_child(&mut self, ctx: &mut Ctx<'_>, spis: Vec<u32>) {
        for spi in spis {
            self.remove_child(ctx, spi);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::proto::{ExchangeType, NotifyType};

    use super::super::notify;
    use super::super::test_pair::established;

    /// B asks A (an INFORMATIONAL with COOKIE2 of `len` octets); returns
    /// the size of A's answer and A's count of bad COOKIE2s.
    fn answer_to_cookie2_of(len: usize) -> (usize, u64) {
        let (now, mut a, mut b) = established();
        let b_sa = b.sas.values_mut().next().unwrap();
        let id = b_sa.window.next_msg_id;
        let h = b_sa.header(ExchangeType::INFORMATIONAL, id, false);
        let req = b_sa
            .seal(h, &[notify(NotifyType::COOKIE2, vec![7; len])])
            .unwrap();
        let path = b.ike_sas()[0].path;
        let d = [&[0u8; 4][..], &req].concat();
        a.handle_datagram(now, path.remote, path.local, &d);
        let answer = a.poll_transmit().expect("an answer");
        (answer.payload.len(), a.stats().bad_cookie2)
    }

    #[test]
    fn a_cookie2_is_echoed_only_when_its_length_is_allowed() {
        // RFC 4555 §3.7: 8 to 64 octets.
        let (echoed, bad) = answer_to_cookie2_of(64);
        assert_eq!(bad, 0);
        for len in [4, 65, 1000] {
            let (size, bad) = answer_to_cookie2_of(len);
            assert_eq!(bad, 1, "{len}");
            assert!(size < echoed - 60, "{len}: answer of {size} bytes");
        }
    }
}
