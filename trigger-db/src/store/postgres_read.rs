//! The PostgreSQL history and flaps queries, over one host, several or
//! all (see [`super::query`] for the page order and its cursor).
//!
//! One host (this daemon's own, or one named) is one range of the
//! per-host indexes `(host, if_name | type, observed_at, id)` in page
//! order, as before. Several named hosts are that per host (each with the
//! cursor's bound for its host, [`Bound`], and the page size as limit),
//! merged by `UNION ALL` and ordered by `(observed_at, host, id)`: at most
//! hosts x page size rows, however big the rest of the fleet. All hosts
//! are one query in that order with a row comparison for the cursor: the
//! index `triggers_time_host` (migration 0003) is that order, so "the
//! first 100 rows of every host in a day" reads about 100 index entries,
//! the other filters checked on the way. Host ids compare bytewise
//! (`COLLATE "C"`), as Rust compares them and whatever the database's
//! collation is.

use sqlx::{Postgres, QueryBuilder, postgres::PgPool};

use super::{
    FlapBucket, FlapsQuery, HistoryQuery, HostTrigger, Hosts, StoreError, flap_row,
    host_trigger_row, postgres::push_any, postgres::push_filter, query::Bound, sql,
};
use crate::model::TriggerType;

/// Which hosts a query reads, resolved against the daemon's own.
enum Which<'a> {
    One(&'a str),
    Several(&'a [String]),
    All,
}

impl<'a> Which<'a> {
    fn of(hosts: &'a Hosts, own: &'a str) -> Self {
        match hosts {
            Hosts::Own => Self::One(own),
            Hosts::Named(h) if h.len() == 1 => Self::One(&h[0]),
            Hosts::Named(h) => Self::Several(h),
            Hosts::All => Self::All,
        }
    }

    /// ` AND host ...`, nothing for all hosts.
    fn push(&self, qb: &mut QueryBuilder<Postgres>) {
        match self {
            Self::One(h) => {
                qb.push(" AND host = ").push_bind(h.to_string());
            }
            Self::Several(h) => {
                qb.push(" AND host = ANY(").push_bind(h.to_vec()).push(")");
            }
            Self::All => {}
        }
    }
}

/// One history page of the query's hosts.
pub(super) async fn history(
    pool: &PgPool,
    own: &str,
    q: &HistoryQuery,
) -> Result<Vec<HostTrigger>, StoreError> {
    let dir = if q.descending { "DESC" } else { "ASC" };
    let mut qb = QueryBuilder::<Postgres>::new("");
    match Which::of(&q.hosts, own) {
        Which::One(host) => push_one_host(&mut qb, host, q),
        Which::Several(hosts) => {
            // Each host's page from its own index range, then merged: at
            // most hosts x page_size rows are looked at.
            qb.push("SELECT id, body, host FROM (");
            for (i, host) in hosts.iter().enumerate() {
                if i > 0 {
                    qb.push(" UNION ALL ");
                }
                qb.push("(");
                push_one_host(&mut qb, host, q);
                qb.push(")");
            }
            qb.push(format_args!(
                ") AS page ORDER BY observed_at {dir}, host COLLATE \"C\" {dir}, id {dir} LIMIT "
            ))
            .push_bind(i64::from(q.page_size));
        }
        Which::All => push_all_hosts(&mut qb, q),
    }
    let rows = qb
        .build()
        .fetch_all(pool)
        .await
        .map_err(sql("history query"))?;
    rows.iter().map(host_trigger_row).collect()
}

/// The time range and filters of `q`, as ` AND ...`.
fn push_range_and_filter(qb: &mut QueryBuilder<Postgres>, q: &HistoryQuery) {
    if let Some(s) = q.since {
        qb.push(" AND observed_at >= ").push_bind(s.0);
    }
    if let Some(u) = q.until {
        qb.push(" AND observed_at < ").push_bind(u.0);
    }
    push_filter(qb, &q.filter);
}

fn id_of(id: u64) -> i64 {
    id.min(i64::MAX as u64) as i64
}

/// A page of one host: one range of its indexes, in page order.
fn push_one_host(qb: &mut QueryBuilder<Postgres>, host: &str, q: &HistoryQuery) {
    let (cmp, dir) = if q.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    qb.push("SELECT id, body, host, observed_at FROM triggers WHERE host = ")
        .push_bind(host.to_owned());
    push_range_and_filter(qb, q);
    match q.after.as_ref().map(|c| Bound::of(host, c, q.descending)) {
        None => {}
        Some(Bound::Row(t, id)) => {
            qb.push(format_args!(" AND (observed_at, id) {cmp} ("))
                .push_bind(t.0)
                .push(", ")
                .push_bind(id_of(id))
                .push(")");
        }
        Some(Bound::Time { t, inclusive }) => {
            let eq = if inclusive { "=" } else { "" };
            qb.push(format_args!(" AND observed_at {cmp}{eq} "))
                .push_bind(t.0);
        }
    }
    qb.push(format_args!(" ORDER BY observed_at {dir}, id {dir} LIMIT "))
        .push_bind(i64::from(q.page_size));
}

/// A page of every host: one range of `triggers_time_host`.
fn push_all_hosts(qb: &mut QueryBuilder<Postgres>, q: &HistoryQuery) {
    let (cmp, dir) = if q.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    qb.push("SELECT id, body, host FROM triggers WHERE true");
    push_range_and_filter(qb, q);
    if let Some(c) = &q.after {
        qb.push(format_args!(
            " AND (observed_at, host COLLATE \"C\", id) {cmp} ("
        ))
        .push_bind(c.at.0)
        .push(", ")
        .push_bind(c.host.clone())
        .push(", ")
        .push_bind(id_of(c.id))
        .push(")");
    }
    qb.push(format_args!(
        " ORDER BY observed_at {dir}, host COLLATE \"C\" {dir}, id {dir} LIMIT "
    ))
    .push_bind(i64::from(q.page_size));
}

/// The link-down buckets of the query's hosts.
pub(super) async fn flaps(
    pool: &PgPool,
    own: &str,
    q: &FlapsQuery,
) -> Result<Vec<FlapBucket>, StoreError> {
    let mut qb = QueryBuilder::<Postgres>::new("SELECT if_name, (observed_at - ");
    qb.push_bind(q.since.0)
        .push(") / ")
        .push_bind(q.bucket_ns)
        .push(" AS bucket, COUNT(*)");
    if q.by_host {
        qb.push(", host");
    }
    qb.push(" FROM triggers WHERE type = ")
        .push_bind(TriggerType::LinkDown.to_wire())
        .push(" AND observed_at >= ")
        .push_bind(q.since.0)
        .push(" AND observed_at < ")
        .push_bind(q.until.0)
        .push(" AND if_name IS NOT NULL");
    Which::of(&q.hosts, own).push(&mut qb);
    push_any(&mut qb, "if_name", q.interfaces.clone());
    if q.by_host {
        qb.push(
            " GROUP BY host, if_name, bucket \
             ORDER BY host COLLATE \"C\", if_name COLLATE \"C\", bucket",
        );
    } else {
        qb.push(" GROUP BY if_name, bucket ORDER BY if_name COLLATE \"C\", bucket");
    }
    let rows = qb.build().fetch_all(pool).await.map_err(sql("flaps"))?;
    rows.iter().map(|r| flap_row(r, q)).collect()
}
