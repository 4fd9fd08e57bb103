//! The mobility manager's state in the control API's terms: the source
//! feeding it, and per IKE SA the candidates, path tests and moves with
//! their timelines (`proto/mobike/v1/agent.proto`, messages `Mobility`,
//! `SaMobility`, `Move`).

use std::time::{Duration, Instant, SystemTime};

use trigger_proto::mobike_v1 as pb;

use crate::mobility::{
    Active, MobilityStatus,
    manager::{SaMobility, Timeline},
};

/// The source and its state.
pub(super) fn mobility(m: &MobilityStatus) -> pb::Mobility {
    let (active, why, since) = match &m.active {
        Active::Waiting { since, why } => ("waiting", why.clone(), since),
        Active::TriggerDb { since } => ("trigger-db", String::new(), since),
        Active::Netlink { since, why } => ("netlink", why.clone(), since),
    };
    pb::Mobility {
        source: m.source.as_str().into(),
        active: active.into(),
        why,
        since_unix_ms: since
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        synced: m.synced,
        interfaces: u32::try_from(m.interfaces).unwrap_or(u32::MAX),
        rejected: m.rejected,
        reports_dropped: m.reports_dropped,
        kernel_hints: m.kernel_hints,
    }
}

/// One IKE SA's paths at `now`.
pub(super) fn sa_mobility(s: &SaMobility, now: Instant) -> pb::SaMobility {
    pb::SaMobility {
        candidates: s
            .candidates
            .iter()
            .map(|c| pb::Candidate {
                local: c.pair.local.to_string(),
                remote: c.pair.remote.to_string(),
                interface: c.iface_name.clone(),
                score: c.score,
                last_resort: c.last_resort,
                current: c.pair == s.current,
            })
            .collect(),
        tests: s
            .tests
            .iter()
            .map(|(p, t)| pb::PathTest {
                local: p.local.to_string(),
                remote: p.remote.to_string(),
                rtt_us: t.rtt.map(micros),
                age_ms: now.saturating_duration_since(t.at).as_millis() as u64,
            })
            .collect(),
        moving: s.moving.as_ref().map(|t| move_of(t, now)),
        moves: s.moves.iter().map(|t| move_of(t, now)).collect(),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A move's timeline, its stages counted from the trigger's receipt (or
/// the decision).
pub(super) fn move_of(t: &Timeline, now: Instant) -> pb::Move {
    let start = t.cause.map_or(t.decided, |c| c.received.min(t.decided));
    let at = |i: Option<Instant>| i.map(|i| micros(i.saturating_duration_since(start)));
    let observed_to_received = t.cause.and_then(|c| {
        // The source's wall clock against ours: a trigger observed "after"
        // its receipt (clock steps) has no meaningful figure.
        let received_wall =
            SystemTime::now().checked_sub(now.saturating_duration_since(c.received))?;
        received_wall.duration_since(c.observed).ok().map(micros)
    });
    let link = |l: &Option<crate::mobility::links::LinkRef>| {
        l.as_ref().map(|l| l.name.clone()).unwrap_or_default()
    };
    pb::Move {
        reason: t.reason.as_str().into(),
        from_local: t.from.local.to_string(),
        from_remote: t.from.remote.to_string(),
        from_interface: link(&t.from_link),
        to_local: t.to.map(|p| p.local.to_string()).unwrap_or_default(),
        to_remote: t.to.map(|p| p.remote.to_string()).unwrap_or_default(),
        to_interface: link(&t.to_link),
        trigger_id: t.cause.map_or(0, |c| c.id),
        observed_to_received_us: observed_to_received,
        decided_us: at(Some(t.decided)),
        tests_sent_us: at(t.tests_sent),
        first_answer_us: at(t.first_answer),
        update_sent_us: at(t.update_sent),
        moved_us: at(t.moved),
        first_esp_us: at(t.first_esp),
        age_ms: now.saturating_duration_since(t.decided).as_millis() as u64,
        failed: t.failed.clone().unwrap_or_default(),
    }
}
