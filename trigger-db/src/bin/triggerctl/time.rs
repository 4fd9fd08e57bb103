//! Times and durations as triggerctl takes them on the command line:
//! `--since`/`--until`/`--before`/`--observed-at` accept an RFC 3339 time in
//! UTC, a date, `now`, `@UNIX_SECONDS`, or a duration meaning "that long
//! ago"; `--time-interval` takes a duration and gives milliseconds.
//!
//! Everything here is pure (the current time is passed in) so that it can be
//! tested; it does not know about local time zones: triggerctl reads and
//! prints UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trigger_db::model::Timestamp;

/// Parses a point in time relative to `now` (see the module documentation).
pub fn parse_time_at(s: &str, now: SystemTime) -> Result<Timestamp, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty time".into());
    }
    if s.eq_ignore_ascii_case("now") {
        return Ok(Timestamp::from(now));
    }
    if let Some(secs) = s.strip_prefix('@') {
        let secs: u64 = secs
            .parse()
            .map_err(|_| format!("not a Unix time in seconds: {s:?}"))?;
        return UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .map(Timestamp::from)
            .ok_or_else(|| format!("Unix time out of range: {s:?}"));
    }
    // A duration: that long ago ("10m", "2h 30m", "1day").
    if s.starts_with(|c: char| c.is_ascii_digit())
        && let Ok(d) = humantime::parse_duration(s)
    {
        return now
            .checked_sub(d)
            .filter(|t| *t >= UNIX_EPOCH)
            .map(Timestamp::from)
            .ok_or_else(|| format!("{s:?} ago is before 1970"));
    }
    // A date alone is midnight UTC; a time without seconds gets ":00".
    let full = match s.len() {
        10 => format!("{s}T00:00:00Z"),
        16 => format!("{s}:00"),
        _ => s.to_owned(),
    };
    humantime::parse_rfc3339_weak(&full)
        .map(Timestamp::from)
        .map_err(|e| {
            format!(
                "{s:?} is neither a time (2026-11-27T13:05:00Z, UTC; a date; now; @UNIX_SECONDS) \
                 nor a duration ago (10m, 2h, 1day): {e}"
            )
        })
}

/// clap value parser for times.
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    parse_time_at(s, SystemTime::now())
}

/// Parses a duration (`500ms`, `2s`, `1m 30s`, `1500us`; a bare number is
/// milliseconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("not a duration (e.g. 500ms, 2s): {s:?}: {e}")),
    }
}

/// A duration ([`parse_duration`]) in whole milliseconds that fit the
/// wire's u32.
pub fn parse_interval_ms(s: &str) -> Result<u32, String> {
    let s = s.trim();
    u32::try_from(parse_duration(s)?.as_millis())
        .map_err(|_| format!("{s:?} is longer than {} ms", u32::MAX))
}

/// A duration ([`parse_duration`]) in whole microseconds.
pub fn parse_duration_us(s: &str) -> Result<u64, String> {
    let s = s.trim();
    u64::try_from(parse_duration(s)?.as_micros())
        .map_err(|_| format!("{s:?} is longer than {} us", u64::MAX))
}

/// A time for tables: `2026-11-27 13:05:01.123` (UTC, milliseconds).
pub fn short(t: Timestamp) -> String {
    let s = humantime::format_rfc3339_millis(t.to_system_time()).to_string();
    s.trim_end_matches('Z').replacen('T', " ", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const NOW: u64 = 1_800_000_000; // 2027-01-15T08:00:00Z

    fn parse(s: &str) -> Result<Timestamp, String> {
        parse_time_at(s, at(NOW))
    }

    fn secs(t: Timestamp) -> i64 {
        t.nanos() / 1_000_000_000
    }

    #[test]
    fn durations_mean_ago() {
        assert_eq!(secs(parse("10m").unwrap()), NOW as i64 - 600);
        assert_eq!(secs(parse("2h 30m").unwrap()), NOW as i64 - 9000);
        assert_eq!(secs(parse("1day").unwrap()), NOW as i64 - 86400);
        assert_eq!(secs(parse("now").unwrap()), NOW as i64);
    }

    #[test]
    fn absolute_times_are_utc() {
        assert_eq!(secs(parse("2023-11-14T22:13:20Z").unwrap()), 1_700_000_000);
        assert_eq!(secs(parse("2023-11-14 22:13:20").unwrap()), 1_700_000_000);
        assert_eq!(secs(parse("2023-11-14 22:13").unwrap()), 1_700_000_000 - 20);
        assert_eq!(secs(parse("2023-11-14").unwrap()), 1_699_920_000);
        assert_eq!(secs(parse("@1700000000").unwrap()), 1_700_000_000);
        assert_eq!(
            parse("2023-11-14T22:13:20.5Z").unwrap().nanos(),
            1_700_000_000_500_000_000
        );
    }

    #[test]
    fn bad_times_are_errors_not_panics() {
        for bad in [
            "",
            "yesterday",
            "2023-13-01",
            "@-5",
            "@x",
            "999999999999d",
            "10 parsecs",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn intervals_are_milliseconds() {
        assert_eq!(parse_interval_ms("500ms"), Ok(500));
        assert_eq!(parse_interval_ms("2s"), Ok(2000));
        assert_eq!(parse_interval_ms("1m 30s"), Ok(90_000));
        assert_eq!(parse_interval_ms("250"), Ok(250));
        assert!(parse_interval_ms("50d").is_err());
        assert!(parse_interval_ms("soon").is_err());
        assert_eq!(parse_duration_us("1500us"), Ok(1500));
        assert_eq!(parse_duration_us("2ms"), Ok(2000));
        assert_eq!(parse_duration_us("3"), Ok(3000));
        assert!(parse_duration_us("quick").is_err());
    }

    #[test]
    fn short_time_is_utc_millis() {
        assert_eq!(
            short(Timestamp(1_700_000_000_123_456_000)),
            "2023-11-14 22:13:20.123"
        );
    }
}
