//! What the read queries of the store ask for, checked, on both backends:
//! which hosts ([`Hosts`]), a history page ([`HistoryQuery`], with its
//! page token), and link-down buckets ([`FlapsQuery`]); and what they
//! answer with the host of each row ([`HostTrigger`], [`FlapBucket`]).
//!
//! Pages are ordered by (observed_at, host, id), host ids compared
//! bytewise (Rust's `str` order, PostgreSQL's `COLLATE "C"`): with one
//! host that is the (observed_at, id) order of a single daemon. The page
//! token carries the whole cursor, the host too, so paging over several
//! hosts neither skips nor repeats rows observed at the same time.
//!
//! This module builds no SQL; the backends do.

use std::str::FromStr;

use crate::model::{Filter, Timestamp, Trigger};

/// Whose rows a query reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Hosts {
    /// This daemon's own host (the default, and what a request without
    /// hosts means).
    #[default]
    Own,
    /// These host ids (sorted, without duplicates: see [`Hosts::named`]).
    Named(Vec<String>),
    /// Every host in the database.
    All,
}

impl Hosts {
    /// `Named`, sorted and without duplicates (so that the same set of
    /// hosts is the same query, page tokens included); `Own` if empty.
    pub fn named(mut hosts: Vec<String>) -> Self {
        if hosts.is_empty() {
            return Self::Own;
        }
        hosts.sort_unstable();
        hosts.dedup();
        Self::Named(hosts)
    }

    /// Whether rows of more than one host can be in the answer.
    pub fn several(&self) -> bool {
        match self {
            Self::Own => false,
            Self::Named(h) => h.len() > 1,
            Self::All => true,
        }
    }

    fn fingerprint_into(&self, eat: &mut impl FnMut(&[u8])) {
        match self {
            Self::Own => eat(b"own"),
            Self::All => eat(b"all"),
            Self::Named(h) => {
                eat(b"named");
                for name in h {
                    eat(name.as_bytes());
                }
            }
        }
    }
}

/// A stored trigger and the host it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTrigger {
    pub host: String,
    pub trigger: Trigger,
}

/// Where a history page ended: the last row's (observed_at, host, id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at: Timestamp,
    pub host: String,
    pub id: u64,
}

/// A history query, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryQuery {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub filter: Filter,
    pub page_size: u32,
    pub descending: bool,
    pub hosts: Hosts,
    /// Where the previous page ended.
    pub after: Option<Cursor>,
}

impl HistoryQuery {
    /// A fingerprint of everything but the cursor, so a page token used
    /// with other parameters is caught (FNV-1a: stable across builds).
    pub fn fingerprint(&self) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u32::from(*b);
                h = h.wrapping_mul(0x0100_0193);
            }
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0193);
        };
        eat(&self.since.map_or(-1, |t| t.0).to_le_bytes());
        eat(&self.until.map_or(-1, |t| t.0).to_le_bytes());
        for i in &self.filter.interfaces {
            eat(i.as_bytes());
        }
        for t in &self.filter.types {
            eat(&t.to_wire().to_le_bytes());
        }
        for s in &self.filter.sources {
            eat(&s.to_wire().to_le_bytes());
        }
        eat(&[u8::from(self.descending)]);
        self.hosts.fingerprint_into(&mut eat);
        h
    }

    /// The page token for continuing after `last`:
    /// `v2.<observed_at>.<id>.<fingerprint>.<host>` (the host last: it may
    /// hold dots).
    pub fn token_after(&self, last: &HostTrigger) -> String {
        format!(
            "v2.{}.{}.{:08x}.{}",
            last.trigger.observed_at.0,
            last.trigger.id,
            self.fingerprint(),
            last.host
        )
    }

    /// Parses a page token from a previous page of this same query.
    pub fn parse_token(&self, token: &str) -> Result<Cursor, &'static str> {
        let mut it = token.splitn(5, '.');
        let (Some("v2"), Some(t), Some(id), Some(fp), Some(host)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return Err("malformed");
        };
        let t = i64::from_str(t).map_err(|_| "malformed")?;
        let id = u64::from_str(id).map_err(|_| "malformed")?;
        let fp = u32::from_str_radix(fp, 16).map_err(|_| "malformed")?;
        if fp != self.fingerprint() {
            return Err("belongs to a query with other parameters");
        }
        Ok(Cursor {
            at: Timestamp(t),
            host: host.to_owned(),
            id,
        })
    }
}

/// How the rows of one host continue after a cursor, in page order: the
/// page order is (observed_at, host, id), so within one host the rows
/// after the cursor are those beyond its (observed_at, id) if the host is
/// the cursor's, else all from its time on (the host sorts after the
/// cursor's) or only after its time (before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bound {
    /// `(observed_at, id)` beyond `(t, id)`.
    Row(Timestamp, u64),
    /// `observed_at` beyond `t`, or equal too if `inclusive`.
    Time { t: Timestamp, inclusive: bool },
}

impl Bound {
    /// Where the rows of `host` continue after `c` (`descending`: beyond
    /// means below).
    pub(super) fn of(host: &str, c: &Cursor, descending: bool) -> Self {
        use std::cmp::Ordering::*;
        match (host.cmp(c.host.as_str()), descending) {
            (Equal, _) => Self::Row(c.at, c.id),
            (Greater, false) | (Less, true) => Self::Time {
                t: c.at,
                inclusive: true,
            },
            (Less, false) | (Greater, true) => Self::Time {
                t: c.at,
                inclusive: false,
            },
        }
    }
}

/// A Flaps request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct FlapsQuery {
    pub since: Timestamp,
    pub until: Timestamp,
    pub bucket_ns: i64,
    pub interfaces: Vec<String>,
    pub hosts: Hosts,
    /// One bucket per host (with [`FlapBucket::host`]), rather than the
    /// hosts added up.
    pub by_host: bool,
}

/// Stored LINK_DOWN triggers of one interface (and, by host, one host) in
/// one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlapBucket {
    /// With [`FlapsQuery::by_host`]; `None` otherwise.
    pub host: Option<String>,
    pub interface: String,
    pub start: Timestamp,
    pub link_downs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(at: i64, host: &str, id: u64) -> HostTrigger {
        let mut t = Trigger::new(
            crate::model::Source::Client,
            crate::model::TriggerType::LinkUp,
        );
        t.observed_at = Timestamp(at);
        t.id = id;
        HostTrigger {
            host: host.into(),
            trigger: t,
        }
    }

    #[test]
    fn a_token_carries_the_host_even_with_dots_and_belongs_to_its_query() {
        let q = HistoryQuery {
            page_size: 10,
            hosts: Hosts::named(vec!["b.example".into(), "a".into(), "a".into()]),
            ..Default::default()
        };
        assert_eq!(q.hosts, Hosts::Named(vec!["a".into(), "b.example".into()]));
        let token = q.token_after(&row(-5, "b.example", 7));
        assert_eq!(
            q.parse_token(&token).unwrap(),
            Cursor {
                at: Timestamp(-5),
                host: "b.example".into(),
                id: 7
            }
        );
        let all = HistoryQuery {
            hosts: Hosts::All,
            ..q.clone()
        };
        assert!(all.parse_token(&token).is_err());
        let own = HistoryQuery {
            hosts: Hosts::Own,
            ..q.clone()
        };
        assert!(own.parse_token(&token).is_err());
        for bad in ["", "v1.1.2.00000000", "v2.x.1.0.h", "v2.1.2.zz.h"] {
            assert_eq!(q.parse_token(bad), Err("malformed"), "{bad}");
        }
    }

    #[test]
    fn a_hosts_rows_continue_after_a_cursor_of_another_host_by_time() {
        let c = Cursor {
            at: Timestamp(10),
            host: "m".into(),
            id: 4,
        };
        assert_eq!(Bound::of("m", &c, false), Bound::Row(Timestamp(10), 4));
        assert_eq!(Bound::of("m", &c, true), Bound::Row(Timestamp(10), 4));
        // Ascending: "z" sorts after "m", so its rows at time 10 follow.
        let at = |inclusive| Bound::Time {
            t: Timestamp(10),
            inclusive,
        };
        assert_eq!(Bound::of("z", &c, false), at(true));
        assert_eq!(Bound::of("a", &c, false), at(false));
        assert_eq!(Bound::of("z", &c, true), at(false));
        assert_eq!(Bound::of("a", &c, true), at(true));
    }

    #[test]
    fn several_hosts_are_named_or_all() {
        assert!(!Hosts::Own.several());
        assert_eq!(Hosts::named(vec![]), Hosts::Own);
        assert!(!Hosts::named(vec!["a".into(), "a".into()]).several());
        assert!(Hosts::named(vec!["a".into(), "b".into()]).several());
        assert!(Hosts::All.several());
    }
}
