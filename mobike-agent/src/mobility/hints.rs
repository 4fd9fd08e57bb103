//! Loss hints: while the agent follows trigger-db, its own rtnetlink watch
//! runs beside the subscription, and the losses it sees reach the manager
//! at once instead of after trigger-db's hop (its writer, the hub and a
//! gRPC stream: milliseconds to tens of milliseconds when the host is busy
//! tearing the link down). trigger-db stays the source of the picture:
//! only a loss the table does not know yet passes — a link that stops
//! carrying packets, an address removed, an interface gone — and the
//! undoing of such a hint when the watch sees it undone (trigger-db may
//! never send either side of a flap its debounce suppressed). Everything
//! else of the watch (new links, addresses, routes, flap counts, its
//! snapshots) is left to trigger-db.
//!
//! trigger-db's own copy of a hinted change arrives later and changes
//! nothing. An older trigger-db event arriving after a hint (the link's
//! up before the hinted down) is applied as usual and set right by
//! trigger-db's copy of the loss that follows it.
//!
//! Pure: the runtime feeds it the watch's events and the manager's table.

use std::{collections::BTreeMap, net::IpAddr, time::SystemTime};

use super::links::{Interface, LinkEvent, LinkTable, OperState};

/// A loss a hint told the manager of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Loss {
    /// The link stopped carrying packets.
    Down(u32),
    /// The address was removed from the interface.
    Addr(u32, IpAddr),
    /// The interface is gone.
    Gone(u32),
}

impl Loss {
    /// The loss `event` says, if it says one.
    fn of(event: &LinkEvent) -> Option<Self> {
        match event {
            LinkEvent::Link { index, .. } | LinkEvent::Carrier { index, .. } if !link_up(event) => {
                Some(Loss::Down(*index))
            }
            LinkEvent::AddrRemoved { index, addr } => Some(Loss::Addr(*index, *addr)),
            LinkEvent::Removed { index } => Some(Loss::Gone(*index)),
            _ => None,
        }
    }

    /// The hinted loss `event` undoes, if it undoes one.
    fn undone_by(event: &LinkEvent) -> Option<Self> {
        match event {
            LinkEvent::Link { index, .. } | LinkEvent::Carrier { index, .. } if link_up(event) => {
                Some(Loss::Down(*index))
            }
            LinkEvent::Addr { index, addr } => Some(Loss::Addr(*index, addr.addr)),
            _ => None,
        }
    }

    /// The interface it is about.
    fn index(self) -> u32 {
        match self {
            Loss::Down(i) | Loss::Addr(i, _) | Loss::Gone(i) => i,
        }
    }

    /// Whether the table has yet to hear of it.
    fn is_news(self, table: &LinkTable) -> bool {
        match self {
            Loss::Down(i) => table.get(i).is_some_and(Interface::is_up),
            Loss::Addr(i, a) => table.get(i).is_some_and(|i| i.addrs.contains_key(&a)),
            Loss::Gone(i) => table.get(i).is_some(),
        }
    }
}

/// Whether a link event says the link carries packets (as
/// [`Interface::is_up`] judges it).
fn link_up(event: &LinkEvent) -> bool {
    match event {
        LinkEvent::Link {
            admin_up,
            carrier,
            oper,
            ..
        } => *admin_up && *carrier && matches!(oper, OperState::Up | OperState::Unknown),
        LinkEvent::Carrier { up, .. } => *up,
        _ => false,
    }
}

/// A hint given: when the watch observed it, and whether trigger-db has
/// said it too.
#[derive(Debug, Clone, Copy)]
struct Hinted {
    observed: SystemTime,
    confirmed: bool,
}

/// What the hints have told the manager.
#[derive(Debug, Default)]
pub struct Hints {
    given: BTreeMap<Loss, Hinted>,
    passed: u64,
}

impl Hints {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the watch's `event`, observed at `observed`, goes to the
    /// manager now; `table` is the manager's picture before it.
    pub fn pass(&mut self, event: &LinkEvent, observed: SystemTime, table: &LinkTable) -> bool {
        let pass = if let Some(loss) = Loss::of(event) {
            if let Loss::Gone(index) = loss {
                // What was said of the interface is moot now.
                self.given.retain(|l, _| l.index() != index);
            }
            let news = loss.is_news(table) && !self.given.contains_key(&loss);
            if news {
                self.given.insert(
                    loss,
                    Hinted {
                        observed,
                        confirmed: false,
                    },
                );
            }
            news
        } else if let Some(loss) = Loss::undone_by(event) {
            self.given.remove(&loss).is_some()
        } else {
            false
        };
        self.passed += u64::from(pass);
        pass
    }

    /// trigger-db's `event`: when it says a loss of an interface that
    /// hints gave first, when those hints were observed (the causes the
    /// manager may have for a move), each once. A link's loss comes with
    /// its addresses' in one burst, and the move's cause is whichever of
    /// them the manager saw first; trigger-db may not repeat each of them
    /// (or not soon), so its first word of a loss of the interface names
    /// them all. What it undoes is trigger-db's news from now on.
    pub fn from_trigger_db(&mut self, event: &LinkEvent) -> Vec<SystemTime> {
        if let Some(loss) = Loss::undone_by(event) {
            self.given.remove(&loss);
            return Vec::new();
        }
        let Some(loss) = Loss::of(event) else {
            return Vec::new();
        };
        let index = loss.index();
        let mut named = Vec::new();
        for (l, h) in &mut self.given {
            if l.index() == index && !h.confirmed {
                h.confirmed = true;
                named.push(h.observed);
            }
        }
        if matches!(loss, Loss::Gone(_)) {
            self.given.retain(|l, _| l.index() != index);
        }
        named
    }

    /// trigger-db's snapshot replaced the picture: what the hints said is
    /// in it or superseded.
    pub fn clear(&mut self) {
        self.given.clear();
    }

    /// How many of the watch's events went to the manager ahead of
    /// trigger-db.
    pub fn passed(&self) -> u64 {
        self.passed
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::Ipv4Addr,
        time::{Duration, Instant},
    };

    use super::*;
    use crate::mobility::links::{AddrFlags, IfaceKind, LocalAddr};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn link(index: u32, up: bool) -> LinkEvent {
        LinkEvent::Link {
            index,
            name: format!("u{index}"),
            kind: IfaceKind::Ethernet,
            driver_kind: "veth".into(),
            admin_up: true,
            carrier: up,
            oper: if up { OperState::Up } else { OperState::Down },
        }
    }

    fn addr(index: u32) -> LinkEvent {
        LinkEvent::Addr {
            index,
            addr: LocalAddr {
                addr: A,
                prefix_len: 24,
                flags: AddrFlags::default(),
            },
        }
    }

    fn addr_removed(index: u32) -> LinkEvent {
        LinkEvent::AddrRemoved { index, addr: A }
    }

    /// A table with u1 up and holding A.
    fn table() -> LinkTable {
        let mut t = LinkTable::new();
        t.apply(link(1, true), Instant::now());
        t.apply(addr(1), Instant::now());
        t
    }

    #[test]
    fn a_loss_the_table_does_not_know_passes_once() {
        let t = table();
        let mut h = Hints::new();
        assert!(h.pass(&link(1, false), at(1), &t));
        // The watch repeats itself (operstate after carrier): already said.
        assert!(!h.pass(&link(1, false), at(2), &t));
        assert!(!h.pass(
            &LinkEvent::Carrier {
                index: 1,
                up: false
            },
            at(2),
            &t
        ));
        assert!(h.pass(&addr_removed(1), at(3), &t));
        assert!(!h.pass(&addr_removed(1), at(4), &t));
        assert!(h.pass(&LinkEvent::Removed { index: 1 }, at(5), &t));
        assert_eq!(h.passed(), 3);
    }

    #[test]
    fn what_the_table_already_has_or_gains_is_left_to_trigger_db() {
        let mut t = table();
        let mut h = Hints::new();
        // Up, new links, new addresses, routes, flaps: trigger-db's.
        assert!(!h.pass(&link(1, true), at(1), &t));
        assert!(!h.pass(&link(2, true), at(1), &t));
        assert!(!h.pass(&addr(2), at(1), &t));
        assert!(!h.pass(&LinkEvent::RoutesChanged { index: Some(1) }, at(1), &t));
        assert!(!h.pass(&LinkEvent::Flaps { index: 1, count: 3 }, at(1), &t));
        // trigger-db was first: the table has the loss already.
        t.apply(link(1, false), Instant::now());
        t.apply(addr_removed(1), Instant::now());
        assert!(!h.pass(&link(1, false), at(2), &t));
        assert!(!h.pass(&addr_removed(1), at(2), &t));
        // An unknown interface's removal says nothing.
        assert!(!h.pass(&LinkEvent::Removed { index: 9 }, at(2), &t));
        assert_eq!(h.passed(), 0);
    }

    #[test]
    fn a_hinted_loss_that_is_undone_is_undone_by_the_hints() {
        // trigger-db debounces the flap away and never says either side.
        let mut t = table();
        let mut h = Hints::new();
        assert!(h.pass(&link(1, false), at(1), &t));
        t.apply(link(1, false), Instant::now());
        assert!(h.pass(&link(1, true), at(2), &t));
        t.apply(link(1, true), Instant::now());
        assert!(t.get(1).is_some_and(Interface::is_up));
        // Once: a second up is trigger-db's news again.
        assert!(!h.pass(&link(1, true), at(3), &t));

        assert!(h.pass(&addr_removed(1), at(4), &t));
        t.apply(addr_removed(1), Instant::now());
        assert!(h.pass(&addr(1), at(5), &t));
        assert!(!h.pass(&addr(1), at(6), &t));
    }

    #[test]
    fn trigger_db_naming_a_hinted_loss_gives_the_hint_once() {
        let t = table();
        let mut h = Hints::new();
        assert!(h.pass(&link(1, false), at(1), &t));
        assert!(h.pass(&addr_removed(1), at(2), &t));
        // The link's loss names both hints of the interface, once.
        assert_eq!(h.from_trigger_db(&link(1, false)), vec![at(1), at(2)]);
        assert_eq!(h.from_trigger_db(&link(1, false)), Vec::<SystemTime>::new());
        assert_eq!(
            h.from_trigger_db(&addr_removed(1)),
            Vec::<SystemTime>::new()
        );
        // Confirmed, the hint still undoes itself when the watch sees the
        // link back first.
        assert!(h.pass(&link(1, true), at(3), &t));
        // trigger-db's return of a link: the hint is done with.
        assert!(h.pass(&link(1, false), at(4), &t));
        assert_eq!(h.from_trigger_db(&link(1, true)), Vec::<SystemTime>::new());
        assert!(!h.pass(&link(1, true), at(5), &t));
        // Losses no hint gave are not named.
        assert_eq!(
            h.from_trigger_db(&LinkEvent::Removed { index: 1 }),
            Vec::<SystemTime>::new()
        );
    }

    #[test]
    fn a_removed_interface_ends_what_was_said_of_it() {
        let t = table();
        let mut h = Hints::new();
        assert!(h.pass(&link(1, false), at(1), &t));
        assert!(h.pass(&LinkEvent::Removed { index: 1 }, at(2), &t));
        assert_eq!(
            h.from_trigger_db(&LinkEvent::Removed { index: 1 }),
            vec![at(2)]
        );
        assert_eq!(h.from_trigger_db(&link(1, false)), Vec::<SystemTime>::new());
    }

    #[test]
    fn a_snapshot_forgets_the_hints() {
        let t = table();
        let mut h = Hints::new();
        assert!(h.pass(&link(1, false), at(1), &t));
        h.clear();
        // The return of a link trigger-db has since described is its news.
        assert!(!h.pass(&link(1, true), at(2), &t));
        assert_eq!(h.from_trigger_db(&link(1, false)), Vec::<SystemTime>::new());
    }
}
