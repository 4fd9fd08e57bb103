//! Link flaps: a per-interface count of link-downs over a sliding window
//! and in total, for trigger-db's `Stats.flaps` and for mobike-agent's own
//! rtnetlink watch (the mobility policy's flap penalty), so both count
//! alike. Pure: no I/O, no clock (`now` is passed in).

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

/// Link-down timestamps kept per interface (older ones still count in the
/// total).
const MAX_RECENT: usize = 1_024;
/// Interfaces tracked at most; beyond, the one whose last flap is oldest is
/// forgotten.
const MAX_INTERFACES: usize = 4_096;

/// One interface's flap counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceFlaps {
    pub interface: String,
    /// Link-downs within the window before now (at most 1,024).
    pub in_window: u64,
    /// Link-downs since the daemon started.
    pub total: u64,
}

#[derive(Debug, Default)]
struct Recent {
    times: VecDeque<Instant>,
    total: u64,
}

/// Link-downs per interface: recent ones over a sliding window and a total.
#[derive(Debug)]
pub struct FlapCounter {
    window: Duration,
    per_if: HashMap<String, Recent>,
}

impl FlapCounter {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            per_if: HashMap::new(),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Counts a link-down of `ifname` at `now`.
    pub fn record(&mut self, ifname: &str, now: Instant) {
        if !self.per_if.contains_key(ifname) && self.per_if.len() >= MAX_INTERFACES {
            let stalest = self
                .per_if
                .iter()
                .min_by_key(|(_, r)| r.times.back().copied())
                .map(|(k, _)| k.clone());
            if let Some(k) = stalest {
                self.per_if.remove(&k);
            }
        }
        let r = self.per_if.entry(ifname.to_owned()).or_default();
        r.total += 1;
        r.times.push_back(now);
        while r.times.len() > MAX_RECENT
            || r.times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) > self.window)
        {
            r.times.pop_front();
        }
    }

    /// Every interface that ever flapped, by name.
    pub fn snapshot(&self, now: Instant) -> Vec<InterfaceFlaps> {
        let mut v: Vec<InterfaceFlaps> = self
            .per_if
            .iter()
            .map(|(name, r)| InterfaceFlaps {
                interface: name.clone(),
                in_window: r
                    .times
                    .iter()
                    .filter(|t| now.saturating_duration_since(**t) <= self.window)
                    .count() as u64,
                total: r.total,
            })
            .collect();
        v.sort_by(|a, b| a.interface.cmp(&b.interface));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flap_counter_windows_and_totals() {
        let mut f = FlapCounter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            f.record("wlan0", t0 + Duration::from_secs(i * 10));
        }
        f.record("eth0", t0);
        let s = f.snapshot(t0 + Duration::from_secs(65));
        assert_eq!(
            s,
            vec![
                InterfaceFlaps {
                    interface: "eth0".into(),
                    in_window: 0,
                    total: 1
                },
                InterfaceFlaps {
                    interface: "wlan0".into(),
                    in_window: 2,
                    total: 3
                },
            ]
        );
        // Bounded per interface: the total keeps counting.
        for _ in 0..(MAX_RECENT + 10) {
            f.record("eth0", t0 + Duration::from_secs(70));
        }
        let s = f.snapshot(t0 + Duration::from_secs(70));
        assert_eq!(s[0].in_window, MAX_RECENT as u64);
        assert_eq!(s[0].total, MAX_RECENT as u64 + 11);
    }
}
