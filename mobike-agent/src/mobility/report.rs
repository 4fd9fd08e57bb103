//! Completed moves written back into trigger-db as LINK_HANDOVER_COMPLETE,
//! so that `triggerctl history` shows each handover beside the link events
//! that caused it.
//!
//! [`HandoverReport`] is what the runtime knows of a completed move: the
//! links and address pairs before and after, why, the trigger that caused
//! it, and how long it took. [`trigger`] turns it into trigger-db's wire
//! form (pure). [`run`] is the actor that delivers the reports: it Adds
//! each one in order, keeps up to [`BACKLOG`] while trigger-db is away
//! (dropping the oldest with a warning when full, never silently), and
//! reconnects with a backoff from 100 ms to 5 s.

use std::{
    collections::VecDeque,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use tokio::{sync::mpsc, time::Instant};
use tonic::Code;
use tracing::{debug, info, warn};
use trigger_proto::v1::{self as pb, trigger::Detail};

use super::{
    links::{IfaceKind, LinkRef},
    policy::{MoveReason, Pair},
};

/// Most reports kept while trigger-db cannot take them.
pub const BACKLOG: usize = 64;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How long one Add may take before the connection counts as broken.
const ADD_TIMEOUT: Duration = Duration::from_secs(5);

/// One completed move of an IKE SA.
#[derive(Debug, Clone, PartialEq)]
pub struct HandoverReport {
    pub old_link: LinkRef,
    pub new_link: LinkRef,
    pub old_pair: Pair,
    pub new_pair: Pair,
    pub reason: MoveReason,
    /// trigger-db's id of the trigger that caused the move; 0 if none (a
    /// voluntary move, or a cause the agent saw by itself).
    pub cause_id: u64,
    /// When the cause was observed (its trigger's time), or the move was
    /// decided when there was no trigger.
    pub observed: SystemTime,
    /// From the cause being received to the move being complete.
    pub duration: Duration,
}

impl HandoverReport {
    /// One line for logs: `eth0 -> wlan0 (192.0.2.1 - 198.51.100.7 ->
    /// 203.0.113.5 - 198.51.100.7, link-down)`.
    pub fn describe(&self) -> String {
        format!(
            "{} -> {} ({} -> {}, {})",
            self.old_link.name,
            self.new_link.name,
            self.old_pair,
            self.new_pair,
            self.reason.as_str()
        )
    }
}

fn kind_to_wire(k: IfaceKind) -> pb::InterfaceKind {
    match k {
        IfaceKind::Ethernet => pb::InterfaceKind::Ethernet,
        IfaceKind::Wlan => pb::InterfaceKind::Wlan,
        IfaceKind::Wwan => pb::InterfaceKind::Wwan,
        IfaceKind::Tunnel => pb::InterfaceKind::Tunnel,
        IfaceKind::Loopback => pb::InterfaceKind::Loopback,
        IfaceKind::Veth => pb::InterfaceKind::Veth,
        IfaceKind::Bridge => pb::InterfaceKind::Bridge,
        IfaceKind::Vlan => pb::InterfaceKind::Vlan,
        IfaceKind::Bond => pb::InterfaceKind::Bond,
        IfaceKind::Other => pb::InterfaceKind::Other,
    }
}

fn link_to_wire(l: &LinkRef) -> pb::Interface {
    pb::Interface {
        index: l.index,
        name: l.name.clone(),
        kind: kind_to_wire(l.kind) as i32,
        driver_kind: l.driver_kind.clone(),
        link_type: pb::LinkType::Unspecified as i32,
    }
}

/// The LINK_HANDOVER_COMPLETE trigger of a report (source CLIENT): about
/// the new link and its local address, observed when the move completed
/// (`observed + duration`), with the move in its handover detail.
pub fn trigger(r: &HandoverReport) -> pb::Trigger {
    let local = r.new_pair.local;
    pb::Trigger {
        id: 0,
        observed_at: Some((r.observed + r.duration).into()),
        source: pb::Source::Client as i32,
        r#type: pb::TriggerType::LinkHandoverComplete as i32,
        interface: Some(link_to_wire(&r.new_link)),
        address: Some(pb::Address {
            address: local.to_string(),
            prefix_len: if local.is_ipv4() { 32 } else { 128 },
            family: if local.is_ipv4() {
                pb::AddressFamily::Ipv4
            } else {
                pb::AddressFamily::Ipv6
            } as i32,
            ..Default::default()
        }),
        reason: None,
        // trigger-db sets it from our credentials (uid, gid, pid).
        origin: String::new(),
        detail: Some(Detail::Handover(pb::Handover {
            old_link: Some(link_to_wire(&r.old_link)),
            new_link: Some(link_to_wire(&r.new_link)),
            old_local_address: r.old_pair.local.to_string(),
            old_remote_address: r.old_pair.remote.to_string(),
            new_local_address: r.new_pair.local.to_string(),
            new_remote_address: r.new_pair.remote.to_string(),
            duration_us: Some(u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX)),
            move_reason: r.reason.as_str().into(),
            cause_trigger_id: r.cause_id,
        })),
    }
}

/// Reports not yet delivered, oldest first, at most `cap`.
#[derive(Debug)]
struct Backlog {
    queue: VecDeque<HandoverReport>,
    cap: usize,
}

impl Backlog {
    fn new(cap: usize) -> Self {
        Self {
            queue: VecDeque::with_capacity(cap),
            cap,
        }
    }

    /// Queues `r`; when full, the oldest makes room and is returned.
    fn push(&mut self, r: HandoverReport) -> Option<HandoverReport> {
        let dropped = if self.queue.len() >= self.cap {
            self.queue.pop_front()
        } else {
            None
        };
        self.queue.push_back(r);
        dropped
    }

    /// Queues `r`, warning about the report that made room for it.
    fn queue(&mut self, r: HandoverReport) {
        if let Some(old) = self.push(r) {
            warn!(
                dropped = %old.describe(),
                cause_id = old.cause_id,
                backlog = self.cap,
                "trigger-db has not taken the handover reports for a while; dropping the oldest"
            );
        }
    }
}

/// The connection to trigger-db, made when needed.
struct Writer {
    socket: PathBuf,
    client: Option<trigger_client::Client>,
}

impl Writer {
    /// Adds the backlog's reports in order until it is empty. A report
    /// trigger-db refuses as invalid is dropped with a warning (sending it
    /// again cannot help); any other failure leaves it first in line and
    /// says why (no connection, or it broke: retry later).
    async fn deliver(&mut self, backlog: &mut Backlog) -> Result<(), String> {
        while let Some(report) = backlog.queue.front() {
            let client = match &mut self.client {
                Some(c) => c,
                None => {
                    let c = trigger_client::connect(&self.socket)
                        .await
                        .map_err(|e| format!("cannot connect: {e}"))?;
                    self.client.insert(c)
                }
            };
            let request = pb::AddRequest {
                triggers: vec![trigger(report)],
            };
            let outcome = tokio::time::timeout(ADD_TIMEOUT, client.add(request)).await;
            match outcome {
                Ok(Ok(reply)) => {
                    debug!(id = ?reply.get_ref().ids.first(), handover = %report.describe(), "handover reported to trigger-db");
                    backlog.queue.pop_front();
                }
                Ok(Err(status)) if status.code() == Code::InvalidArgument => {
                    warn!(
                        handover = %report.describe(),
                        error = %status.message(),
                        "trigger-db refused a handover report as invalid; dropping it"
                    );
                    backlog.queue.pop_front();
                }
                Ok(Err(status)) => {
                    self.client = None;
                    return Err(format!(
                        "Add failed: {:?}: {}",
                        status.code(),
                        status.message()
                    ));
                }
                Err(_) => {
                    self.client = None;
                    return Err(format!("Add not answered within {ADD_TIMEOUT:?}"));
                }
            }
        }
        Ok(())
    }
}

/// Delivers the reports from `rx` to trigger-db on `socket` until `rx` is
/// closed (then tries once more to deliver what is left, and warns about
/// each report it could not).
pub async fn run(mut rx: mpsc::Receiver<HandoverReport>, socket: PathBuf) {
    let mut backlog = Backlog::new(BACKLOG);
    let mut writer = Writer {
        socket,
        client: None,
    };
    let mut backoff = BACKOFF_MIN;
    let mut reported_down = false;
    let mut open = true;
    while open {
        if backlog.queue.is_empty() {
            match rx.recv().await {
                Some(r) => backlog.queue(r),
                None => break,
            }
        }
        while let Ok(r) = rx.try_recv() {
            backlog.queue(r);
        }
        match writer.deliver(&mut backlog).await {
            Ok(()) => {
                if reported_down {
                    info!("trigger-db takes handover reports again");
                    reported_down = false;
                }
                backoff = BACKOFF_MIN;
            }
            Err(why) => {
                if reported_down {
                    debug!(%why, pending = backlog.queue.len(), "handover reports still undelivered");
                } else {
                    warn!(%why, pending = backlog.queue.len(), "cannot report handovers to trigger-db; keeping them and retrying");
                    reported_down = true;
                }
                // Wait out the backoff, still taking reports meanwhile.
                let until = Instant::now() + backoff;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => break,
                        r = rx.recv(), if open => match r {
                            Some(r) => backlog.queue(r),
                            None => open = false,
                        },
                    }
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    if backlog.queue.is_empty() {
        return;
    }
    if let Err(why) = writer.deliver(&mut backlog).await {
        for r in &backlog.queue {
            warn!(handover = %r.describe(), cause_id = r.cause_id, %why, "shutting down with a handover not reported to trigger-db");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn link(index: u32, name: &str, kind: IfaceKind) -> LinkRef {
        LinkRef {
            index,
            name: name.into(),
            kind,
            driver_kind: String::new(),
        }
    }

    fn pair(local: &str, remote: &str) -> Pair {
        Pair {
            local: local.parse::<IpAddr>().unwrap(),
            remote: remote.parse::<IpAddr>().unwrap(),
        }
    }

    fn sample(cause_id: u64) -> HandoverReport {
        HandoverReport {
            old_link: link(2, "eth0", IfaceKind::Ethernet),
            new_link: link(3, "wlan0", IfaceKind::Wlan),
            old_pair: pair("192.0.2.1", "198.51.100.7"),
            new_pair: pair("2001:db8::5", "2001:db8:1::7"),
            reason: MoveReason::LinkDown,
            cause_id,
            observed: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            duration: Duration::from_micros(1_234),
        }
    }

    #[test]
    fn trigger_carries_the_whole_move() {
        let t = trigger(&sample(41));
        assert_eq!(t.r#type, pb::TriggerType::LinkHandoverComplete as i32);
        assert_eq!(t.source, pb::Source::Client as i32);
        let iface = t.interface.as_ref().unwrap();
        assert_eq!(
            (iface.index, iface.name.as_str(), iface.kind),
            (3, "wlan0", pb::InterfaceKind::Wlan as i32)
        );
        let a = t.address.as_ref().unwrap();
        assert_eq!(
            (a.address.as_str(), a.prefix_len, a.family),
            ("2001:db8::5", 128, pb::AddressFamily::Ipv6 as i32)
        );
        let at = t.observed_at.unwrap();
        assert_eq!((at.seconds, at.nanos), (1_800_000_000, 1_234_000));
        let Some(Detail::Handover(h)) = &t.detail else {
            panic!("{t:?}")
        };
        assert_eq!(h.old_link.as_ref().unwrap().name, "eth0");
        assert_eq!(
            h.old_link.as_ref().unwrap().kind,
            pb::InterfaceKind::Ethernet as i32
        );
        assert_eq!(
            (
                h.old_local_address.as_str(),
                h.old_remote_address.as_str(),
                h.new_local_address.as_str(),
                h.new_remote_address.as_str()
            ),
            ("192.0.2.1", "198.51.100.7", "2001:db8::5", "2001:db8:1::7")
        );
        assert_eq!(h.duration_us, Some(1_234));
        assert_eq!(h.move_reason, "link-down");
        assert_eq!(h.cause_trigger_id, 41);
        // What trigger-db will check on Add.
        trigger_model::model::Trigger::from_client(
            &t,
            "triggers[0]",
            trigger_model::model::Timestamp(0),
        )
        .unwrap();
    }

    #[test]
    fn full_backlog_drops_the_oldest_first() {
        let mut b = Backlog::new(3);
        for id in 1..=3 {
            assert_eq!(b.push(sample(id)), None);
        }
        assert_eq!(b.push(sample(4)).map(|r| r.cause_id), Some(1));
        assert_eq!(b.push(sample(5)).map(|r| r.cause_id), Some(2));
        let left: Vec<u64> = b.queue.iter().map(|r| r.cause_id).collect();
        assert_eq!(left, [3, 4, 5]);
    }
}
