//! The timeline's time axis: tick positions at round UTC times (1 ms up to
//! 30 days apart, as many as fit), their labels, and short texts for
//! durations.
//!
//! Pure and UTC only, like the rest of triggerctl (see `time.rs`): labels
//! are cut from humantime's RFC 3339 form rather than computed with a
//! calendar crate, since UTC needs no time-zone data.

use std::time::{Duration, UNIX_EPOCH};

const MS: i64 = 1_000_000;
const S: i64 = 1_000 * MS;
const MIN: i64 = 60 * S;
const H: i64 = 60 * MIN;
const DAY: i64 = 24 * H;

/// Tick spacings, smallest first.
const STEPS: &[i64] = &[
    MS,
    2 * MS,
    5 * MS,
    10 * MS,
    20 * MS,
    50 * MS,
    100 * MS,
    200 * MS,
    500 * MS,
    S,
    2 * S,
    5 * S,
    10 * S,
    15 * S,
    30 * S,
    MIN,
    2 * MIN,
    5 * MIN,
    10 * MIN,
    15 * MIN,
    30 * MIN,
    H,
    2 * H,
    3 * H,
    6 * H,
    12 * H,
    DAY,
    2 * DAY,
    7 * DAY,
    14 * DAY,
    30 * DAY,
];

/// One tick: where, its time label, and the date when it is the first tick
/// or the date changed since the previous one.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub at: i64,
    pub label: String,
    pub date: Option<String>,
}

/// `2026-12-06T04:55:16.123456789Z` for a time in ns (before 1970 is 1970).
fn rfc3339(ns: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
    humantime::format_rfc3339_nanos(t).to_string()
}

/// `(date, time)`: `2026-12-06`, `04:55:16.123`, cut to the step's precision.
pub fn utc_parts(ns: i64, step: i64) -> (String, String) {
    let s = rfc3339(ns);
    let date = s.get(..10).unwrap_or_default().to_owned();
    let time = if step < S {
        s.get(11..23)
    } else if step < MIN {
        s.get(11..19)
    } else {
        s.get(11..16)
    };
    (date, time.unwrap_or_default().to_owned())
}

/// A time for titles: `2026-12-06 04:55:16.123`.
pub fn utc_millis(ns: i64) -> String {
    let (d, t) = utc_parts(ns, 1);
    format!("{d} {t}")
}

/// The spacing for `[since, until)` with at most `max_ticks` ticks.
pub fn step_for(since: i64, until: i64, max_ticks: usize) -> i64 {
    let span = until.saturating_sub(since).max(1);
    let max = i64::try_from(max_ticks.max(1)).unwrap_or(i64::MAX);
    STEPS
        .iter()
        .copied()
        .find(|s| span / s <= max)
        .unwrap_or(*STEPS.last().unwrap_or(&DAY))
}

/// Ticks at multiples of the step in `[since, until]`.
pub fn ticks(since: i64, until: i64, max_ticks: usize) -> Vec<Tick> {
    let step = step_for(since, until, max_ticks);
    let mut at = since.div_euclid(step) * step;
    if at < since {
        at += step;
    }
    let mut out = Vec::new();
    let mut last_date = String::new();
    while at <= until && out.len() <= max_ticks {
        let (date, time) = utc_parts(at, step);
        let label = if step >= DAY { date.clone() } else { time };
        let show_date = step < DAY && date != last_date;
        last_date.clone_from(&date);
        out.push(Tick {
            at,
            label,
            date: show_date.then_some(date),
        });
        at = match at.checked_add(step) {
            Some(a) => a,
            None => break,
        };
    }
    out
}

/// A short duration: `850 µs`, `12.5 ms`, `3.25 s`, `4m 05s`, `2h 10m`, `3d 4h`.
pub fn duration_text(ns: i64) -> String {
    let ns = ns.max(0);
    if ns < MS {
        format!("{} \u{b5}s", ns / 1000)
    } else if ns < S {
        trim(format!("{:.1}", ns as f64 / MS as f64)) + " ms"
    } else if ns < MIN {
        trim(format!("{:.2}", ns as f64 / S as f64)) + " s"
    } else if ns < H {
        format!("{}m {:02}s", ns / MIN, (ns % MIN) / S)
    } else if ns < DAY {
        format!("{}h {:02}m", ns / H, (ns % H) / MIN)
    } else {
        format!("{}d {}h", ns / DAY, (ns % DAY) / H)
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_579_600 * S; // 2025-12-01T09:00:00Z

    #[test]
    fn ticks_are_round_and_fit() {
        let t = ticks(T0 + 7 * S, T0 + 30 * MIN, 10);
        assert_eq!(step_for(T0 + 7 * S, T0 + 30 * MIN, 10), 5 * MIN);
        assert_eq!(t[0].at, T0 + 5 * MIN);
        assert_eq!(t[0].label, "09:05");
        assert_eq!(t[0].date.as_deref(), Some("2025-12-01"));
        assert_eq!(t[1].date, None);
        assert_eq!(t.len(), 6);
        assert!(t.len() <= 10);
    }

    #[test]
    fn sub_second_and_multi_day_windows() {
        let t = ticks(T0, T0 + 40 * MS, 8);
        assert_eq!(t[1].label, "09:00:00.005");
        let t = ticks(T0, T0 + 10 * DAY, 6);
        assert!(t[0].label.starts_with("2025-12-0"), "{t:?}");
        assert!(t.iter().all(|t| t.date.is_none()));
        // The date shows again when it changes.
        let t = ticks(T0, T0 + DAY, 12);
        assert_eq!(t.iter().filter(|t| t.date.is_some()).count(), 2);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration_text(850_000), "850 \u{b5}s");
        assert_eq!(duration_text(1_200_000), "1.2 ms");
        assert_eq!(duration_text(3 * S + 250 * MS), "3.25 s");
        assert_eq!(duration_text(2 * S), "2 s");
        assert_eq!(duration_text(4 * MIN + 5 * S), "4m 05s");
        assert_eq!(duration_text(2 * H + 10 * MIN), "2h 10m");
        assert_eq!(duration_text(-5), "0 \u{b5}s");
    }
}
