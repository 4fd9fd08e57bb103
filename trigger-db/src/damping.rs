//! Damping and flaps: a trailing-edge debounce of source triggers per
//! interface and trigger class, and a per-interface counter of link-downs
//! over a sliding window.
//!
//! [`Damper`] holds a source trigger (rtnetlink, NetworkManager) of a class
//! configured with a debounce until that interface and class has been quiet
//! for the debounce time; a newer trigger of the same class replaces the
//! held one (counted as debounced). Link-up and link-down are one class,
//! "link state": when the quiet period ends and the held trigger is the
//! state the interface was already in (down then up again within the
//! window), there was no net change and it is dropped, counted as a
//! suppressed flap. Classes without a debounce, client and MIH triggers
//! (acknowledged with ids) and triggers without an interface pass straight
//! through. When an interface is removed, what is held for it goes out
//! first, so no trigger of an interface follows its IF_REMOVED. Nothing is dropped silently: every drop is counted and logged at
//! debug level. [`FlapCounter`] (from `trigger-model`, which the agent's
//! own watch shares) counts link-downs per interface.
//!
//! This module is pure: no I/O, no clock (`now` is passed in). The writer
//! actor owns one of each, wakes at [`Damper::next_deadline`] and stores
//! what [`Damper::expire`] gives back.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tracing::debug;

use crate::model::{Source, Trigger, TriggerType};
pub use trigger_model::flaps::{FlapCounter, InterfaceFlaps};

/// What triggers are debounced together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Link-up and link-down: opposite states of one link.
    LinkState,
    Type(TriggerType),
}

impl Class {
    pub fn of(kind: TriggerType) -> Self {
        match kind {
            TriggerType::LinkUp | TriggerType::LinkDown => Class::LinkState,
            other => Class::Type(other),
        }
    }
}

/// What [`Damper::offer`] did with a trigger.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned and matched at once; boxing would allocate per trigger"
)]
pub enum Offer {
    /// Not damped: store it now.
    Pass(Trigger),
    /// Held until its interface and class have been quiet long enough.
    Held,
}

/// Held triggers are keyed by source, interface and class: two sources'
/// views of one interface are damped separately.
type Key = (Source, String, Class);

#[derive(Debug)]
struct HeldTrigger {
    trigger: Trigger,
    deadline: Instant,
    /// Order of arrival of the held trigger, so expiry keeps source order.
    seq: u64,
}

/// The debounce state.
#[derive(Debug, Default)]
pub struct Damper {
    quiet: HashMap<Class, Duration>,
    held: HashMap<Key, HeldTrigger>,
    /// Per source and interface: the link state (link-up or link-down) last
    /// emitted, or assumed before the first held one.
    state: HashMap<(Source, String), TriggerType>,
    seq: u64,
    /// Triggers replaced by a newer one of their class while held.
    pub debounced: u64,
    /// Held link-state triggers dropped because the state came back to
    /// where it was.
    pub suppressed_flaps: u64,
}

/// Sources whose triggers may be held.
fn dampable(s: Source) -> bool {
    matches!(s, Source::Rtnetlink | Source::NetworkManager)
}

impl Damper {
    /// `debounce`: quiet period per trigger type. Link-up and link-down share
    /// the larger of their two (either one alone damps both).
    pub fn new(debounce: &[(TriggerType, Duration)]) -> Self {
        let mut quiet: HashMap<Class, Duration> = HashMap::new();
        for (kind, d) in debounce {
            if d.is_zero() {
                continue;
            }
            let q = quiet.entry(Class::of(*kind)).or_default();
            *q = (*q).max(*d);
        }
        Self {
            quiet,
            ..Default::default()
        }
    }

    /// Whether any class is damped.
    pub fn is_enabled(&self) -> bool {
        !self.quiet.is_empty()
    }

    /// Number of triggers held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Takes one trigger from a source at `now`.
    pub fn offer(&mut self, t: Trigger, now: Instant) -> Offer {
        let class = Class::of(t.kind);
        let Some(quiet) = self.quiet.get(&class).copied() else {
            return Offer::Pass(t);
        };
        if !dampable(t.source) {
            return Offer::Pass(t);
        }
        let Some(ifname) = t.interface.as_ref().map(|i| i.name.clone()) else {
            return Offer::Pass(t);
        };
        if ifname.is_empty() {
            return Offer::Pass(t);
        }
        if class == Class::LinkState {
            // The state before the first change we hold is the opposite of
            // that change, unless we emitted one before.
            self.state
                .entry((t.source, ifname.clone()))
                .or_insert(opposite(t.kind));
        }
        self.seq += 1;
        let held = HeldTrigger {
            trigger: t,
            deadline: now + quiet,
            seq: self.seq,
        };
        if let Some(old) = self.held.insert((held.trigger.source, ifname, class), held) {
            self.debounced += 1;
            debug!(
                kind = %old.trigger.kind,
                interface = old.trigger.interface.as_ref().map_or("", |i| i.name.as_str()),
                "debounced: replaced by a newer trigger of its class"
            );
        }
        Offer::Held
    }

    /// When the earliest held trigger is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.values().map(|h| h.deadline).min()
    }

    /// The held triggers whose quiet period ended by `now`, in order of
    /// arrival; link-state ones that would not change the state are dropped
    /// (counted as suppressed flaps).
    pub fn expire(&mut self, now: Instant) -> Vec<Trigger> {
        let due: Vec<Key> = self
            .held
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        self.release(due)
    }

    /// An interface is gone (IF_REMOVED from `source`): what is held for it
    /// goes out now, before the removal, and its remembered state is
    /// forgotten (a new interface may take the name).
    pub fn remove_interface(&mut self, source: Source, ifname: &str) -> Vec<Trigger> {
        let keys: Vec<Key> = self
            .held
            .keys()
            .filter(|(s, i, _)| *s == source && i == ifname)
            .cloned()
            .collect();
        let out = self.release(keys);
        self.state.remove(&(source, ifname.to_owned()));
        out
    }

    /// Every held trigger, as if all quiet periods had ended (shutdown).
    pub fn expire_all(&mut self) -> Vec<Trigger> {
        let all: Vec<Key> = self.held.keys().cloned().collect();
        self.release(all)
    }

    fn release(&mut self, keys: Vec<Key>) -> Vec<Trigger> {
        let mut due: Vec<(Key, HeldTrigger)> = keys
            .into_iter()
            .filter_map(|k| self.held.remove(&k).map(|h| (k, h)))
            .collect();
        due.sort_by_key(|(_, h)| h.seq);
        let mut out = Vec::with_capacity(due.len());
        for ((source, ifname, class), h) in due {
            if class == Class::LinkState {
                let last = self.state.insert((source, ifname.clone()), h.trigger.kind);
                if last == Some(h.trigger.kind) {
                    self.suppressed_flaps += 1;
                    debug!(
                        kind = %h.trigger.kind,
                        interface = %ifname,
                        %source,
                        "suppressed flap: the link came back to its state within the debounce"
                    );
                    continue;
                }
            }
            out.push(h.trigger);
        }
        out
    }
}

fn opposite(kind: TriggerType) -> TriggerType {
    if kind == TriggerType::LinkUp {
        TriggerType::LinkDown
    } else {
        TriggerType::LinkUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Interface;

    const MS: Duration = Duration::from_millis(1);

    fn trig(source: Source, kind: TriggerType, ifname: &str) -> Trigger {
        let mut t = Trigger::new(source, kind);
        t.interface = Some(Interface {
            name: ifname.into(),
            ..Default::default()
        });
        t
    }

    fn link(kind: TriggerType, ifname: &str) -> Trigger {
        trig(Source::Rtnetlink, kind, ifname)
    }

    fn damper() -> Damper {
        Damper::new(&[
            (TriggerType::LinkDown, 200 * MS),
            (TriggerType::LinkUp, 300 * MS),
            (TriggerType::IfAddrChanged, 1_000 * MS),
        ])
    }

    #[test]
    fn flap_within_the_window_is_suppressed() {
        let mut d = damper();
        let t0 = Instant::now();
        assert_eq!(
            d.offer(link(TriggerType::LinkDown, "eth0"), t0),
            Offer::Held
        );
        assert_eq!(
            d.offer(link(TriggerType::LinkUp, "eth0"), t0 + 50 * MS),
            Offer::Held
        );
        // The larger of the two debounces (300 ms) counts from the last one.
        assert_eq!(d.next_deadline(), Some(t0 + 350 * MS));
        assert!(d.expire(t0 + 349 * MS).is_empty());
        assert!(d.expire(t0 + 350 * MS).is_empty());
        assert_eq!(d.held(), 0);
        assert_eq!(d.debounced, 1);
        assert_eq!(d.suppressed_flaps, 1);
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn lasting_change_is_emitted_after_the_quiet_period() {
        let mut d = damper();
        let t0 = Instant::now();
        let down = link(TriggerType::LinkDown, "eth0");
        assert_eq!(d.offer(down.clone(), t0), Offer::Held);
        assert!(d.expire(t0 + 299 * MS).is_empty());
        assert_eq!(d.expire(t0 + 300 * MS), vec![down]);
        // It came back up for good later: emitted too (a real change).
        let up = link(TriggerType::LinkUp, "eth0");
        assert_eq!(d.offer(up.clone(), t0 + 10_000 * MS), Offer::Held);
        assert_eq!(d.expire(t0 + 11_000 * MS), vec![up]);
        // Down, up, down within the window: one net change, down.
        let t1 = t0 + 20_000 * MS;
        d.offer(link(TriggerType::LinkDown, "eth0"), t1);
        d.offer(link(TriggerType::LinkUp, "eth0"), t1 + 10 * MS);
        let last = link(TriggerType::LinkDown, "eth0");
        d.offer(last.clone(), t1 + 20 * MS);
        assert_eq!(d.expire(t1 + 400 * MS), vec![last]);
        assert_eq!((d.debounced, d.suppressed_flaps), (2, 0));
    }

    #[test]
    fn replacement_keeps_the_newest_and_counts_the_replaced() {
        let mut d = damper();
        let t0 = Instant::now();
        let mut last = None;
        for i in 0..5u32 {
            let mut t = trig(Source::NetworkManager, TriggerType::IfAddrChanged, "wlan0");
            t.origin = format!("change {i}");
            last = Some(t.clone());
            assert_eq!(d.offer(t, t0 + i * 100 * MS), Offer::Held);
        }
        // Another interface and another source are held on their own.
        let other_if = trig(Source::NetworkManager, TriggerType::IfAddrChanged, "wlan1");
        d.offer(other_if.clone(), t0 + 50 * MS);
        let other_src = trig(Source::Rtnetlink, TriggerType::IfAddrChanged, "wlan0");
        d.offer(other_src.clone(), t0 + 60 * MS);
        assert_eq!(d.debounced, 4);
        assert_eq!(d.held(), 3);
        assert_eq!(d.expire(t0 + 1_060 * MS), vec![other_if, other_src]);
        assert_eq!(d.expire(t0 + 1_400 * MS), vec![last.unwrap()]);
    }

    #[test]
    fn expiry_keeps_arrival_order_across_interfaces() {
        let mut d = damper();
        let t0 = Instant::now();
        let names = ["c", "a", "d", "b"];
        for (i, n) in names.iter().enumerate() {
            d.offer(link(TriggerType::LinkDown, n), t0 + i as u32 * MS);
        }
        let got: Vec<String> = d
            .expire(t0 + 1_000 * MS)
            .into_iter()
            .map(|t| t.interface.unwrap().name)
            .collect();
        assert_eq!(got, names);
    }

    #[test]
    fn classes_without_a_debounce_pass_straight_through() {
        let mut d = damper();
        let t = link(TriggerType::IfAddrAdded, "eth0");
        assert_eq!(d.offer(t.clone(), Instant::now()), Offer::Pass(t));
        let mut none = Damper::new(&[]);
        assert!(!none.is_enabled());
        let t = link(TriggerType::LinkDown, "eth0");
        assert_eq!(none.offer(t.clone(), Instant::now()), Offer::Pass(t));
        // A zero debounce is no debounce.
        let mut zero = Damper::new(&[(TriggerType::LinkDown, Duration::ZERO)]);
        let t = link(TriggerType::LinkDown, "eth0");
        assert_eq!(zero.offer(t.clone(), Instant::now()), Offer::Pass(t));
    }

    #[test]
    fn client_triggers_are_never_held() {
        let mut d = damper();
        for s in [
            Source::Client,
            Source::Ieee802_21,
            Source::Threshold,
            Source::TriggerDb,
        ] {
            let t = trig(s, TriggerType::LinkDown, "eth0");
            assert_eq!(d.offer(t.clone(), Instant::now()), Offer::Pass(t));
        }
        let mut no_if = Trigger::new(Source::Rtnetlink, TriggerType::LinkDown);
        no_if.interface = None;
        assert_eq!(d.offer(no_if.clone(), Instant::now()), Offer::Pass(no_if));
        assert_eq!(d.held(), 0);
    }

    #[test]
    fn removal_releases_what_is_held_for_the_interface_and_forgets_it() {
        let mut d = damper();
        let t0 = Instant::now();
        let down = link(TriggerType::LinkDown, "eth0");
        d.offer(down.clone(), t0);
        let other = link(TriggerType::LinkDown, "eth1");
        d.offer(other.clone(), t0);
        assert_eq!(d.remove_interface(Source::Rtnetlink, "eth0"), vec![down]);
        assert_eq!(d.held(), 1);
        // A new eth0 starts from scratch: its first link-down is a change.
        let down2 = link(TriggerType::LinkDown, "eth0");
        d.offer(down2.clone(), t0 + 10 * MS);
        assert_eq!(d.expire(t0 + 1_000 * MS), vec![other, down2]);
        assert!(d.remove_interface(Source::Rtnetlink, "eth9").is_empty());
    }

    #[test]
    fn shutdown_releases_everything_held() {
        let mut d = damper();
        let t0 = Instant::now();
        let a = link(TriggerType::LinkDown, "eth0");
        let b = trig(Source::NetworkManager, TriggerType::IfAddrChanged, "eth0");
        d.offer(a.clone(), t0);
        d.offer(b.clone(), t0);
        assert_eq!(d.expire_all(), vec![a, b]);
        assert_eq!(d.held(), 0);
    }
}
