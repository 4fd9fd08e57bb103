//! The hub: fan-out of triggers to subscribers (as soon as the writer has
//! given them ids, before the store has committed them), and the current
//! link table that subscribers' snapshots come from.
//!
//! Every subscriber has its own bounded queue. Publishing never waits: a
//! subscriber whose queue is full is cut off on the spot (its queue is
//! closed after what it already holds) and told, once it has read that far,
//! which id to resume after. So one subscriber that stops reading never
//! slows the writer or the others, and never loses a trigger silently.
//!
//! The queue ([`Receiver`]) is a `VecDeque` under a mutex with the
//! reader's waker, not a tokio channel: a publish touches every
//! subscriber's queue, and the channel's block list, semaphore and waker
//! took about 15 % of the daemon's CPU samples at 1,000 subscribers (most
//! of it cache misses in 1,000 block lists); the bound is the hub's own
//! cut-off either way.
//!
//! Each published trigger is encoded once, as the Subscribe response that
//! carries it, when the first subscriber's filter takes it; every queue
//! gets the same shared bytes ([`Delivery`]), gRPC framing included, so the
//! cost of a delivery is a reference count, not a protobuf encoding (or a
//! copy) per subscriber.
//!
//! Registration and publishing share one lock, so a new subscriber learns
//! exactly which id the live part of its stream starts after, and gets the
//! link table as of that id: replay from the store up to it (and the
//! published triggers the store has not committed yet, which the hub keeps
//! until the writer settles them), snapshot, then live triggers, with no
//! gap and no duplicate. The hub does not touch the store itself.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
};

use bytes::Bytes;

use crate::{
    links::LinkTable,
    model::{Filter, Trigger},
};

/// Default capacity of one subscriber's queue, in triggers.
pub const DEFAULT_QUEUE: usize = 4096;

/// One stored trigger as subscribers get it: the trigger (for filters and
/// in-process readers) and its Subscribe response, encoded once.
#[derive(Debug)]
pub struct Delivery {
    pub trigger: Arc<Trigger>,
    /// `trigger.v1.SubscribeResponse { trigger }`, protobuf-encoded, as a
    /// gRPC message (after the 5-byte length prefix).
    pub frame: Bytes,
}

impl Delivery {
    pub fn new(trigger: Arc<Trigger>) -> Self {
        let frame = crate::server::subscribe::trigger_frame(&trigger);
        Self { trigger, frame }
    }
}

/// One subscriber's queue, shared by its [`Slot`] and its [`Receiver`].
#[derive(Debug, Default)]
struct Queue(Mutex<QueueState>);

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Arc<Delivery>>,
    /// The reader waiting for an item or the end.
    waker: Option<Waker>,
    /// No more items will come (the slot is gone): the reader ends after
    /// what is queued.
    closed: bool,
    /// The reader is gone: nothing more is queued.
    gone: bool,
    /// The first id not queued when the subscriber fell behind and was cut
    /// off (then `closed` follows).
    first_missed: Option<u64>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A drained queue keeps room for this many items; beyond it, the room a
/// burst made is given back, so 1,000 subscribers that each once held a
/// burst of thousands do not keep that memory.
const KEEP_ROOM: usize = 64;

impl QueueState {
    fn pop(&mut self) -> Option<Arc<Delivery>> {
        let d = self.items.pop_front();
        if self.items.is_empty() && self.items.capacity() > KEEP_ROOM {
            self.items.shrink_to(KEEP_ROOM);
        }
        d
    }
}

#[derive(Debug)]
struct Slot {
    filter: Filter,
    queue: Arc<Queue>,
    /// Most items the queue holds.
    capacity: usize,
}

/// What one publish did with a subscriber's slot.
enum Offered {
    /// Queued what its filter took (maybe nothing); the reader to wake, if
    /// it waits and something was queued.
    Kept(Option<Waker>),
    /// The reader is gone: nothing to deliver or tell.
    Gone,
    /// Fell behind: cut off, the first id it misses recorded.
    CutOff,
}

impl Slot {
    fn is_gone(&self) -> bool {
        self.queue.lock().gone
    }

    /// Queues the triggers the filter takes (each encoded on first use,
    /// into `deliveries`), under one lock of the queue. A subscriber that
    /// already had more than `behind` queued, or whose queue is full, is
    /// cut off at the first trigger it would have got. The reader is not
    /// woken here (see [`Hub::publish`]).
    fn offer(
        &self,
        triggers: &[Arc<Trigger>],
        deliveries: &mut [Option<Arc<Delivery>>],
        behind: usize,
    ) -> Offered {
        let mut q = self.queue.lock();
        if q.gone {
            return Offered::Gone;
        }
        let pending = q.items.len();
        let mut queued = false;
        for (t, d) in triggers.iter().zip(deliveries.iter_mut()) {
            if !self.filter.matches(t) {
                continue;
            }
            if pending > behind || q.items.len() >= self.capacity {
                q.first_missed = Some(t.id);
                return Offered::CutOff;
            }
            let d = d.get_or_insert_with(|| Arc::new(Delivery::new(t.clone())));
            q.items.push_back(d.clone());
            queued = true;
        }
        Offered::Kept(if queued { q.waker.clone() } else { None })
    }
}

impl Drop for Slot {
    /// The slot is gone (cut off, reader gone, or the hub closed): the
    /// reader ends after what it holds.
    fn drop(&mut self) {
        let waker = {
            let mut q = self.queue.lock();
            q.closed = true;
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A subscriber's end of its queue.
#[derive(Debug)]
pub struct Receiver(Arc<Queue>);

/// Why [`Receiver::try_recv`] has nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing queued yet.
    Empty,
    /// Nothing queued and nothing more will come.
    Closed,
}

impl Receiver {
    /// The next item, or `None` once the queue is closed and drained.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<Delivery>>> {
        let mut q = self.0.lock();
        if let Some(d) = q.pop() {
            return Poll::Ready(Some(d));
        }
        if q.closed {
            return Poll::Ready(None);
        }
        if !q.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            q.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    pub async fn recv(&mut self) -> Option<Arc<Delivery>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn try_recv(&mut self) -> Result<Arc<Delivery>, TryRecvError> {
        let mut q = self.0.lock();
        match q.pop() {
            Some(d) => Ok(d),
            None if q.closed => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Whether an item is queued; `None` once nothing more will be queued
    /// (then poll to read the rest and the end).
    pub fn has_item(&self) -> Option<bool> {
        let q = self.0.lock();
        (!q.closed).then(|| !q.items.is_empty())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.gone = true;
        q.items.clear();
        q.waker = None;
    }
}

#[derive(Debug, Default)]
struct Inner {
    last_id: u64,
    /// Published triggers the store has not committed yet (the writer's
    /// batch under way, in id order): a subscriber registering now gets
    /// them from here, since its replay from the store cannot see them.
    inflight: Vec<Arc<Trigger>>,
    links: Arc<LinkTable>,
    slots: Vec<Slot>,
    closed: bool,
}

/// Counters the Stats verb reports.
#[derive(Debug, Default)]
pub struct HubStats {
    pub published: AtomicU64,
    pub gap_notices: AtomicU64,
}

#[derive(Debug)]
pub struct Hub {
    inner: Mutex<Inner>,
    /// A subscriber with more than this many triggers undelivered is cut off.
    queue: usize,
    /// Most triggers one publish carries (the writer's batch limit): the
    /// queues have room for one more batch beyond `queue`, so a subscriber
    /// that keeps up is never cut off by a large batch.
    batch_max: usize,
    pub stats: HubStats,
    /// Signalled when the first link table arrives.
    links_ready: tokio::sync::Notify,
    has_links: std::sync::atomic::AtomicBool,
}

/// A registered subscriber's end: its queue and where its live part starts.
#[derive(Debug)]
pub struct Subscription {
    pub rx: Receiver,
    /// Every trigger with a higher id arrives on `rx`; those up to it are in
    /// the store or in `inflight`.
    pub start_after: u64,
    /// Triggers up to `start_after` that were published but are not
    /// committed yet: replay the store up to the id before the first of
    /// these, then these.
    pub inflight: Vec<Arc<Trigger>>,
    /// The link table as of `start_after`.
    pub links: Arc<LinkTable>,
}

impl Subscription {
    /// After `rx` is closed and drained: the first id that was not delivered
    /// because the queue overflowed, or `None` if the hub shut down.
    pub fn first_missed(&self) -> Option<u64> {
        self.rx.0.lock().first_missed
    }
}

impl Hub {
    pub fn new(last_id: u64, queue: usize, batch_max: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                last_id,
                ..Default::default()
            }),
            queue: queue.max(1),
            batch_max: batch_max.max(1),
            stats: HubStats::default(),
            links_ready: tokio::sync::Notify::new(),
            has_links: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave Inner inconsistent in
        // a way that matters more than stopping fan-out would.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a subscriber; `None` once the hub is closed.
    pub fn subscribe(&self, filter: Filter) -> Option<Subscription> {
        let queue = Arc::new(Queue::default());
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        reclaim(&mut inner.slots);
        inner.slots.push(Slot {
            filter,
            queue: queue.clone(),
            capacity: self.queue + self.batch_max,
        });
        Some(Subscription {
            rx: Receiver(queue),
            start_after: inner.last_id,
            inflight: inner.inflight.clone(),
            links: inner.links.clone(),
        })
    }

    /// Live subscribers. The slots of subscribers that went away (their
    /// receiver dropped: the client disconnected) are reclaimed first, so a
    /// subscriber whose filter never matches does not hold a slot after it
    /// left.
    pub fn subscribers(&self) -> usize {
        let mut inner = self.lock();
        reclaim(&mut inner.slots);
        inner.slots.len()
    }

    pub fn last_id(&self) -> u64 {
        self.lock().last_id
    }

    /// Waits until a source has handed over its first link table.
    pub async fn wait_for_links(&self) {
        let notified = self.links_ready.notified();
        if self.has_links.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    pub fn links(&self) -> Arc<LinkTable> {
        self.lock().links.clone()
    }

    /// Hands stored triggers (ids set, increasing) to every subscriber whose
    /// filter matches, and swaps in the link table they leave behind.
    pub fn publish(&self, triggers: &[Arc<Trigger>], links: Option<Arc<LinkTable>>) {
        let mut inner = self.lock();
        if let Some(links) = links {
            inner.links = links;
            if !self.has_links.swap(true, Ordering::AcqRel) {
                self.links_ready.notify_waiters();
            }
        }
        if let Some(last) = triggers.last() {
            inner.last_id = inner.last_id.max(last.id);
        }
        inner.inflight.extend(triggers.iter().cloned());
        self.stats
            .published
            .fetch_add(triggers.len() as u64, Ordering::Relaxed);
        let queue = self.queue;
        // Encoded on first use, shared by every queue that takes it.
        let mut deliveries: Vec<Option<Arc<Delivery>>> = vec![None; triggers.len()];
        // The readers are woken once everything is queued: a connection
        // whose first stream is woken then finds all of its streams' items
        // there, instead of waking while the hub is still queueing.
        let mut wake = Vec::new();
        inner
            .slots
            .retain(|slot| match slot.offer(triggers, &mut deliveries, queue) {
                Offered::Kept(waker) => {
                    wake.extend(waker);
                    true
                }
                // Dropping the slot closes its queue and wakes its reader.
                Offered::CutOff => {
                    self.stats.gap_notices.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Offered::Gone => false,
            });
        drop(inner);
        for w in wake {
            w.wake();
        }
    }

    /// The writer is done with the triggers up to `id` (committed, or
    /// failed and logged): new subscribers read them from the store.
    pub fn settle(&self, id: u64) {
        let mut inner = self.lock();
        inner.inflight.retain(|t| t.id > id);
    }

    /// The published trigger `id` if the store has not committed it yet.
    pub fn in_flight(&self, id: u64) -> Option<Arc<Trigger>> {
        let inner = self.lock();
        inner
            .inflight
            .binary_search_by_key(&id, |t| t.id)
            .ok()
            .map(|i| inner.inflight[i].clone())
    }

    /// The last id the writer is done with (see [`Hub::settle`]): a reader
    /// of the store that then subscribes resuming after it misses nothing.
    pub fn settled_id(&self) -> u64 {
        // Ids are given consecutively: everything before the first one in
        // flight is settled (all of them when none is).
        let inner = self.lock();
        inner.inflight.first().map_or(inner.last_id, |t| t.id - 1)
    }

    /// Ends every subscription (their queues close after what they hold) and
    /// refuses new ones: shutdown.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.slots.clear();
    }
}

/// Drops the slots whose receiver is gone, whatever their filter: a slot is
/// freed when its subscriber leaves, not only when a publish finds it closed.
fn reclaim(slots: &mut Vec<Slot>) {
    slots.retain(|s| !s.is_gone());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Interface, Source, TriggerType};

    fn trig(id: u64, ifname: &str) -> Arc<Trigger> {
        let mut t = Trigger::new(Source::Client, TriggerType::LinkUp);
        t.id = id;
        t.interface = Some(Interface {
            name: ifname.into(),
            ..Default::default()
        });
        Arc::new(t)
    }

    #[test]
    fn full_queue_cuts_off_only_that_subscriber_and_names_the_first_missed_id() {
        // queue 2, batches of at most 2
        let hub = Hub::new(10, 2, 2);
        let mut slow = hub.subscribe(Filter::default()).unwrap();
        let mut fast = hub.subscribe(Filter::default()).unwrap();
        assert_eq!(slow.start_after, 10);
        for id in (11..=17).step_by(2) {
            hub.publish(&[trig(id, "eth0"), trig(id + 1, "eth0")], None);
            // the fast one keeps reading
            assert_eq!(fast.rx.try_recv().unwrap().trigger.id, id);
            assert_eq!(fast.rx.try_recv().unwrap().trigger.id, id + 1);
        }
        assert_eq!(hub.subscribers(), 1);
        // 11..=14 fit (2 pending before the second batch is not more than
        // the queue), 15 found 4 pending: cut off.
        for id in 11..=14 {
            assert_eq!(slow.rx.try_recv().unwrap().trigger.id, id);
        }
        assert!(slow.rx.try_recv().is_err());
        assert_eq!(slow.first_missed(), Some(15));
        assert_eq!(fast.first_missed(), None);
        assert_eq!(hub.stats.gap_notices.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn filter_decides_what_is_queued_and_start_after_tracks_publishes() {
        let hub = Hub::new(0, 16, 16);
        let mut wlan = hub
            .subscribe(Filter {
                interfaces: vec!["wlan0".into()],
                ..Default::default()
            })
            .unwrap();
        hub.publish(&[trig(1, "eth0"), trig(2, "wlan0")], None);
        assert_eq!(wlan.rx.try_recv().unwrap().trigger.id, 2);
        assert!(wlan.rx.try_recv().is_err());
        assert_eq!(hub.subscribe(Filter::default()).unwrap().start_after, 2);
    }

    /// Published but not committed: a subscriber registering now gets them
    /// from the in-flight list (its store replay cannot see them), Get
    /// finds them there, and once settled they are the store's.
    #[test]
    fn triggers_in_flight_reach_late_subscribers_until_settled() {
        let hub = Hub::new(4, 16, 16);
        hub.publish(&[trig(5, "eth0"), trig(6, "wlan0")], None);
        let late = hub.subscribe(Filter::default()).unwrap();
        assert_eq!(late.start_after, 6);
        assert_eq!(
            late.inflight.iter().map(|t| t.id).collect::<Vec<_>>(),
            [5, 6]
        );
        assert_eq!(hub.in_flight(6).map(|t| t.id), Some(6));
        assert_eq!(hub.settled_id(), 4);
        hub.settle(6);
        assert_eq!(hub.settled_id(), 6);
        assert!(hub.in_flight(6).is_none());
        assert!(
            hub.subscribe(Filter::default())
                .unwrap()
                .inflight
                .is_empty()
        );
    }

    #[test]
    fn a_subscriber_that_left_frees_its_slot_even_if_its_filter_never_matched() {
        let hub = Hub::new(0, 16, 16);
        let never = Filter {
            interfaces: vec!["nosuch0".into()],
            ..Default::default()
        };
        for _ in 0..100 {
            drop(hub.subscribe(never.clone()).unwrap());
        }
        let kept = hub.subscribe(never).unwrap();
        assert_eq!(hub.subscribers(), 1);
        // Publishing keeps the live one and walks no dead slots.
        hub.publish(&[trig(1, "eth0")], None);
        assert_eq!(hub.subscribers(), 1);
        drop(kept);
        assert_eq!(hub.subscribers(), 0);
        assert_eq!(hub.lock().slots.len(), 0);
    }

    /// A reader waiting on its queue is woken by a publish that matches,
    /// and by the hub's close.
    #[tokio::test]
    async fn a_waiting_reader_is_woken_by_a_publish_and_by_close() {
        let hub = Arc::new(Hub::new(0, 16, 16));
        let mut s = hub.subscribe(Filter::default()).unwrap();
        let reader = tokio::spawn(async move {
            let first = s.rx.recv().await.map(|d| d.trigger.id);
            let end = s.rx.recv().await.map(|d| d.trigger.id);
            (first, end, s.first_missed())
        });
        tokio::task::yield_now().await;
        hub.publish(&[trig(1, "eth0")], None);
        tokio::task::yield_now().await;
        hub.close();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the reader was woken")
            .unwrap();
        assert_eq!(got, (Some(1), None, None));
    }

    #[test]
    fn a_drained_queue_gives_back_the_room_of_a_burst() {
        let hub = Hub::new(0, 4096, 16);
        let mut s = hub.subscribe(Filter::default()).unwrap();
        let burst: Vec<_> = (1..=2000).map(|id| trig(id, "eth0")).collect();
        for chunk in burst.chunks(16) {
            hub.publish(chunk, None);
        }
        assert!(s.rx.0.lock().items.capacity() >= 2000);
        for id in 1..=2000 {
            assert_eq!(s.rx.try_recv().unwrap().trigger.id, id);
        }
        assert!(s.rx.0.lock().items.capacity() <= KEEP_ROOM);
        // A trickle keeps that small room: no reallocation per trigger.
        let room = s.rx.0.lock().items.capacity();
        hub.publish(&[trig(2001, "eth0")], None);
        assert_eq!(s.rx.try_recv().unwrap().trigger.id, 2001);
        assert_eq!(s.rx.0.lock().items.capacity(), room);
    }

    #[test]
    fn close_ends_streams_without_a_gap() {
        let hub = Hub::new(0, 16, 16);
        let mut s = hub.subscribe(Filter::default()).unwrap();
        hub.close();
        assert_eq!(s.rx.try_recv().unwrap_err(), TryRecvError::Closed);
        assert_eq!(s.first_missed(), None);
        assert!(hub.subscribe(Filter::default()).is_none());
    }
}

#[cfg(test)]
mod encode_once {
    use super::*;
    use crate::model::{Source, TriggerType};

    #[test]
    fn every_subscriber_gets_the_same_encoded_bytes() {
        let hub = Hub::new(0, 16, 16);
        let mut a = hub.subscribe(Filter::default()).unwrap();
        let mut b = hub.subscribe(Filter::default()).unwrap();
        let mut t = Trigger::new(Source::Client, TriggerType::LinkUp);
        t.id = 1;
        hub.publish(&[Arc::new(t)], None);
        let (da, db) = (a.rx.try_recv().unwrap(), b.rx.try_recv().unwrap());
        assert!(Arc::ptr_eq(&da, &db), "one encoding, shared");
        use prost::Message as _;
        let decoded = trigger_proto::v1::SubscribeResponse::decode(
            da.frame.slice(crate::server::subscribe::GRPC_PREFIX..),
        )
        .unwrap();
        assert_eq!(da.frame[0], 0, "not compressed");
        assert_eq!(
            u32::from_be_bytes(da.frame[1..5].try_into().unwrap()) as usize,
            da.frame.len() - 5
        );
        assert_eq!(
            decoded.item,
            Some(trigger_proto::v1::subscribe_response::Item::Trigger(
                da.trigger.to_wire()
            ))
        );
    }
}
