//! `triggerctl watch`: follow the triggers as they happen, without gaps.
//!
//! With `--since`, the stored history from that time is printed first
//! (Query), then a subscription resumes after the last id that history
//! reached, so nothing falls between the two. A gap notice (this watcher
//! fell behind) is followed by an automatic resubscription from the id it
//! names; ids already printed are never printed again. When the daemon goes
//! away (a restart ends the stream, or the socket stops answering) the watch
//! says so, reconnects with backoff and resumes after the last id it
//! printed, so a restart loses nothing either (`--no-reconnect` exits
//! instead, naming that id). This module does not handle Ctrl-C: `main`
//! stops it from outside.

use serde_json::json;
use trigger_client::Client;
use trigger_db::model::{Filter, Timestamp};
use trigger_proto::v1::{self as pb, subscribe_response::Item};

use crate::{
    output::Out,
    verbs::{decode, status_error},
};

#[derive(Debug, Clone)]
pub struct WatchOpts {
    pub filter: Filter,
    pub since: Option<Timestamp>,
    pub resume_after: Option<u64>,
    pub snapshot: bool,
    /// Follow the daemon across restarts.
    pub reconnect: bool,
}

/// First wait before reconnecting; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(200);
const BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a failed call means the daemon is (for now) not there, rather
/// than that it refused what we asked.
fn daemon_gone(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// Which ids are printed, so that a resubscription never repeats one.
#[derive(Debug, Default)]
struct Seen {
    last: Option<u64>,
}

impl Seen {
    /// Whether a trigger with this id is new; snapshot items (id 0) always are.
    fn fresh(&mut self, id: u64) -> bool {
        if id == 0 {
            return true;
        }
        if self.last.is_some_and(|l| id <= l) {
            return false;
        }
        self.last = Some(id);
        true
    }
}

/// Prints the stored history from `since` (all pages) and returns the id
/// to resume the subscription after.
async fn replay_since(
    c: &mut Client,
    out: &Out,
    filter: &Filter,
    since: Timestamp,
    seen: &mut Seen,
) -> anyhow::Result<u64> {
    // Everything stored up to here is covered by the query below; anything
    // stored later has a higher id and comes with the subscription.
    let before = c
        .stats(pb::StatsRequest { skip_store: true })
        .await
        .map_err(|s| status_error("watch", &s))?
        .into_inner()
        .last_id;
    let mut token = String::new();
    loop {
        let page = c
            .query(pb::QueryRequest {
                since: Some(since.to_wire()),
                until: None,
                filter: Some(filter.to_wire()),
                page_size: 1000,
                page_token: token,
                order: pb::Order::Ascending as i32,
                // This daemon's own host.
                ..Default::default()
            })
            .await
            .map_err(|s| status_error("watch", &s))?
            .into_inner();
        // Pages are in time order, which need not be id order (clients may
        // add triggers with earlier times): print all, remember the top id.
        for w in &page.triggers {
            if let Some(t) = decode(out, w) {
                out.trigger(&t)?;
                seen.last = seen.last.max(Some(t.id));
            }
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    Ok(seen.last.unwrap_or(0).max(before))
}

/// Says why the watch reconnects and after which id it will resume.
fn reconnecting(out: &Out, why: &str, seen: &Seen) {
    let resume = seen
        .last
        .map(|l| format!(" (resuming after id {l})"))
        .unwrap_or_default();
    out.note(&format!("{why}; reconnecting{resume}"));
}

pub async fn watch(c: &mut Client, out: &Out, o: WatchOpts) -> anyhow::Result<()> {
    let mut seen = Seen::default();
    out.trigger_header()?;
    let mut resume = o.resume_after;
    if let Some(since) = o.since {
        resume = Some(replay_since(c, out, &o.filter, since, &mut seen).await?);
    }
    if let Some(r) = resume {
        seen.last = Some(seen.last.unwrap_or(0).max(r));
    }
    let mut snapshot = o.snapshot;
    let resume_hint = |seen: &Seen| match seen.last {
        Some(l) => format!("; continue with --resume-after {l}"),
        None => String::new(),
    };
    let mut backoff = BACKOFF_MIN;
    // Set while the daemon is away (said once per outage).
    let mut away = false;
    loop {
        if away {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            // Resume after what was printed; with nothing printed yet, from
            // where the previous subscription was to start.
            resume = seen.last.or(resume);
        }
        let req = pb::SubscribeRequest {
            filter: Some(o.filter.to_wire()),
            resume_after_id: resume,
            snapshot,
        };
        let mut stream = match c.subscribe(req).await {
            Ok(r) => r.into_inner(),
            Err(s) if o.reconnect && daemon_gone(&s) => {
                if !away {
                    reconnecting(out, &status_error("watch", &s).to_string(), &seen);
                    away = true;
                }
                continue;
            }
            Err(s) => anyhow::bail!("{}{}", status_error("watch", &s), resume_hint(&seen)),
        };
        if std::mem::take(&mut away) {
            out.note("reconnected");
        }
        backoff = BACKOFF_MIN;
        snapshot = false;
        loop {
            let item = match stream.message().await {
                Ok(Some(m)) => m.item,
                Ok(None) if o.reconnect => {
                    reconnecting(out, "the daemon ended the stream (restart?)", &seen);
                    away = true;
                    break;
                }
                Ok(None) => {
                    anyhow::bail!("watch: the daemon ended the stream{}", resume_hint(&seen))
                }
                Err(s) if o.reconnect && daemon_gone(&s) => {
                    reconnecting(out, &status_error("watch", &s).to_string(), &seen);
                    away = true;
                    break;
                }
                Err(s) => {
                    let e = status_error("watch", &s);
                    anyhow::bail!("{e}{}", resume_hint(&seen));
                }
            };
            match item {
                Some(Item::Trigger(w)) => {
                    if let Some(t) = decode(out, &w)
                        && seen.fresh(t.id)
                    {
                        out.trigger(&t)?;
                    }
                }
                Some(Item::SnapshotComplete(s)) => {
                    if out.json {
                        out.json_line(&json!({ "snapshot_complete": { "last_id": s.last_id } }))?;
                    } else {
                        out.note(&format!(
                            "snapshot complete (last id {}); live triggers follow",
                            s.last_id
                        ));
                    }
                    if resume.is_none() {
                        seen.last = Some(seen.last.unwrap_or(0).max(s.last_id));
                    }
                }
                Some(Item::Gap(g)) => {
                    out.note(&format!(
                        "fell behind: trigger {} and later were not delivered; \
                         resubscribing after {}",
                        g.first_missed_id, g.resume_after_id
                    ));
                    resume = Some(g.resume_after_id);
                    break;
                }
                None => out.note("ignoring an empty or unknown item from the daemon"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_drops_repeats_but_not_snapshot_items() {
        let mut s = Seen::default();
        assert!(s.fresh(5));
        assert!(s.fresh(0));
        assert!(s.fresh(0));
        assert!(!s.fresh(5));
        assert!(!s.fresh(3));
        assert!(s.fresh(6));
    }
}
