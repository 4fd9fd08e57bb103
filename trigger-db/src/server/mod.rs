//! The gRPC adapter: `trigger.v1.TriggerService` over the store, the writer
//! and the hub. It checks every request field into domain types (answering
//! INVALID_ARGUMENT with the field's name), enforces who may write, maps
//! domain errors to status codes, and ends streams on shutdown. It holds no
//! state of its own beyond counters.
//!
//! The conversion between the `trigger.v1` messages and the domain model
//! is [`wire`]'s; this file holds the service and the checks of whole
//! requests (batch sizes, Flaps and Query ranges and hosts).

pub mod dispatch;
pub mod http2;
pub mod limits;
pub mod subscribe;
pub mod wire;

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::info;
use trigger_proto::v1::{self as pb, trigger_service_server::TriggerService};

use crate::{
    hub::Hub,
    model::{Filter, Timestamp, Trigger, ValidationError},
    peer::{ConnInfo, PeerCred},
    store::{FlapsQuery, HistoryQuery, Hosts, MAX_PAGE_SIZE, Store, StoreError, StoreStats},
    threshold,
    writer::{WriterHandle, WriterStats},
};

/// Most triggers one Add may carry.
pub const MAX_ADD_BATCH: usize = 10_000;
/// Most ids one Delete may carry.
pub const MAX_DELETE_IDS: usize = 10_000;
/// Rows read from the store per page while replaying or dumping.
const REPLAY_PAGE: u32 = 1_000;

/// Who may use the write verbs.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Besides uid 0, members of this group may write.
    pub writer_gid: Option<u32>,
}

impl Access {
    pub fn may_write(&self, peer: &PeerCred) -> bool {
        peer.uid == 0 || self.writer_gid.is_some_and(|g| peer.in_group(g))
    }
}

/// The triggers of an Add, checked; `origin` is the daemon's, from the
/// peer's credentials, whatever the client put there.
pub fn client_triggers(
    wire: &[pb::Trigger],
    peer: &PeerCred,
    now: Timestamp,
) -> Result<Vec<Trigger>, ValidationError> {
    let origin = peer.to_string();
    wire.iter()
        .enumerate()
        .map(|(i, w)| {
            let mut t = Trigger::from_client(w, &format!("triggers[{i}]"), now)?;
            t.origin.clone_from(&origin);
            Ok(t)
        })
        .collect()
}

/// Counters from the sources, read when Stats is asked.
pub trait SourceCounters: Send + Sync + std::fmt::Debug {
    /// The source's name in Stats (`rtnetlink`, `networkmanager`).
    fn name(&self) -> &'static str;
    fn resyncs(&self) -> u64;
    fn parse_errors(&self) -> u64;
}

#[derive(Debug)]
pub struct Service {
    pub store: Store,
    pub writer: WriterHandle,
    pub hub: Arc<Hub>,
    pub writer_stats: Arc<WriterStats>,
    pub sources: Vec<Arc<dyn SourceCounters>>,
    pub access: Access,
    pub max_subscribers: usize,
    pub shutdown: CancellationToken,
    pub started: Instant,
    pub rejected: AtomicU64,
}

fn invalid(e: ValidationError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound(id) => Status::not_found(format!("trigger {id} not found")),
        StoreError::Closed => Status::unavailable("trigger-db is shutting down"),
        e @ StoreError::HostNotHere { .. } => Status::invalid_argument(e.to_string()),
        e @ StoreError::SpoolFull { .. } => Status::resource_exhausted(e.to_string()),
        e @ StoreError::Unreachable { .. } => Status::unavailable(errchain::chain(&e)),
        other => Status::internal(errchain::chain(&other)),
    }
}

type TriggerStream = Pin<Box<dyn Stream<Item = Result<pb::Trigger, Status>> + Send>>;
type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

impl Service {
    fn peer<T>(req: &Request<T>) -> Option<PeerCred> {
        req.extensions().get::<ConnInfo>().map(|c| c.cred.clone())
    }

    /// Write verbs: uid 0 or the writer group, by SO_PEERCRED. A request
    /// without credentials (not over the Unix socket) is refused: there is
    /// nobody to check.
    fn check_writer<T>(&self, req: &Request<T>, verb: &str) -> Result<PeerCred, Status> {
        let peer = Self::peer(req);
        match peer {
            Some(p) if self.access.may_write(&p) => Ok(p),
            _ => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                let p = peer.as_ref().map_or_else(
                    || "a peer without credentials".to_owned(),
                    ToString::to_string,
                );
                info!(verb, peer = %p, "write refused");
                Err(Status::permission_denied(format!(
                    "{verb} needs uid 0 or the writer group; {p} is neither"
                )))
            }
        }
    }

    fn reject(&self, e: ValidationError) -> Status {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        invalid(e)
    }

    /// A store error of a read that names hosts: a host this database
    /// does not hold is a rejected request too.
    fn read_error(&self, e: StoreError) -> Status {
        if matches!(e, StoreError::HostNotHere { .. }) {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        store_status(e)
    }
}

fn check_filter(w: Option<&pb::TriggerFilter>) -> Result<Filter, ValidationError> {
    Filter::from_wire(w, "filter")
}

#[tonic::async_trait]
impl TriggerService for Service {
    async fn add(&self, req: Request<pb::AddRequest>) -> Result<Response<pb::AddResponse>, Status> {
        let peer = self.check_writer(&req, "Add")?;
        let body = req.into_inner();
        if body.triggers.is_empty() {
            return Err(self.reject(ValidationError::new("triggers", "is empty")));
        }
        if body.triggers.len() > MAX_ADD_BATCH {
            return Err(self.reject(ValidationError::new(
                "triggers",
                format!(
                    "{} entries; at most {MAX_ADD_BATCH} per Add",
                    body.triggers.len()
                ),
            )));
        }
        let triggers =
            client_triggers(&body.triggers, &peer, Timestamp::now()).map_err(|e| self.reject(e))?;
        let ids = self.writer.add(triggers).await.map_err(store_status)?;
        Ok(Response::new(pb::AddResponse { ids }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let id = req.into_inner().id;
        if id == 0 {
            return Err(self.reject(ValidationError::new("id", "must not be 0")));
        }
        // A subscriber may ask for a trigger it was just sent, before the
        // store has committed it.
        let wire = match self.hub.in_flight(id) {
            Some(t) => t.to_wire(),
            None => self.store.get(id).await.map_err(store_status)?.to_wire(),
        };
        Ok(Response::new(pb::GetResponse {
            trigger: Some(wire),
        }))
    }

    async fn modify(
        &self,
        req: Request<pb::ModifyRequest>,
    ) -> Result<Response<pb::ModifyResponse>, Status> {
        self.check_writer(&req, "Modify")?;
        let body = req.into_inner();
        let w = body
            .trigger
            .ok_or_else(|| self.reject(ValidationError::new("trigger", "is required")))?;
        if w.id == 0 {
            return Err(self.reject(ValidationError::new(
                "trigger.id",
                "must name a stored trigger",
            )));
        }
        // Checked like an Add (source and time are kept from the stored one).
        let mut unstored = w.clone();
        unstored.id = 0;
        unstored.source = 0;
        let mut t = Trigger::from_client(&unstored, "trigger", Timestamp::now())
            .map_err(|e| self.reject(e))?;
        t.id = w.id;
        let stored = self.writer.modify(t).await.map_err(store_status)?;
        Ok(Response::new(pb::ModifyResponse {
            trigger: Some(stored.to_wire()),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.check_writer(&req, "Delete")?;
        let ids = req.into_inner().ids;
        if ids.is_empty() {
            return Err(self.reject(ValidationError::new("ids", "is empty")));
        }
        if ids.len() > MAX_DELETE_IDS {
            return Err(self.reject(ValidationError::new(
                "ids",
                format!("{} entries; at most {MAX_DELETE_IDS}", ids.len()),
            )));
        }
        if let Some(i) = ids.iter().position(|id| *id == 0) {
            return Err(self.reject(ValidationError::new(format!("ids[{i}]"), "must not be 0")));
        }
        let deleted = self.writer.delete(ids).await.map_err(store_status)?;
        Ok(Response::new(pb::DeleteResponse { deleted }))
    }

    type DumpStream = TriggerStream;

    async fn dump(&self, req: Request<pb::DumpRequest>) -> Result<Response<TriggerStream>, Status> {
        let filter = check_filter(req.get_ref().filter.as_ref()).map_err(|e| self.reject(e))?;
        self.settle_published().await;
        let store = self.store.clone();
        let upto = self.hub.settled_id();
        let shutdown = self.shutdown.clone();
        let stream = async_stream::try_stream! {
            let mut after = 0;
            loop {
                if shutdown.is_cancelled() { break; }
                let page = store.after_id(after, Some(upto), &filter, REPLAY_PAGE).await.map_err(store_status)?;
                let Some(last) = page.last() else { break };
                after = last.id;
                for t in page { yield t.to_wire(); }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn flush(
        &self,
        req: Request<pb::FlushRequest>,
    ) -> Result<Response<pb::FlushResponse>, Status> {
        self.check_writer(&req, "Flush")?;
        let body = req.into_inner();
        let filter = check_filter(body.filter.as_ref()).map_err(|e| self.reject(e))?;
        let before = body
            .before
            .as_ref()
            .map(|t| Timestamp::from_wire(t, "before"))
            .transpose()
            .map_err(|e| self.reject(e))?;
        let deleted = self
            .writer
            .flush(filter, before)
            .await
            .map_err(store_status)?;
        info!(deleted, "flush");
        Ok(Response::new(pb::FlushResponse { deleted }))
    }

    type SubscribeStream = SubscribeStream;

    /// Subscribe as typed messages, for a server that mounts this service
    /// without [`dispatch::Dispatch`]: the shared frames decoded again. The
    /// daemon serves Subscribe through the dispatcher, which sends the
    /// frames as they are.
    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<SubscribeStream>, Status> {
        use futures::StreamExt as _;
        use prost::Message as _;
        let frames = self.subscribe_frames(req).await?.into_inner();
        Ok(Response::new(Box::pin(frames.map(|f| {
            f.and_then(|bytes| {
                pb::SubscribeResponse::decode(bytes.slice(subscribe::GRPC_PREFIX..))
                    .map_err(|e| Status::internal(format!("re-decoding a frame: {e}")))
            })
        }))))
    }

    async fn query(
        &self,
        req: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        let body = req.into_inner();
        let q = check_query(&body).map_err(|e| self.reject(e))?;
        self.settle_published().await;
        let page = self
            .store
            .history(&q)
            .await
            .map_err(|e| self.read_error(e))?;
        let next_page_token = if page.len() == q.page_size as usize {
            page.last().map(|t| q.token_after(t)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::QueryResponse {
            triggers: page.iter().map(|r| r.trigger.to_wire()).collect(),
            hosts: page.into_iter().map(|r| r.host).collect(),
            next_page_token,
        }))
    }

    async fn list_links(
        &self,
        _req: Request<pb::ListLinksRequest>,
    ) -> Result<Response<pb::ListLinksResponse>, Status> {
        Ok(Response::new(pb::ListLinksResponse {
            links: self.hub.links().to_wire(),
        }))
    }

    async fn configure_thresholds(
        &self,
        req: Request<pb::ConfigureThresholdsRequest>,
    ) -> Result<Response<pb::ConfigureThresholdsResponse>, Status> {
        self.configure_thresholds_impl(req).await
    }

    async fn flaps(
        &self,
        req: Request<pb::FlapsRequest>,
    ) -> Result<Response<pb::FlapsResponse>, Status> {
        let q = check_flaps(req.get_ref(), Timestamp::now()).map_err(|e| self.reject(e))?;
        self.settle_published().await;
        let rows = self.store.flaps(&q).await.map_err(|e| self.read_error(e))?;
        Ok(Response::new(pb::FlapsResponse {
            buckets: rows
                .into_iter()
                .map(|b| pb::FlapBucket {
                    interface: b.interface,
                    start: Some(b.start.to_wire()),
                    link_downs: b.link_downs,
                    host: b.host.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn list_thresholds(
        &self,
        _req: Request<pb::ListThresholdsRequest>,
    ) -> Result<Response<pb::ListThresholdsResponse>, Status> {
        let all = self.writer.list_thresholds().await.map_err(store_status)?;
        Ok(Response::new(pb::ListThresholdsResponse {
            thresholds: all.iter().map(threshold::Threshold::to_wire).collect(),
        }))
    }

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let s = if req.get_ref().skip_store {
            StoreStats::default()
        } else {
            self.settle_published().await;
            self.store.stats().await.map_err(store_status)?
        };
        let w = &self.writer_stats;
        let (flaps, window) = w.flaps(Instant::now());
        Ok(Response::new(pb::StatsResponse {
            stored_triggers: s.rows,
            first_id: s.first_id,
            last_id: self.hub.settled_id(),
            database_bytes: s.database_bytes,
            subscribers: self.hub.subscribers() as u64,
            gap_notices: self.hub.stats.gap_notices.load(Ordering::Relaxed),
            resyncs: self.sources.iter().map(|c| c.resyncs()).sum(),
            ingested_total: w.ingested.load(Ordering::Relaxed),
            retention_deleted: w.retention_deleted.load(Ordering::Relaxed),
            rejected_requests: self.rejected.load(Ordering::Relaxed),
            uptime_s: self.started.elapsed().as_secs(),
            by_source: s
                .by_source
                .iter()
                .map(|(k, n)| pb::Count {
                    name: k.to_string(),
                    count: *n,
                })
                .collect(),
            by_type: s
                .by_type
                .iter()
                .map(|(k, n)| pb::Count {
                    name: k.to_string(),
                    count: *n,
                })
                .collect(),
            netlink_parse_errors: self
                .sources
                .iter()
                .filter(|c| c.name() == "rtnetlink")
                .map(|c| c.parse_errors())
                .sum(),
            bad_input_by_source: self
                .sources
                .iter()
                .map(|c| pb::Count {
                    name: c.name().into(),
                    count: c.parse_errors(),
                })
                .collect(),
            flaps: flaps
                .into_iter()
                .map(|f| pb::InterfaceFlaps {
                    interface: f.interface,
                    in_window: f.in_window,
                    total: f.total,
                    window_s: window.as_secs(),
                })
                .collect(),
            debounced: w.debounced.load(Ordering::Relaxed),
            suppressed_flaps: w.suppressed_flaps.load(Ordering::Relaxed),
            write_errors: w.write_errors.load(Ordering::Relaxed),
            unstored_triggers: w.unstored_triggers.load(Ordering::Relaxed),
            spool: self.store.spool_status().map(|sp| pb::SpoolStats {
                path: sp.path.display().to_string(),
                backlog_rows: sp.rows,
                backlog_bytes: sp.bytes,
                max_bytes: sp.max_bytes,
                server_reachable: sp.server_reachable,
                last_error: sp.last_error,
                shipped_total: sp.shipped,
            }),
        }))
    }
}

impl Service {
    /// Reads of the store see every trigger published before them: the
    /// writer holds source triggers for a moment (and a commit may be under
    /// way); it is asked to store them first. A failed commit is the
    /// writer's to count and report; the read then goes on without them.
    async fn settle_published(&self) {
        if self.hub.settled_id() < self.hub.last_id() {
            let _ = self.writer.store_held().await;
        }
    }

    async fn configure_thresholds_impl(
        &self,
        req: Request<pb::ConfigureThresholdsRequest>,
    ) -> Result<Response<pb::ConfigureThresholdsResponse>, Status> {
        self.check_writer(&req, "ConfigureThresholds")?;
        let body = req.into_inner();
        if body.thresholds.is_empty() {
            return Err(self.reject(ValidationError::new("thresholds", "is empty")));
        }
        if body.thresholds.len() > MAX_THRESHOLDS {
            return Err(self.reject(ValidationError::new(
                "thresholds",
                format!(
                    "{} entries; at most {MAX_THRESHOLDS}",
                    body.thresholds.len()
                ),
            )));
        }
        let changes = body
            .thresholds
            .iter()
            .enumerate()
            .map(|(i, t)| wire::change_from_wire(t, &format!("thresholds[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.reject(e))?;
        let (now, cancelled) = self
            .writer
            .configure_thresholds(changes)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ConfigureThresholdsResponse {
            thresholds: now.iter().map(threshold::Threshold::to_wire).collect(),
            cancelled,
        }))
    }
}

/// Most entries one ConfigureThresholds may carry.
pub const MAX_THRESHOLDS: usize = 1_000;

/// Most interfaces one Flaps request may name.
pub const MAX_FLAP_INTERFACES: usize = 1_000;
/// Most buckets one Flaps request may span.
pub const MAX_FLAP_BUCKETS: i64 = 10_000;

/// Most host ids one Query or Flaps request may name.
pub const MAX_QUERY_HOSTS: usize = 100;

/// Checks the `hosts` and `all_hosts` fields of a Query or Flaps request.
pub fn check_hosts(hosts: &[String], all_hosts: bool) -> Result<Hosts, ValidationError> {
    if all_hosts && !hosts.is_empty() {
        return Err(ValidationError::new(
            "all_hosts",
            "is set together with hosts: name hosts, or ask for all of them",
        ));
    }
    if hosts.len() > MAX_QUERY_HOSTS {
        return Err(ValidationError::new(
            "hosts",
            format!("{} entries; at most {MAX_QUERY_HOSTS}", hosts.len()),
        ));
    }
    for (i, h) in hosts.iter().enumerate() {
        crate::store::check_host_id(h)
            .map_err(|why| ValidationError::new(format!("hosts[{i}]"), why))?;
    }
    Ok(if all_hosts {
        Hosts::All
    } else {
        Hosts::named(hosts.to_vec())
    })
}

/// Checks a Flaps request's fields; `until` defaults to `now`.
pub fn check_flaps(w: &pb::FlapsRequest, now: Timestamp) -> Result<FlapsQuery, ValidationError> {
    let since = w
        .since
        .as_ref()
        .ok_or_else(|| ValidationError::new("since", "is required"))
        .and_then(|t| Timestamp::from_wire(t, "since"))?;
    let until = w
        .until
        .as_ref()
        .map(|t| Timestamp::from_wire(t, "until"))
        .transpose()?
        .unwrap_or(now);
    if until <= since {
        return Err(ValidationError::new(
            "until",
            format!("{until} is not after since ({since})"),
        ));
    }
    if w.bucket_s == 0 {
        return Err(ValidationError::new("bucket_s", "must be at least 1"));
    }
    let bucket_ns = i64::from(w.bucket_s) * 1_000_000_000;
    let span = until.0.saturating_sub(since.0);
    let buckets = span / bucket_ns + i64::from(span % bucket_ns != 0);
    if buckets > MAX_FLAP_BUCKETS {
        return Err(ValidationError::new(
            "bucket_s",
            format!(
                "{} s buckets make {buckets} over the range; at most {MAX_FLAP_BUCKETS}",
                w.bucket_s
            ),
        ));
    }
    if w.interfaces.len() > MAX_FLAP_INTERFACES {
        return Err(ValidationError::new(
            "interfaces",
            format!(
                "{} entries; at most {MAX_FLAP_INTERFACES}",
                w.interfaces.len()
            ),
        ));
    }
    for (i, name) in w.interfaces.iter().enumerate() {
        let f = format!("interfaces[{i}]");
        crate::model::check_name(name, &f)?;
        if name.is_empty() {
            return Err(ValidationError::new(f, "is empty"));
        }
    }
    Ok(FlapsQuery {
        since,
        until,
        bucket_ns,
        interfaces: w.interfaces.clone(),
        hosts: check_hosts(&w.hosts, w.all_hosts)?,
        by_host: w.by_host,
    })
}

/// Checks a history query's fields.
pub fn check_query(w: &pb::QueryRequest) -> Result<HistoryQuery, ValidationError> {
    if w.page_size == 0 || w.page_size > MAX_PAGE_SIZE {
        return Err(ValidationError::new(
            "page_size",
            format!("{} is outside 1..={MAX_PAGE_SIZE}", w.page_size),
        ));
    }
    let since = w
        .since
        .as_ref()
        .map(|t| Timestamp::from_wire(t, "since"))
        .transpose()?;
    let until = w
        .until
        .as_ref()
        .map(|t| Timestamp::from_wire(t, "until"))
        .transpose()?;
    if let (Some(s), Some(u)) = (since, until)
        && u <= s
    {
        return Err(ValidationError::new(
            "until",
            format!("{u} is not after since ({s})"),
        ));
    }
    let descending = match pb::Order::try_from(w.order) {
        Ok(pb::Order::Unspecified | pb::Order::Ascending) => false,
        Ok(pb::Order::Descending) => true,
        Err(_) => {
            return Err(ValidationError::new(
                "order",
                format!("unknown value {}", w.order),
            ));
        }
    };
    let mut q = HistoryQuery {
        since,
        until,
        filter: check_filter(w.filter.as_ref())?,
        page_size: w.page_size,
        descending,
        hosts: check_hosts(&w.hosts, w.all_hosts)?,
        after: None,
    };
    if !w.page_token.is_empty() {
        q.after = Some(
            q.parse_token(&w.page_token)
                .map_err(|p| ValidationError::new("page_token", p))?,
        );
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn req(since: Option<i64>, until: Option<i64>, bucket_s: u32) -> pb::FlapsRequest {
        pb::FlapsRequest {
            since: since.map(|s| Timestamp(s * S).to_wire()),
            until: until.map(|u| Timestamp(u * S).to_wire()),
            bucket_s,
            ..Default::default()
        }
    }

    fn cred(uid: u32, gid: u32, groups: Vec<u32>) -> PeerCred {
        PeerCred {
            uid,
            gid,
            pid: Some(42),
            groups,
        }
    }

    #[test]
    fn origin_is_the_peer_whatever_the_client_says() {
        let w = pb::Trigger {
            r#type: pb::TriggerType::LinkUp as i32,
            origin: "uid=0 pid=1".into(),
            interface: Some(pb::Interface {
                name: "eth0".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t =
            client_triggers(&[w.clone(), w], &cred(1000, 1000, vec![]), Timestamp::now()).unwrap();
        assert!(
            t.iter().all(|t| t.origin == "uid=1000 gid=1000 pid=42"),
            "{t:?}"
        );
    }

    #[test]
    fn only_root_and_the_writer_group_may_write() {
        let access = Access {
            writer_gid: Some(77),
        };
        assert!(access.may_write(&cred(0, 0, vec![])));
        assert!(access.may_write(&cred(1000, 1000, vec![77])));
        assert!(access.may_write(&cred(1000, 77, vec![])));
        assert!(!access.may_write(&cred(1000, 1000, vec![78])));
        assert!(!Access::default().may_write(&cred(1000, 1000, vec![])));
    }

    #[test]
    fn flaps_ranges_and_buckets_are_checked_by_field() {
        let now = Timestamp(1_800_000_000 * S);
        let q = check_flaps(&req(Some(1_799_996_400), None, 300), now).unwrap();
        assert_eq!(q.until, now);
        assert_eq!(q.bucket_ns, 300 * S);
        let field = |r: &pb::FlapsRequest| check_flaps(r, now).unwrap_err().field;
        assert_eq!(field(&req(None, None, 60)), "since");
        assert_eq!(field(&req(Some(100), Some(100), 60)), "until");
        assert_eq!(field(&req(Some(200), Some(100), 60)), "until");
        assert_eq!(field(&req(Some(0), Some(100), 0)), "bucket_s");
        // 10,001 one-second buckets: too many; 10,000 are fine.
        assert_eq!(field(&req(Some(0), Some(10_001), 1)), "bucket_s");
        assert!(check_flaps(&req(Some(0), Some(10_000), 1), now).is_ok());
        let mut r = req(Some(0), Some(100), 10);
        r.interfaces = vec!["eth0".into(), "".into()];
        assert_eq!(field(&r), "interfaces[1]");
        r.interfaces = vec!["eth 0".into()];
        assert_eq!(field(&r), "interfaces[0]");
        r.interfaces = vec![];
        r.hosts = vec!["gw-1".into(), "gw\n2".into()];
        assert_eq!(field(&r), "hosts[1]");
        r.hosts = vec!["gw-1".into()];
        r.all_hosts = true;
        assert_eq!(field(&r), "all_hosts");
        r.all_hosts = false;
        r.by_host = true;
        let q = check_flaps(&r, now).unwrap();
        assert_eq!(q.hosts, Hosts::Named(vec!["gw-1".into()]));
        assert!(q.by_host);
    }

    #[test]
    fn query_hosts_are_checked_by_field() {
        let q = |hosts: Vec<String>, all_hosts: bool| pb::QueryRequest {
            page_size: 10,
            hosts,
            all_hosts,
            ..Default::default()
        };
        let field = |r: pb::QueryRequest| check_query(&r).unwrap_err().field;
        assert_eq!(check_query(&q(vec![], false)).unwrap().hosts, Hosts::Own);
        assert_eq!(check_query(&q(vec![], true)).unwrap().hosts, Hosts::All);
        assert_eq!(
            check_query(&q(vec!["b".into(), "a".into(), "b".into()], false))
                .unwrap()
                .hosts,
            Hosts::Named(vec!["a".into(), "b".into()])
        );
        assert_eq!(field(q(vec!["a".into()], true)), "all_hosts");
        assert_eq!(field(q(vec!["a".into(), String::new()], false)), "hosts[1]");
        assert_eq!(field(q(vec!["x".repeat(256)], false)), "hosts[0]");
        assert_eq!(
            field(q(
                (0..=MAX_QUERY_HOSTS).map(|i| i.to_string()).collect(),
                false
            )),
            "hosts"
        );
        // A page token of one host set is refused for another.
        let mut r = q(vec!["a".into(), "b".into()], false);
        let token = check_query(&r)
            .unwrap()
            .token_after(&crate::store::HostTrigger {
                host: "a".into(),
                trigger: Trigger::new(
                    crate::model::Source::Client,
                    crate::model::TriggerType::LinkUp,
                ),
            });
        r.page_token = token.clone();
        assert_eq!(check_query(&r).unwrap().after.unwrap().host, "a");
        let mut other = q(vec![], true);
        other.page_token = token;
        assert_eq!(field(other), "page_token");
    }
}
