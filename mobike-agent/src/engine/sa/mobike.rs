//! MOBIKE address updates (RFC 4555 §3.5) in both roles: the
//! UPDATE_SA_ADDRESSES request sent from the new address pair with NAT-D and
//! COOKIE2 (and NO_NATS_ALLOWED when configured, §3.9), and moving the
//! CHILD_SAs ([`KernelAction::MigrateChildSa`]); the answer to the peer's
//! is in [`super::return_routability`].

use tracing::{info, warn};

use crate::engine::{CommandError, Ctx, Event, KernelAction, Path};
use crate::{
    crypto,
    proto::{ExchangeType, NotifyType, Payload},
};

use super::{BuiltRequest, IkeSa, QueuedRequest, State, first_error, notify, notify_of};

impl IkeSa {
    pub(in crate::engine) fn command_update_addresses(
        &mut self,
        ctx: &mut Ctx<'_>,
        path: Path,
    ) -> Result<(), CommandError> {
        self.require_established()?;
        if !self.peer_mobike {
            return Err(CommandError::NoMobike(self.id));
        }
        self.window
            .queue
            .push_back(QueuedRequest::UpdateAddresses(path));
        self.start_next_request(ctx);
        Ok(())
    }

    /// NAT-D notifies for `path` (RFC 7296 §2.23; RFC 4555 §3.5 carries
    /// them in UPDATE_SA_ADDRESSES exchanges too).
    pub(super) fn nat_d_payloads(&self, path: Path) -> [Payload; 2] {
        [
            notify(
                NotifyType::NAT_DETECTION_SOURCE_IP,
                crypto::nat_detection_hash(self.spi_i, self.spi_r, path.local),
            ),
            notify(
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                crypto::nat_detection_hash(self.spi_i, self.spi_r, path.remote),
            ),
        ]
    }

    /// Moves every CHILD_SA from `old` to the current path in the kernel.
    pub(super) fn migrate_children(&mut self, ctx: &mut Ctx<'_>, old: Path) {
        let encap = self.encap();
        for c in &self.children {
            ctx.kernel(KernelAction::MigrateChildSa {
                reqid: c.reqid,
                inbound_spi: c.inbound_spi,
                outbound_spi: c.outbound_spi,
                from: (old.local.ip(), old.remote.ip()),
                to: (self.path.local.ip(), self.path.remote.ip()),
                encap,
            });
        }
        info!(sa = self.id, local = %self.path.local, remote = %self.path.remote, "IKE SA moved (MOBIKE)");
        ctx.event(Event::PathChanged {
            sa: self.id,
            path: self.path,
        });
    }

    /// Builds and sends UPDATE_SA_ADDRESSES from `path` (RFC 4555 §3.5).
    pub(super) fn start_update_addresses(&mut self, ctx: &mut Ctx<'_>, path: Path) {
        if self.state != State::Established {
            return;
        }
        let Some(cookie2) = ctx.random::<16>() else {
            return;
        };
        let old = self.path;
        // Sent (and retransmitted) from the new address (§3.5).
        self.path = path;
        let mut payloads = vec![notify(NotifyType::UPDATE_SA_ADDRESSES, vec![])];
        payloads.extend(self.nat_d_payloads(path));
        payloads.push(notify(NotifyType::COOKIE2, cookie2.to_vec()));
        payloads.extend(self.no_nats_payload(ctx, path));
        self.send_request(
            ctx,
            ExchangeType::INFORMATIONAL,
            &payloads,
            BuiltRequest::UpdateAddresses {
                old,
                cookie2: cookie2.to_vec(),
            },
        );
    }

    /// Completes our UPDATE_SA_ADDRESSES (RFC 4555 §3.5): on an answer that
    /// echoes our COOKIE2 and refuses nothing, the CHILD_SAs follow to the
    /// new path; otherwise the IKE SA goes back to `old`.
    pub(super) fn complete_update_addresses(
        &mut self,
        ctx: &mut Ctx<'_>,
        old: Path,
        cookie2: Vec<u8>,
        p: &[Payload],
    ) {
        // RFC 4555 §3.5: the answer must echo our COOKIE2.
        if notify_of(p, NotifyType::COOKIE2).is_none_or(|n| n.data != cookie2) {
            warn!(
                sa = self.id,
                "UPDATE_SA_ADDRESSES answer without our COOKIE2"
            );
            self.path = old;
            return;
        }
        if let Some(err) = first_error(p) {
            warn!(sa = self.id, notify = ?err, "address update refused");
            self.path = old;
            return;
        }
        let h = self.header(ExchangeType::INFORMATIONAL, 0, false);
        let path = self.path;
        self.detect_nat(ctx, path, &h, p);
        self.note_nat_mapping(p);
        if path != old {
            self.migrate_children(ctx, old);
        }
    }
}
