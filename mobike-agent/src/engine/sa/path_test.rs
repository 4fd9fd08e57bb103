//! MOBIKE path testing (RFC 4555 §3.10, §3.7), initiator side.
//!
//! §3.10: a peer with several addresses may test other paths than the one
//! in use; the test is a protected INFORMATIONAL exchange, and §3.7 has the
//! initiator put a COOKIE2 into such requests so that a replayed or forged
//! answer cannot pass for a fresh one. The IKE message-ID window is one
//! (RFC 7296 §2.3), so the pairs are tested in parallel as charon does:
//! the SAME request (one message ID, one sealed message) goes out on every
//! pair and is retransmitted on all of them with the usual backoff; the
//! responder answers each copy where it came from (RFC 7296 §2.11: the
//! first copy fresh, the others from its response cache). An answer
//! arriving on a pair means that pair works, its round-trip time counted
//! from that pair's first send.
//!
//! The first answer completes the exchange (the window is free again);
//! answers to copies already sent on other pairs are still taken until the
//! time the exchange would have given up ([`LingeringTest`]); pairs still
//! unanswered then are reported with no round-trip time.
//!
//! A failed test is no evidence that the peer is dead — only that these
//! pairs do not work — so it never deletes the IKE SA (§3.10 leaves the
//! decision to move to the initiator; DPD, RFC 7296 §2.4, judges the pair
//! in use). One exception is inherent to the message-ID window: if no pair
//! answered, the peer may or may not have seen the request, and our next
//! request must neither skip its message ID nor reuse it with other
//! content. The same sealed request therefore stays outstanding as a
//! liveness check of the current pair (a retransmission, RFC 7296 §2.1):
//! if that pair fails too, the SA ends as with any liveness check.

use std::time::Instant;

use tracing::{debug, info, warn};

use crate::engine::{CommandError, Ctx, Event, Path};
use crate::proto::{ExchangeType, NotifyType, Payload};

use super::{
    BuiltRequest, IkeSa, QueuedRequest, SentRequest, State, backoff, notify, notify_of,
    request::{PathTest, Probe},
};

/// COOKIE2 length we send: RFC 4555 §3.7 allows 8-64 octets; 16 random
/// octets make it unpredictable.
pub(super) const COOKIE2_LEN: usize = 16;

/// The pairs of a completed test that have not answered yet: answers to
/// copies already sent are taken until `until`.
#[derive(Debug, Clone)]
pub(super) struct LingeringTest {
    msg_id: u32,
    cookie2: Vec<u8>,
    pending: Vec<Probe>,
    until: Instant,
}

impl IkeSa {
    pub(in crate::engine) fn command_test_paths(
        &mut self,
        ctx: &mut Ctx<'_>,
        paths: Vec<Path>,
    ) -> Result<(), CommandError> {
        self.require_mobike_initiator(&paths)?;
        let mut unique: Vec<Path> = Vec::new();
        for p in paths {
            if !unique.contains(&p) {
                unique.push(p);
            }
        }
        if unique.is_empty() {
            return Ok(());
        }
        self.window
            .queue
            .push_back(QueuedRequest::TestPaths(unique));
        self.start_next_request(ctx);
        Ok(())
    }

    /// Builds the test request once and sends it on every pair.
    pub(super) fn start_path_test(&mut self, ctx: &mut Ctx<'_>, paths: Vec<Path>) {
        if self.state != State::Established {
            return;
        }
        let Some(cookie2) = ctx.random::<COOKIE2_LEN>() else {
            warn!(sa = self.id, "no randomness for COOKIE2; path test dropped");
            return;
        };
        let msg_id = self.window.next_msg_id;
        let payloads = [notify(NotifyType::COOKIE2, cookie2.to_vec())];
        let Some(bytes) = self.seal(
            self.header(ExchangeType::INFORMATIONAL, msg_id, false),
            &payloads,
        ) else {
            return;
        };
        // A lingering test of an earlier message ID ends here: its copies
        // can no longer be answered once the peer sees this request. The
        // pairs tested again get this test's result, not a stale failure
        // reported after the new test was asked for.
        self.end_lingering_test(ctx, &paths);
        self.window.next_msg_id = msg_id.wrapping_add(1);
        for p in &paths {
            ctx.send(*p, ctx.config.nat_t_port, &bytes);
        }
        debug!(sa = self.id, msg_id, pairs = paths.len(), "path test sent");
        let timeout = self.conn(ctx).timers.retransmit_timeout;
        let probes = paths
            .into_iter()
            .map(|path| Probe {
                path,
                first_sent: ctx.now,
                answered: false,
            })
            .collect();
        self.window.in_flight = Some(SentRequest {
            msg_id,
            exchange: ExchangeType::INFORMATIONAL,
            bytes,
            request: Some(BuiltRequest::PathTest(PathTest {
                cookie2: cookie2.to_vec(),
                probes,
            })),
            sent: 1,
            next: ctx.now + timeout,
        });
    }

    /// The pairs a request in flight is (re)transmitted on: every tested
    /// pair for a path test, the SA's pair otherwise.
    pub(super) fn destinations(&self, o: &SentRequest) -> Vec<Path> {
        match &o.request {
            Some(BuiltRequest::PathTest(t)) => t.probes.iter().map(|p| p.path).collect(),
            _ => vec![self.path],
        }
    }

    /// Whether the answer `p` echoes our COOKIE2 `ours` (RFC 4555 §3.5,
    /// §3.7); if not, it is logged as the `what` answer and counted.
    pub(super) fn cookie2_matches(
        &self,
        ctx: &mut Ctx<'_>,
        p: &[Payload],
        ours: &[u8],
        what: &str,
    ) -> bool {
        let why = match notify_of(p, NotifyType::COOKIE2) {
            Some(n) if n.data == ours => return true,
            Some(n) if !(8..=64).contains(&n.data.len()) => {
                "a malformed COOKIE2 (RFC 4555 §3.7: 8-64 octets)"
            }
            Some(_) => "another COOKIE2",
            None => "no COOKIE2",
        };
        warn!(sa = self.id, "{what} answer with {why}: not taken");
        ctx.stats.bad_cookie2 += 1;
        false
    }

    /// The verified answer `p` to our path test `o` arrived on `path`:
    /// that pair works. The other pairs' answers are taken while the test
    /// lingers. An answer without our COOKIE2 does not count and leaves
    /// the request outstanding.
    pub(super) fn complete_path_test(
        &mut self,
        ctx: &mut Ctx<'_>,
        o: SentRequest,
        path: Path,
        p: &[Payload],
    ) {
        let Some(BuiltRequest::PathTest(mut test)) = o.request else {
            return;
        };
        if !self.cookie2_matches(ctx, p, &test.cookie2, "path test") {
            self.window.in_flight = Some(SentRequest {
                request: Some(BuiltRequest::PathTest(test)),
                ..o
            });
            return;
        }
        mark_answered(ctx, self.id, &mut test.probes, path);
        let timers = &self.conn(ctx).timers;
        // The exchange would have given up after the last retransmission's
        // timeout: copies sent until now may be answered until then.
        let mut until = o.next;
        for k in o.sent..=timers.retransmit_tries {
            until += backoff(timers.retransmit_timeout, k);
        }
        let pending: Vec<Probe> = test.probes.into_iter().filter(|p| !p.answered).collect();
        if !pending.is_empty() {
            self.moving_mut().lingering_test = Some(LingeringTest {
                msg_id: o.msg_id,
                cookie2: test.cookie2,
                pending,
                until,
            });
        }
    }

    /// A verified late answer to the lingering path test (the caller
    /// matched its message ID), on `path`.
    pub(super) fn late_path_test_answer(&mut self, ctx: &mut Ctx<'_>, path: Path, p: &[Payload]) {
        let Some(mut t) = self.take_moving(|m| m.lingering_test.take()) else {
            return;
        };
        if self.cookie2_matches(ctx, p, &t.cookie2, "path test") {
            mark_answered(ctx, self.id, &mut t.pending, path);
            t.pending.retain(|p| !p.answered);
        }
        if !t.pending.is_empty() {
            self.moving_mut().lingering_test = Some(t);
        }
    }

    /// The message ID of a lingering test, for matching late answers
    /// before they are decrypted.
    pub(super) fn lingering_test_id(&self) -> Option<u32> {
        self.moving()
            .and_then(|m| m.lingering_test.as_ref())
            .map(|t| t.msg_id)
    }

    pub(super) fn lingering_test_deadline(&self) -> Option<Instant> {
        self.moving()
            .and_then(|m| m.lingering_test.as_ref())
            .map(|t| t.until)
    }

    /// Reports the lingering test's unanswered pairs as such, once its
    /// time is up (or a new test replaces it), but for those `retested`.
    pub(super) fn end_lingering_test(&mut self, ctx: &mut Ctx<'_>, retested: &[Path]) {
        if let Some(t) = self.take_moving(|m| m.lingering_test.take()) {
            for p in t.pending {
                if !retested.contains(&p.path) {
                    report(ctx, self.id, p.path, None);
                }
            }
        }
    }

    /// The path test in flight went unanswered on every pair: all are
    /// reported unanswered, and the same request stays outstanding as a
    /// liveness check of the current pair (see the module comment).
    pub(super) fn give_up_path_test(&mut self, ctx: &mut Ctx<'_>, o: SentRequest) {
        let Some(BuiltRequest::PathTest(test)) = o.request else {
            return;
        };
        for p in &test.probes {
            report(ctx, self.id, p.path, None);
        }
        info!(
            sa = self.id,
            "no tested pair answered; the test continues as a liveness check of the current pair"
        );
        let timeout = self.conn(ctx).timers.retransmit_timeout;
        ctx.send(self.path, ctx.config.nat_t_port, &o.bytes);
        self.window.in_flight = Some(SentRequest {
            request: Some(BuiltRequest::Dpd),
            sent: 1,
            next: ctx.now + timeout,
            ..o
        });
    }
}

/// Marks the probe of `path` answered and reports it. The answer may come
/// back on another remote port (a NAT): then the local address and remote
/// IP decide.
fn mark_answered(ctx: &mut Ctx<'_>, sa: u64, probes: &mut [Probe], path: Path) {
    let probe = match probes.iter().position(|p| p.path == path) {
        Some(i) => Some(i),
        None => probes
            .iter()
            .position(|p| p.path.local == path.local && p.path.remote.ip() == path.remote.ip()),
    };
    match probe.map(|i| &mut probes[i]) {
        Some(p) if !p.answered => {
            p.answered = true;
            let rtt = ctx.now.saturating_duration_since(p.first_sent);
            report(ctx, sa, p.path, Some(rtt));
        }
        Some(_) => {}
        None => {
            debug!(sa, local = %path.local, remote = %path.remote, "path test answer on an untested pair");
        }
    }
}

fn report(ctx: &mut Ctx<'_>, sa: u64, path: Path, rtt: Option<std::time::Duration>) {
    debug!(sa, local = %path.local, remote = %path.remote, ?rtt, "path tested");
    ctx.event(Event::PathTested { sa, path, rtt });
}

#[cfg(test)]
mod tests {
    //! Answers only the peer's keys can make: a path test answer with
    //! another COOKIE2, and UPDATE_SA_ADDRESSES from the original
    //! responder, sealed with the responder SA's own keys.

    use std::net::SocketAddr;

    use crate::engine::{Command, Event};
    use crate::proto::{ExchangeType, NotifyType};

    use super::super::notify;
    use super::super::test_pair::{established, events};

    #[test]
    fn a_path_test_answer_with_another_cookie2_does_not_count() {
        let (now, mut a, mut b) = established();
        let sa = a.ike_sas()[0].id;
        let path = a.ike_sas()[0].path;
        a.handle_command(
            now,
            Command::TestPaths {
                sa,
                paths: vec![path],
            },
        )
        .unwrap();
        let request = a.poll_transmit().expect("test sent");
        let msg_id = a.ike_sas()[0].next_request_id - 1;
        // An authentic answer (B's keys) with a COOKIE2 of the wrong
        // length, then one of the right length but other octets.
        let b_sa = b.sas.values_mut().next().unwrap();
        let h = b_sa.header(ExchangeType::INFORMATIONAL, msg_id, true);
        for cookie in [vec![7u8; 4], vec![7u8; 16]] {
            let forged = b_sa
                .seal(h, &[notify(NotifyType::COOKIE2, cookie)])
                .unwrap();
            let d = [&[0u8; 4][..], &forged].concat();
            a.handle_datagram(now, path.local, path.remote, &d);
        }
        assert_eq!(a.stats().bad_cookie2, 2);
        assert!(events(&mut a).is_empty(), "no PathTested");
        // The genuine answer counts.
        b.handle_datagram(now, request.remote, request.local, &request.payload);
        let answer = b.poll_transmit().expect("answer");
        a.handle_datagram(now, answer.remote, answer.local, &answer.payload);
        assert_eq!(
            events(&mut a),
            vec![Event::PathTested {
                sa,
                path,
                rtt: Some(std::time::Duration::ZERO)
            }]
        );
    }

    #[test]
    fn an_update_from_the_original_responder_is_ignored() {
        let (now, mut a, mut b) = established();
        let before = a.ike_sas()[0].path;
        let b_sa = b.sas.values_mut().next().unwrap();
        let msg_id = b_sa.window.next_msg_id;
        let h = b_sa.header(ExchangeType::INFORMATIONAL, msg_id, false);
        let req = b_sa
            .seal(
                h,
                &[
                    notify(NotifyType::UPDATE_SA_ADDRESSES, vec![]),
                    notify(NotifyType::COOKIE2, vec![1; 16]),
                ],
            )
            .unwrap();
        let moved: SocketAddr = "192.0.2.99:4500".parse().unwrap();
        let d = [&[0u8; 4][..], &req].concat();
        a.handle_datagram(now, before.local, moved, &d);
        assert_eq!(a.stats().update_from_responder, 1);
        assert_eq!(a.ike_sas()[0].path, before);
        assert!(
            !events(&mut a)
                .iter()
                .any(|e| matches!(e, Event::PathChanged { .. }))
        );
        // Answered (the exchange completes), from where it came.
        let t = a.poll_transmit().expect("answer");
        assert_eq!(t.remote, moved);
    }
}
