//! Re-establishing connections ([`Recovery`]): after a dead peer, a
//! peer's Delete or a failed attempt, with a back-off for restarts in quick
//! succession and `keyingtries` for attempts.

use std::time::{Duration, Instant};

use super::DeleteReason;
#[cfg(doc)]
use super::Recovery;
use super::{Endpoint, Event, sa};

/// Restarts closer together than this back off.
const QUICK_RESTART: Duration = Duration::from_secs(60);
/// The longest back-off between restarts.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

/// A connection's re-establishment ([`Recovery`]).
#[derive(Debug, Clone, Default)]
pub(super) struct ConnRecovery {
    /// When to start it again.
    pub(super) due: Option<Instant>,
    /// [`Event::RestartDue`] was emitted and no initiate has taken yet.
    pub(super) restarting: bool,
    /// Attempts the peer left unanswered since the connection was last
    /// established (or initiation found no addresses).
    pub(super) failed_attempts: u32,
    /// Restarts in quick succession, for the back-off.
    pub(super) quick: u32,
    pub(super) last_restart: Option<Instant>,
}

impl Endpoint {
    /// An IKE SA ended: re-establish its connection if its [`Recovery`]
    /// says so.
    pub(super) fn after_end(&mut self, now: Instant, e: sa::Ended) {
        let Some(c) = self.config.connections.get(e.conn) else {
            return;
        };
        let rec = c.recovery;
        let why = match e.reason {
            DeleteReason::PeerUnreachable if e.established => rec
                .restart_on_dead_peer
                .then_some("the peer stopped answering"),
            DeleteReason::PeerDeleted if e.established => {
                rec.restart_on_peer_close.then_some("the peer closed it")
            }
            DeleteReason::PeerUnreachable if e.initiator => {
                return self.attempt_failed(now, e.conn, "the peer did not answer");
            }
            // The responder refused IKE_SA_INIT or IKE_AUTH with an error
            // notify (a gateway restarting, TEMPORARY_FAILURE, a pool run
            // dry): a failed attempt, retried as keyingtries allow, so a
            // road warrior whose restart met such an answer does not stay
            // down.
            DeleteReason::PeerError(_) if e.initiator && !e.established => {
                return self.attempt_failed(now, e.conn, "the peer refused the attempt");
            }
            _ => None,
        };
        if let Some(why) = why {
            self.schedule_restart(now, e.conn, why);
        }
    }

    /// An attempt to establish connection `conn` failed: another one, unless
    /// `keyingtries` are used up.
    pub(super) fn attempt_failed(&mut self, now: Instant, conn: usize, why: &str) {
        let Some(c) = self.config.connections.get(conn) else {
            return;
        };
        let (name, tries) = (c.name.clone(), c.recovery.keyingtries);
        let r = self.recovery.entry(conn).or_default();
        r.failed_attempts += 1;
        if tries != 0 && r.failed_attempts >= tries {
            tracing::warn!(connection = %name, attempts = r.failed_attempts, reason = why,
                           "giving up establishing the connection (keyingtries)");
            r.failed_attempts = 0;
            r.restarting = false;
            return;
        }
        self.schedule_restart(now, conn, why);
    }

    /// Connection `conn` is to be started again: now, or after a back-off
    /// when the last restart was recent.
    pub(super) fn schedule_restart(&mut self, now: Instant, conn: usize, why: &str) {
        let Some(c) = self.config.connections.get(conn) else {
            return;
        };
        if c.remote_addr.is_none() {
            return;
        }
        let name = c.name.clone();
        let r = self.recovery.entry(conn).or_default();
        let recent = r
            .last_restart
            .is_some_and(|t| now.saturating_duration_since(t) < QUICK_RESTART);
        r.quick = if recent { r.quick.saturating_add(1) } else { 0 };
        let delay = match r.quick {
            0 => Duration::ZERO,
            n => Duration::from_secs(1u64 << n.min(6)).min(MAX_RESTART_DELAY),
        };
        r.due = Some(now + delay);
        tracing::info!(connection = %name, reason = why, delay = ?delay, "re-establishing the connection");
    }

    /// Restarts that are due: [`Event::RestartDue`], unless the connection
    /// has an IKE SA again meanwhile.
    pub(super) fn restarts_due(&mut self, now: Instant) {
        let due: Vec<usize> = self
            .recovery
            .iter()
            .filter(|(_, r)| r.due.is_some_and(|t| t <= now))
            .map(|(c, _)| *c)
            .collect();
        for conn in due {
            let live = self.sas.values().any(|s| s.conn_index() == conn);
            let Some(r) = self.recovery.get_mut(&conn) else {
                continue;
            };
            r.due = None;
            if live {
                continue;
            }
            r.restarting = true;
            r.last_restart = Some(now);
            if let Some(c) = self.config.connections.get(conn) {
                self.out.events.push_back(Event::RestartDue {
                    connection: c.name.clone(),
                });
            }
        }
    }
}
