//! The [`Notifier`]: routes event records to targets through per-target
//! queues, with retries, a dead-letter store and per-target counters.
//!
//! - Routing uses a [`RuleSet`]; a record goes to every distinct target whose
//!   rules match its event name and decoded key.
//! - Each target has its own pipeline: a bounded in-memory queue, or a durable
//!   [`QueueStore`] when [`TargetOptions::queue_dir`] is set (entries are the
//!   records serialized as JSON), and one worker task that sends batches of up
//!   to [`Target::max_batch`] events **in order**.
//! - Transient errors are retried with exponential backoff and jitter
//!   (honouring `retry_after`); while the target is down it is probed with
//!   [`Target::is_active`] and marked offline, then online again.
//! - Permanent errors send the events to a dead-letter store so that a
//!   poison event never blocks the events behind it. A batch of more than
//!   one event that fails permanently is retried one event at a time, so only
//!   the poison events are dead-lettered.
//! - With `queue_dir`, entries left on disk are replayed in order as soon as
//!   the notifier starts (no polling).
//!
//! The queue store is a synchronous API: durable appends run on tokio's
//! blocking pool; `peek` and `ack` run on the worker task (they are short).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use s3_event_core::{EventRecord, RuleSet, Target, TargetError, TargetId};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use crate::queue_store::{QueueStore, QueueStoreOptions, Seq};
use crate::{Error, Result};

/// Name of the sub-directory of `queue_dir` that holds the durable
/// dead-letter store.
pub const DEAD_LETTER_DIR: &str = "dead-letter";

/// What `send` does when a target's queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FullPolicy {
    /// Drop the new event and count it in [`TargetStats::dropped`] (AIStor's
    /// behaviour).
    #[default]
    Drop,
    /// Wait until the queue has room.
    Wait,
}

/// When [`Notifier::send`] returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Once the record is queued for every matching target (durably, when
    /// `queue_dir` is set).
    #[default]
    Async,
    /// Once every matching target confirmed delivery, or the event was
    /// dead-lettered or dropped (AIStor's `api.sync_events`).
    Sync,
}

/// Exponential backoff with jitter for transient errors.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry. Default 100 ms.
    pub initial: Duration,
    /// Largest delay between retries. Default 30 s.
    pub max: Duration,
    /// Factor applied to the delay after each failure. Default 2.
    pub multiplier: f64,
    /// Fraction of the delay randomized, in `0.0..=1.0`: the delay is
    /// multiplied by a factor in `1 - jitter ..= 1 + jitter`. Default 0.2.
    pub jitter: f64,
    /// Attempts after which a batch failing transiently is dead-lettered;
    /// `None` (the default) retries forever and never drops an event.
    pub max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: None,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1-based), jitter included.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.initial.as_secs_f64()
            * self
                .multiplier
                .max(1.0)
                .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + jitter * (2.0 * random_unit() - 1.0);
        Duration::from_secs_f64((base * factor).clamp(0.0, self.max.as_secs_f64()))
    }
}

/// Options of one target's pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetOptions {
    /// Most events queued for the target. Default 100000, as MinIO.
    pub queue_limit: usize,
    /// A directory for a durable queue ([`QueueStore`]); `None` (the
    /// default) keeps the queue in memory.
    pub queue_dir: Option<PathBuf>,
    /// What `send` does when the queue is full. Default [`FullPolicy::Drop`].
    pub full_policy: FullPolicy,
    /// Concurrent senders (1 to 64, default 1). Records are spread over
    /// the senders by a hash of their object key, so the events of one
    /// object stay in order while different objects are sent in parallel;
    /// each sender has its own share of `queue_limit` and, with
    /// `queue_dir`, its own queue in `queue_dir/lane-<n>` (with one sender,
    /// `queue_dir` itself).
    pub senders: usize,
    /// Backoff for transient errors.
    pub retry: RetryPolicy,
    /// Most dead letters kept in memory (the oldest are forgotten first;
    /// the durable dead-letter store keeps all). Default 1000.
    pub dead_letter_limit: usize,
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            queue_limit: 100_000,
            queue_dir: None,
            full_policy: FullPolicy::Drop,
            senders: 1,
            retry: RetryPolicy::default(),
            dead_letter_limit: 1000,
        }
    }
}

/// A snapshot of one target's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetStats {
    /// Events routed to the target (queued or dropped).
    pub total: u64,
    /// Events the target accepted.
    pub sent: u64,
    /// Events in failed send attempts (one per event per attempt).
    pub failed: u64,
    /// Events queued now, not yet delivered.
    pub queued: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Events being sent now.
    pub in_flight: u64,
    /// Events moved to the dead-letter store.
    pub dead_lettered: u64,
    /// Whether the last send or probe succeeded.
    pub online: bool,
}

/// An event the target rejected permanently (or that exhausted
/// [`RetryPolicy::max_attempts`]).
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// The event.
    pub record: EventRecord,
    /// The error that sent it here.
    pub error: String,
}

/// What [`Notifier::send`] did with one record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendOutcome {
    /// Targets whose rules matched.
    pub matched: usize,
    /// Targets the record was queued for.
    pub queued: usize,
    /// Targets whose queue was full (the record was dropped for them).
    pub dropped: usize,
    /// Sync mode: targets that confirmed delivery.
    pub delivered: usize,
    /// Sync mode: targets that dead-lettered the record.
    pub dead_lettered: usize,
}

/// How one delivery ended, reported to a sync-mode sender.
#[derive(Debug)]
enum Delivery {
    Sent,
    DeadLettered,
}

type Waiter = oneshot::Sender<Delivery>;

#[derive(Default)]
struct Counters {
    total: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    in_flight: AtomicU64,
    dead_lettered: AtomicU64,
    online: AtomicBool,
}

/// One sender's queue: the records whose key hashes to it, in order.
struct Lane {
    /// In-memory queue (when `store` is `None`).
    queue: Mutex<VecDeque<(EventRecord, Option<Waiter>)>>,
    /// Most records in `queue` (or `store`).
    limit: usize,
    /// Durable queue and sync-mode waiters by sequence number.
    store: Option<Arc<QueueStore>>,
    waiters: Mutex<HashMap<Seq, Waiter>>,
    /// Highest sequence number the worker has finished with.
    done_upto: AtomicU64,
    /// Work was queued, or shutdown began.
    work: Notify,
    /// Room was made in the queue.
    space: Notify,
}

struct Pipeline {
    target: Arc<dyn Target>,
    options: TargetOptions,
    counters: Counters,
    lanes: Vec<Lane>,
    dead: Mutex<VecDeque<DeadLetter>>,
    dead_store: Option<QueueStore>,
    closing: AtomicBool,
}

/// Publishes every pipeline's counters through the installed recorder.
fn export(pipelines: &[Arc<Pipeline>], invalid: u64) {
    for p in pipelines {
        let s = p.stats();
        let t = p.target.id().to_string();
        for (name, v) in [
            ("s3_event_target_total", s.total),
            ("s3_event_target_sent", s.sent),
            ("s3_event_target_failed", s.failed),
            ("s3_event_target_dropped", s.dropped),
            ("s3_event_target_dead_lettered", s.dead_lettered),
        ] {
            metrics::counter!(name, "target" => t.clone()).absolute(v);
        }
        for (name, v) in [
            ("s3_event_target_queued", s.queued as f64),
            ("s3_event_target_in_flight", s.in_flight as f64),
            ("s3_event_target_online", if s.online { 1.0 } else { 0.0 }),
        ] {
            metrics::gauge!(name, "target" => t.clone()).set(v);
        }
    }
    metrics::counter!("s3_event_notifier_invalid_records").absolute(invalid);
}

/// The lane of an object key (FNV-1a; stable across runs, so a durable
/// lane's records stay in the lane that keeps their order).
fn lane_of(key: &str, lanes: usize) -> usize {
    if lanes <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % lanes as u64) as usize
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds a [`Notifier`]; see [`Notifier::builder`].
#[derive(Debug, Default)]
pub struct NotifierBuilder {
    rules: Option<RuleSet>,
    targets: Vec<(Arc<dyn Target>, TargetOptions)>,
    mode: DeliveryMode,
    metrics_every: Option<Duration>,
}

impl NotifierBuilder {
    /// The routing rules. Without rules nothing is routed.
    pub fn rules(mut self, rules: RuleSet) -> Self {
        self.rules = Some(rules);
        self
    }

    /// Adds a target with its pipeline options.
    pub fn target(mut self, target: Arc<dyn Target>, options: TargetOptions) -> Self {
        self.targets.push((target, options));
        self
    }

    /// Publishes the counters through the [`metrics`] crate's global
    /// recorder every `interval` from a background task (see
    /// [`Notifier::export_metrics`]), so a Prometheus (or other) exporter
    /// always shows them without a call from the scrape handler. Default:
    /// off.
    pub fn export_metrics_every(mut self, interval: Duration) -> Self {
        self.metrics_every = Some(interval.max(Duration::from_millis(10)));
        self
    }

    /// When [`Notifier::send`] returns. Default [`DeliveryMode::Async`].
    pub fn mode(mut self, mode: DeliveryMode) -> Self {
        self.mode = mode;
        self
    }

    /// Opens the queues and starts one worker task per target (events left
    /// in a `queue_dir` are replayed at once). Must be called inside a tokio
    /// runtime.
    ///
    /// Fails when a rule names a target that was not added
    /// ([`Error::UnknownTarget`]), when two targets share an id, when an
    /// option is out of range, or when a queue directory cannot be opened.
    pub fn build(self) -> Result<Notifier> {
        let rules = match self.rules {
            Some(r) => r,
            None => RuleSet::new(Vec::new()).expect("an empty rule set is valid"),
        };
        let mut pipelines: Vec<Arc<Pipeline>> = Vec::with_capacity(self.targets.len());
        for (target, options) in self.targets {
            if pipelines.iter().any(|p| p.target.id() == target.id()) {
                return Err(Error::DuplicateTarget {
                    id: target.id().to_string(),
                });
            }
            if !(1..=64).contains(&options.senders) {
                return Err(Error::InvalidOption {
                    option: "senders",
                    rule: "`senders` must be between 1 and 64",
                });
            }
            if options.queue_limit == 0 {
                return Err(Error::InvalidOption {
                    option: "queue_limit",
                    rule: "`queue_limit` must be > 0",
                });
            }
            let n = options.senders;
            let limit = options.queue_limit.div_ceil(n);
            let mut lanes = Vec::with_capacity(n);
            for i in 0..n {
                let store = match &options.queue_dir {
                    Some(dir) => {
                        let dir = if n == 1 {
                            dir.clone()
                        } else {
                            dir.join(format!("lane-{i}"))
                        };
                        Some(Arc::new(QueueStore::open(
                            dir,
                            QueueStoreOptions {
                                queue_limit: limit,
                                ..QueueStoreOptions::default()
                            },
                        )?))
                    }
                    None => None,
                };
                lanes.push(Lane {
                    queue: Mutex::new(VecDeque::new()),
                    limit,
                    store,
                    waiters: Mutex::new(HashMap::new()),
                    done_upto: AtomicU64::new(0),
                    work: Notify::new(),
                    space: Notify::new(),
                });
            }
            let dead_store = match &options.queue_dir {
                Some(dir) => Some(QueueStore::open(
                    dir.join(DEAD_LETTER_DIR),
                    QueueStoreOptions {
                        queue_limit: usize::MAX,
                        ..QueueStoreOptions::default()
                    },
                )?),
                None => None,
            };
            let counters = Counters::default();
            counters.online.store(true, Ordering::Relaxed);
            pipelines.push(Arc::new(Pipeline {
                target,
                options,
                counters,
                lanes,
                dead: Mutex::new(VecDeque::new()),
                dead_store,
                closing: AtomicBool::new(false),
            }));
        }
        let mut route = Vec::with_capacity(rules.targets().len());
        for arn in rules.targets() {
            let idx = arn
                .as_target_id()
                .and_then(|id| pipelines.iter().position(|p| p.target.id() == id));
            match idx {
                Some(i) => route.push(i),
                None => {
                    return Err(Error::UnknownTarget {
                        arn: arn.to_string(),
                    })
                }
            }
        }
        let invalid = Arc::new(AtomicU64::new(0));
        let exporter = self.metrics_every.map(|every| {
            let (pipelines, invalid) = (pipelines.clone(), Arc::clone(&invalid));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    export(&pipelines, invalid.load(Ordering::Relaxed));
                }
            })
        });
        let workers = pipelines
            .iter()
            .flat_map(|p| (0..p.lanes.len()).map(move |i| tokio::spawn(Arc::clone(p).run(i))))
            .collect();
        Ok(Notifier {
            rules,
            route,
            pipelines,
            mode: self.mode,
            accepting: AtomicBool::new(true),
            invalid,
            workers: tokio::sync::Mutex::new(workers),
            exporter: Mutex::new(exporter),
        })
    }
}

/// Routes event records to targets. See the [module docs](self).
#[derive(Debug)]
pub struct Notifier {
    rules: RuleSet,
    /// Index into `pipelines` for each of `rules.targets()`.
    route: Vec<usize>,
    pipelines: Vec<Arc<Pipeline>>,
    mode: DeliveryMode,
    accepting: AtomicBool,
    invalid: Arc<AtomicU64>,
    /// Held for the whole of [`Notifier::shutdown`], so a second caller
    /// waits for the first to finish.
    workers: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
    /// The periodic metrics export ([`NotifierBuilder::export_metrics_every`]).
    exporter: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("target", &self.target.id())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// A builder.
    pub fn builder() -> NotifierBuilder {
        NotifierBuilder::default()
    }

    /// Routes `record` to every matching target and queues it there.
    ///
    /// In [`DeliveryMode::Async`] this returns once the record is queued
    /// (appended durably when `queue_dir` is set); in
    /// [`DeliveryMode::Sync`], once every matching target delivered or
    /// dead-lettered it. A record whose event name does not parse, or whose
    /// key does not decode, is an [`Error::InvalidRecord`] naming it (and
    /// counted in [`Notifier::invalid_records`]). After
    /// [`Notifier::shutdown`] began, [`Error::ShutDown`].
    pub async fn send(&self, record: EventRecord) -> Result<SendOutcome> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        let invalid = |source| {
            self.invalid.fetch_add(1, Ordering::Relaxed);
            Error::InvalidRecord {
                event_name: record.event_name_str().unwrap_or_default().to_owned(),
                source,
            }
        };
        let event = record.parsed_event_name().map_err(invalid)?;
        let key = record.decoded_key().map_err(invalid)?;
        let mut hits = Vec::new();
        self.rules.match_into(event, &key, &mut hits);
        let mut outcome = SendOutcome {
            matched: hits.len(),
            ..SendOutcome::default()
        };
        let sync = self.mode == DeliveryMode::Sync;
        let mut receivers = Vec::new();
        let last = hits.len().saturating_sub(1);
        let mut record = Some(record);
        for (n, &hit) in hits.iter().enumerate() {
            let p = &self.pipelines[self.route[hit]];
            // Clone for all but the last target.
            let rec = if n == last {
                record.take().expect("record taken once")
            } else {
                record.clone().expect("record present")
            };
            let (tx, rx) = if sync {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
            if p.enqueue(rec, &key, tx).await? {
                outcome.queued += 1;
                if let Some(rx) = rx {
                    receivers.push(rx);
                }
            } else {
                outcome.dropped += 1;
            }
        }
        for rx in receivers {
            match rx.await {
                Ok(Delivery::Sent) => outcome.delivered += 1,
                Ok(Delivery::DeadLettered) => outcome.dead_lettered += 1,
                Err(_) => {} // The worker stopped (shutdown deadline).
            }
        }
        Ok(outcome)
    }

    /// Records rejected by [`Notifier::send`] because their event name or
    /// key was invalid.
    pub fn invalid_records(&self) -> u64 {
        self.invalid.load(Ordering::Relaxed)
    }

    /// A snapshot of every target's counters, in the order targets were
    /// added.
    pub fn stats(&self) -> Vec<(TargetId, TargetStats)> {
        self.pipelines
            .iter()
            .map(|p| (p.target.id().clone(), p.stats()))
            .collect()
    }

    /// Publishes [`Notifier::stats`] through the [`metrics`] crate's
    /// installed recorder, labelled `target` = the target id. Counters
    /// (set to their absolute value): `s3_event_target_total`, `_sent`,
    /// `_failed`, `_dropped`, `_dead_lettered`; gauges: `_queued`,
    /// `_in_flight`, `_online` (1 or 0). Call it periodically, e.g. from the
    /// scrape handler.
    pub fn export_metrics(&self) {
        export(&self.pipelines, self.invalid_records());
    }

    /// The dead letters kept in memory for `target` (oldest first).
    pub fn dead_letters(&self, target: &TargetId) -> Vec<DeadLetter> {
        self.pipelines
            .iter()
            .find(|p| p.target.id() == target)
            .map(|p| lock(&p.dead).iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Stops accepting records, lets the workers drain their queues for at
    /// most `deadline`, then stops them and closes the targets. In-memory
    /// events still queued after the deadline are lost (they remain in
    /// [`TargetStats::queued`] of the last snapshot); with `queue_dir` they
    /// stay on disk and are replayed by the next notifier built on that
    /// directory.
    ///
    /// Takes `&self`, so a notifier shared behind an `Arc` (an HTTP
    /// handler, a poller) can be shut down while clones are alive: from then
    /// on their [`Notifier::send`] fails with [`Error::ShutDown`]. A second
    /// call waits for the first to finish and then returns.
    pub async fn shutdown(&self, deadline: Duration) {
        let mut workers = self.workers.lock().await;
        if !self.accepting.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Some(e) = lock(&self.exporter).take() {
            e.abort();
        }
        for p in &self.pipelines {
            p.closing.store(true, Ordering::Release);
            for lane in &p.lanes {
                lane.work.notify_one();
            }
        }
        let mut workers = std::mem::take(&mut *workers);
        let drained = tokio::time::timeout(deadline, async {
            for w in &mut workers {
                let _ = w.await;
            }
        })
        .await;
        if drained.is_err() {
            for w in &workers {
                w.abort();
            }
            for w in workers {
                let _ = w.await;
            }
        }
        for p in &self.pipelines {
            if let Err(e) = p.target.close().await {
                tracing::warn!(target_id = %p.target.id(), error = %e, "closing target failed");
            }
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for w in self.workers.get_mut().iter() {
            w.abort();
        }
        if let Some(e) = self
            .exporter
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            e.abort();
        }
    }
}

impl Pipeline {
    fn stats(&self) -> TargetStats {
        let c = &self.counters;
        let queued = self
            .lanes
            .iter()
            .map(|l| match &l.store {
                Some(s) => s.len(),
                None => lock(&l.queue).len(),
            } as u64)
            .sum();
        TargetStats {
            total: c.total.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            queued,
            dropped: c.dropped.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            online: c.online.load(Ordering::Relaxed),
        }
    }

    /// Queues one record; `Ok(false)` when it was dropped (queue full).
    async fn enqueue(
        self: &Arc<Self>,
        record: EventRecord,
        key: &str,
        waiter: Option<Waiter>,
    ) -> Result<bool> {
        self.counters.total.fetch_add(1, Ordering::Relaxed);
        let lane = &self.lanes[lane_of(key, self.lanes.len())];
        match &lane.store {
            None => loop {
                {
                    let mut q = lock(&lane.queue);
                    if q.len() < lane.limit {
                        q.push_back((record, waiter));
                        drop(q);
                        lane.work.notify_one();
                        return Ok(true);
                    }
                }
                if !self.wait_for_space(lane).await {
                    return Ok(false);
                }
            },
            Some(store) => {
                // Serializing an EventRecord cannot fail: every key is a string.
                let bytes = Arc::new(serde_json::to_vec(&record).expect("record serializes"));
                loop {
                    let store2 = Arc::clone(store);
                    let bytes2 = Arc::clone(&bytes);
                    let res = tokio::task::spawn_blocking(move || store2.append_durable(&bytes2))
                        .await
                        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                    match res {
                        Ok(seq) => {
                            if let Some(w) = waiter {
                                lane.register_waiter(seq, w);
                            }
                            lane.work.notify_one();
                            return Ok(true);
                        }
                        Err(Error::QueueFull { .. }) => {
                            if !self.wait_for_space(lane).await {
                                return Ok(false);
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// With [`FullPolicy::Drop`], counts a drop and returns `false`; with
    /// [`FullPolicy::Wait`], waits a little for room and returns `true`.
    async fn wait_for_space(&self, lane: &Lane) -> bool {
        match self.options.full_policy {
            FullPolicy::Drop => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            FullPolicy::Wait => {
                // Bounded wait: a notification can be missed between the
                // check and here, so re-check at least every 10 ms.
                let _ =
                    tokio::time::timeout(Duration::from_millis(10), lane.space.notified()).await;
                true
            }
        }
    }
}

impl Lane {
    fn register_waiter(&self, seq: Seq, waiter: Waiter) {
        let mut w = lock(&self.waiters);
        // The worker may already have handled `seq` (it updates `done_upto`
        // under this lock); whether it was sent or dead-lettered is not
        // known any more, so report it as sent.
        if self.done_upto.load(Ordering::Acquire) >= seq {
            drop(w);
            let _ = waiter.send(Delivery::Sent);
        } else {
            w.insert(seq, waiter);
        }
    }
}

impl Pipeline {
    /// The worker of lane `i`: takes its batches in order and delivers them
    /// until shutdown and an empty queue.
    async fn run(self: Arc<Self>, i: usize) {
        let max = self.target.max_batch().max(1);
        let lane = &self.lanes[i];
        loop {
            match &lane.store {
                None => {
                    let batch: Vec<_> = {
                        let mut q = lock(&lane.queue);
                        let n = q.len().min(max);
                        q.drain(..n).collect()
                    };
                    if batch.is_empty() {
                        if self.closing.load(Ordering::Acquire) {
                            return;
                        }
                        lane.work.notified().await;
                        continue;
                    }
                    lane.space.notify_waiters();
                    let (records, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                    let results = self.deliver(&records).await;
                    for (w, r) in waiters.into_iter().zip(results) {
                        if let Some(w) = w {
                            let _ = w.send(r);
                        }
                    }
                }
                Some(store) => {
                    let entries = match store.peek(max) {
                        Ok(e) => e,
                        Err(Error::Corrupt { .. }) => continue, // Dropped and logged by peek.
                        Err(e) => {
                            tracing::error!(target_id = %self.target.id(), error = %e, "queue store read failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    if entries.is_empty() {
                        if self.closing.load(Ordering::Acquire) {
                            return;
                        }
                        lane.work.notified().await;
                        continue;
                    }
                    let last = entries.last().map(|e| e.0).unwrap_or_default();
                    let mut seqs = Vec::with_capacity(entries.len());
                    let mut records = Vec::with_capacity(entries.len());
                    for (seq, bytes) in entries {
                        match EventRecord::from_slice(&bytes) {
                            Ok(r) => {
                                seqs.push(seq);
                                records.push(r);
                            }
                            Err(e) => {
                                tracing::error!(target_id = %self.target.id(), seq, error = %e, "undecodable queue entry dead-lettered");
                                self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                                if let Some(d) = &self.dead_store {
                                    let _ = d.append_durable(&bytes);
                                }
                            }
                        }
                    }
                    let results = self.deliver(&records).await;
                    if let Err(e) = store.ack(last) {
                        tracing::error!(target_id = %self.target.id(), error = %e, "queue store ack failed");
                    }
                    lane.space.notify_waiters();
                    let mut waiters = lock(&lane.waiters);
                    lane.done_upto.store(last, Ordering::Release);
                    for (seq, r) in seqs.into_iter().zip(results) {
                        if let Some(w) = waiters.remove(&seq) {
                            let _ = w.send(r);
                        }
                    }
                }
            }
        }
    }

    /// Delivers `records` in order, retrying transient errors and
    /// dead-lettering permanent ones; returns one result per record.
    async fn deliver(&self, records: &[EventRecord]) -> Vec<Delivery> {
        if records.is_empty() {
            return Vec::new();
        }
        let n = records.len() as u64;
        let c = &self.counters;
        let mut attempt = 0u32;
        loop {
            c.in_flight.fetch_add(n, Ordering::Relaxed);
            let res = self.target.send_batch(records).await;
            c.in_flight.fetch_sub(n, Ordering::Relaxed);
            let err = match res {
                Ok(()) => {
                    c.sent.fetch_add(n, Ordering::Relaxed);
                    c.online.store(true, Ordering::Relaxed);
                    return records.iter().map(|_| Delivery::Sent).collect();
                }
                Err(e) => e,
            };
            c.failed.fetch_add(n, Ordering::Relaxed);
            match err {
                TargetError::Permanent { .. } if records.len() > 1 => {
                    // Find the poison events: retry one by one.
                    let mut out = Vec::with_capacity(records.len());
                    for r in records {
                        out.extend(Box::pin(self.deliver(std::slice::from_ref(r))).await);
                    }
                    return out;
                }
                TargetError::Permanent { .. } => {
                    self.dead_letter(records, &err);
                    return vec![Delivery::DeadLettered];
                }
                _ => {
                    attempt += 1;
                    tracing::warn!(target_id = %self.target.id(), attempt, error = %err, "send failed, retrying");
                    if self
                        .options
                        .retry
                        .max_attempts
                        .is_some_and(|m| attempt >= m)
                    {
                        self.dead_letter(records, &err);
                        return records.iter().map(|_| Delivery::DeadLettered).collect();
                    }
                    c.online.store(false, Ordering::Relaxed);
                    let mut delay = self.options.retry.delay(attempt);
                    if let Some(after) = err.retry_after() {
                        delay = delay.max(after);
                    }
                    tokio::time::sleep(delay).await;
                    // Probe until the target says it is back.
                    let mut probe = attempt;
                    loop {
                        match self.target.is_active().await {
                            Ok(true) => break,
                            _ => {
                                probe = probe.saturating_add(1);
                                tokio::time::sleep(self.options.retry.delay(probe)).await;
                            }
                        }
                    }
                    c.online.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    fn dead_letter(&self, records: &[EventRecord], err: &TargetError) {
        self.counters
            .dead_lettered
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        tracing::error!(target_id = %self.target.id(), events = records.len(), error = %err, "events dead-lettered");
        let mut dead = lock(&self.dead);
        for r in records {
            if let Some(store) = &self.dead_store {
                // Serializing an EventRecord cannot fail.
                let bytes = serde_json::to_vec(r).expect("record serializes");
                if let Err(e) = store.append_durable(&bytes) {
                    tracing::error!(target_id = %self.target.id(), error = %e, "dead-letter store append failed");
                }
            }
            if self.options.dead_letter_limit > 0 {
                if dead.len() >= self.options.dead_letter_limit {
                    dead.pop_front();
                }
                dead.push_back(DeadLetter {
                    record: r.clone(),
                    error: err.to_string(),
                });
            }
        }
    }
}

/// A number in `0.0..1.0` for jitter (not cryptographic).
fn random_unit() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1,
        );
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use s3_event_core::{EventName, NotificationRule};
    use std::sync::atomic::AtomicUsize;

    fn id(n: &str) -> TargetId {
        format!("arn:minio:sqs::{n}:webhook").parse().unwrap()
    }

    fn record(key: &str) -> EventRecord {
        EventRecord::from_slice(
            format!(r#"{{"eventName":"s3:ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"{key}"}}}}}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    fn keys(v: &[EventRecord]) -> Vec<String> {
        v.iter().map(|r| r.key().unwrap().to_owned()).collect()
    }

    fn fast_retry() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(5),
            ..RetryPolicy::default()
        }
    }

    /// Collects events; fails transiently `fail` times first; rejects keys
    /// containing "poison" permanently; down while `down` is set.
    #[derive(Debug)]
    struct TestTarget {
        id: TargetId,
        seen: Mutex<Vec<EventRecord>>,
        fail: AtomicUsize,
        down: AtomicBool,
        batch: usize,
        delay: Duration,
    }

    impl TestTarget {
        fn new(n: &str) -> Arc<Self> {
            Arc::new(TestTarget {
                id: id(n),
                seen: Mutex::new(Vec::new()),
                fail: AtomicUsize::new(0),
                down: AtomicBool::new(false),
                batch: 1,
                delay: Duration::ZERO,
            })
        }
        fn seen(&self) -> Vec<String> {
            keys(&lock(&self.seen))
        }
    }

    #[async_trait]
    impl Target for TestTarget {
        fn id(&self) -> &TargetId {
            &self.id
        }
        async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(TargetError::transient(&self.id, "down"));
            }
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                .is_ok()
            {
                return Err(TargetError::transient(&self.id, "flaky"));
            }
            if events.iter().any(|e| e.key().unwrap().contains("poison")) {
                return Err(TargetError::permanent(&self.id, "poison"));
            }
            lock(&self.seen).extend_from_slice(events);
            Ok(())
        }
        async fn is_active(&self) -> Result<bool, TargetError> {
            Ok(!self.down.load(Ordering::SeqCst))
        }
        fn max_batch(&self) -> usize {
            self.batch
        }
    }

    fn rules(pairs: &[(&str, &str)]) -> RuleSet {
        RuleSet::new(pairs.iter().enumerate().map(|(i, (n, prefix))| {
            NotificationRule::new(format!("r{i}"), EventName::ObjectCreatedPut.mask(), id(n))
                .with_prefix(*prefix)
        }))
        .unwrap()
    }

    fn opts() -> TargetOptions {
        TargetOptions {
            retry: fast_retry(),
            ..TargetOptions::default()
        }
    }

    async fn wait_for(mut f: impl FnMut() -> bool) {
        for _ in 0..2000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition not reached");
    }

    #[tokio::test]
    async fn routes_only_matching_events_in_order() {
        let a = TestTarget::new("a");
        let b = TestTarget::new("b");
        let n = Notifier::builder()
            .rules(rules(&[("a", "x/"), ("b", "y/"), ("b", "x/1")]))
            .target(a.clone(), opts())
            .target(b.clone(), opts())
            .build()
            .unwrap();
        for k in ["x/1", "y/1", "z/1", "x/2", "y/2", "x/10"] {
            n.send(record(k)).await.unwrap();
        }
        n.shutdown(Duration::from_secs(5)).await;
        assert_eq!(a.seen(), ["x/1", "x/2", "x/10"]);
        assert_eq!(b.seen(), ["x/1", "y/1", "y/2", "x/10"]);
    }

    #[tokio::test]
    async fn invalid_event_name_is_an_error_and_counted() {
        let a = TestTarget::new("a");
        let n = Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(a, opts())
            .build()
            .unwrap();
        let bad = EventRecord::from_slice(br#"{"eventName":"s3:Nope"}"#).unwrap();
        let err = n.send(bad).await.unwrap_err();
        assert!(err.to_string().contains("s3:Nope"), "{err}");
        assert_eq!(n.invalid_records(), 1);
    }

    #[tokio::test]
    async fn transient_failures_are_retried_in_order() {
        let t = TestTarget::new("a");
        t.fail.store(3, Ordering::SeqCst);
        let n = Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(t.clone(), opts())
            .build()
            .unwrap();
        for i in 0..20 {
            n.send(record(&format!("k{i:02}"))).await.unwrap();
        }
        wait_for(|| t.seen().len() == 20).await;
        let want: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
        assert_eq!(t.seen(), want);
        let stats = &n.stats()[0].1;
        assert_eq!(stats.sent, 20);
        assert_eq!(stats.failed, 3);
        assert!(stats.online);
        n.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn poison_is_dead_lettered_and_the_rest_flow() {
        let t = Arc::new(TestTarget {
            batch: 10,
            ..Arc::try_unwrap(TestTarget::new("a")).unwrap()
        });
        let n = Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(t.clone(), opts())
            .build()
            .unwrap();
        for k in ["a", "b", "poison", "c", "d"] {
            n.send(record(k)).await.unwrap();
        }
        n.shutdown(Duration::from_secs(5)).await;
        assert_eq!(t.seen(), ["a", "b", "c", "d"]);
    }

    #[tokio::test]
    async fn poison_dead_letters_are_listed() {
        let t = TestTarget::new("a");
        let n = Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(t.clone(), opts())
            .mode(DeliveryMode::Sync)
            .build()
            .unwrap();
        let out = n.send(record("poison1")).await.unwrap();
        assert_eq!(out.dead_lettered, 1);
        let out = n.send(record("ok")).await.unwrap();
        assert_eq!(out.delivered, 1);
        let dead = n.dead_letters(&id("a"));
        assert_eq!(
            keys(&dead.iter().map(|d| d.record.clone()).collect::<Vec<_>>()),
            ["poison1"]
        );
        assert_eq!(n.stats()[0].1.dead_lettered, 1);
    }

    #[tokio::test]
    async fn queue_full_with_drop_counts_drops() {
        let t = TestTarget::new("a");
        t.down.store(true, Ordering::SeqCst);
        let n = Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(
                t.clone(),
                TargetOptions {
                    queue_limit: 3,
                    ..opts()
                },
            )
            .build()
            .unwrap();
        let mut dropped = 0;
        for i in 0..10 {
            dropped += n.send(record(&format!("k{i}"))).await.unwrap().dropped;
        }
        // The worker holds at most one event in flight, the queue 3.
        let s = n.stats()[0].1.clone();
        assert!(dropped >= 6, "dropped {dropped}");
        assert_eq!(s.dropped, dropped as u64);
        assert_eq!(s.total, 10);
        wait_for(|| !n.stats()[0].1.online).await;
        t.down.store(false, Ordering::SeqCst);
        wait_for(|| n.stats()[0].1.online).await;
        n.shutdown(Duration::from_secs(5)).await;
        assert_eq!(t.seen().len(), 10 - dropped);
    }

    #[tokio::test]
    async fn sync_mode_returns_after_delivery() {
        let t = Arc::new(TestTarget {
            delay: Duration::from_millis(30),
            ..Arc::try_unwrap(TestTarget::new("a")).unwrap()
        });
        let n = Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(t.clone(), opts())
            .mode(DeliveryMode::Sync)
            .build()
            .unwrap();
        let out = n.send(record("k")).await.unwrap();
        assert_eq!(out.delivered, 1);
        assert_eq!(t.seen(), ["k"]);
    }

    /// A target that records (key, sequencer) and the most sends running at once.
    #[derive(Debug)]
    struct ParallelTarget {
        id: TargetId,
        seen: Mutex<Vec<(String, u64)>>,
        running: AtomicUsize,
        most: AtomicUsize,
    }

    #[async_trait]
    impl Target for ParallelTarget {
        fn id(&self) -> &TargetId {
            &self.id
        }
        async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            let mut seen = lock(&self.seen);
            for e in events {
                let v = serde_json::to_value(e).unwrap();
                let seq = v["s3"]["object"]["sequencer"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                seen.push((e.key().unwrap().to_owned(), seq));
            }
            drop(seen);
            self.running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
        async fn is_active(&self) -> Result<bool, TargetError> {
            Ok(true)
        }
        fn max_batch(&self) -> usize {
            2
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_senders_run_in_parallel_and_keep_per_key_order() {
        for queue_dir in [None, Some(tempfile::tempdir().unwrap())] {
            let t = Arc::new(ParallelTarget {
                id: id("1"),
                seen: Mutex::new(Vec::new()),
                running: AtomicUsize::new(0),
                most: AtomicUsize::new(0),
            });
            let n = Notifier::builder()
                .rules(rules(&[("1", "")]))
                .target(
                    t.clone(),
                    TargetOptions {
                        senders: 4,
                        queue_dir: queue_dir.as_ref().map(|d| d.path().to_path_buf()),
                        ..opts()
                    },
                )
                .build()
                .unwrap();
            for seq in 0..10u64 {
                for k in 0..8 {
                    let r = EventRecord::from_slice(
                        format!(r#"{{"eventName":"s3:ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"k{k}","sequencer":"{seq}"}}}}}}"#)
                            .as_bytes(),
                    )
                    .unwrap();
                    assert_eq!(n.send(r).await.unwrap().queued, 1);
                }
            }
            wait_for(|| lock(&t.seen).len() == 80).await;
            let seen = lock(&t.seen).clone();
            for k in 0..8 {
                let seqs: Vec<u64> = seen
                    .iter()
                    .filter(|(key, _)| *key == format!("k{k}"))
                    .map(|(_, s)| *s)
                    .collect();
                assert_eq!(seqs, (0..10).collect::<Vec<_>>(), "order of k{k}");
            }
            let most = t.most.load(Ordering::SeqCst);
            assert!(
                (2..=4).contains(&most),
                "{most} sends at once with 4 senders"
            );
            n.shutdown(Duration::from_secs(5)).await;
        }
    }

    /// A metric's name, labels and value.
    type Metric = (String, Vec<(String, String)>, f64);

    fn metric(snapshot: &[Metric], name: &str) -> Option<f64> {
        snapshot
            .iter()
            .find(|(n, labels, _)| {
                n == name
                    && labels
                        .iter()
                        .any(|(k, v)| k == "target" && v.ends_with(":1:webhook"))
            })
            .map(|(_, _, v)| *v)
    }

    fn snapshot(r: &metrics_util::debugging::Snapshotter) -> Vec<Metric> {
        use metrics_util::debugging::DebugValue;
        r.snapshot()
            .into_vec()
            .into_iter()
            .map(|(k, _, _, v)| {
                let key = k.key();
                let labels = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                let v = match v {
                    DebugValue::Counter(c) => c as f64,
                    DebugValue::Gauge(g) => g.into_inner(),
                    DebugValue::Histogram(_) => f64::NAN,
                };
                (key.name().to_owned(), labels, v)
            })
            .collect()
    }

    #[tokio::test]
    async fn export_metrics_publishes_the_counters() {
        let t = TestTarget::new("1");
        let n = Notifier::builder()
            .rules(rules(&[("1", "")]))
            .target(t.clone(), opts())
            .mode(DeliveryMode::Sync)
            .build()
            .unwrap();
        for k in ["a", "b", "c"] {
            n.send(record(k)).await.unwrap();
        }
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || n.export_metrics());
        let s = snapshot(&snap);
        assert_eq!(metric(&s, "s3_event_target_total"), Some(3.0), "{s:?}");
        assert_eq!(metric(&s, "s3_event_target_sent"), Some(3.0));
        assert_eq!(metric(&s, "s3_event_target_queued"), Some(0.0));
        assert_eq!(metric(&s, "s3_event_target_online"), Some(1.0));
        n.shutdown(Duration::from_secs(1)).await;
    }

    /// The only test in this binary that installs a global recorder.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_are_exported_periodically() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        recorder
            .install()
            .expect("no other global recorder in this test binary");
        let t = TestTarget::new("1");
        let n = Notifier::builder()
            .rules(rules(&[("1", "")]))
            .target(t.clone(), opts())
            .mode(DeliveryMode::Sync)
            .export_metrics_every(Duration::from_millis(20))
            .build()
            .unwrap();
        for k in ["a", "b"] {
            n.send(record(k)).await.unwrap();
        }
        // No call to export_metrics: the background task publishes.
        let mut sent = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            sent = metric(&snapshot(&snap), "s3_event_target_sent");
            if sent == Some(2.0) {
                break;
            }
        }
        assert_eq!(sent, Some(2.0));
        n.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn senders_out_of_range_fail_at_build() {
        for senders in [0, 65] {
            let e = Notifier::builder()
                .target(TestTarget::new("1"), TargetOptions { senders, ..opts() })
                .build()
                .unwrap_err();
            assert!(e.to_string().contains("senders"), "{e}");
        }
    }

    #[tokio::test]
    async fn queue_dir_replays_on_start() {
        let dir = tempfile::tempdir().unwrap();
        let o = TargetOptions {
            queue_dir: Some(dir.path().to_path_buf()),
            ..opts()
        };
        let down = TestTarget::new("a");
        down.down.store(true, Ordering::SeqCst);
        let n = Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(down.clone(), o.clone())
            .build()
            .unwrap();
        for i in 0..10 {
            n.send(record(&format!("k{i}"))).await.unwrap();
        }
        assert_eq!(n.stats()[0].1.queued, 10);
        n.shutdown(Duration::from_millis(50)).await;
        // The queue directory is locked until the notifier is dropped.
        drop(n);
        assert!(down.seen().is_empty());

        let up = TestTarget::new("a");
        let n = Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(up.clone(), o.clone())
            .build()
            .unwrap();
        wait_for(|| up.seen().len() == 10).await;
        let want: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        assert_eq!(up.seen(), want);
        wait_for(|| n.stats()[0].1.queued == 0).await;
        n.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn queue_dir_sync_mode() {
        let dir = tempfile::tempdir().unwrap();
        let t = TestTarget::new("a");
        let n = Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(
                t.clone(),
                TargetOptions {
                    queue_dir: Some(dir.path().to_path_buf()),
                    ..opts()
                },
            )
            .mode(DeliveryMode::Sync)
            .build()
            .unwrap();
        for i in 0..5 {
            let out = n.send(record(&format!("k{i}"))).await.unwrap();
            assert_eq!(out.delivered, 1);
        }
        assert_eq!(t.seen().len(), 5);
    }

    #[tokio::test]
    async fn unknown_target_is_a_build_error() {
        let err = Notifier::builder()
            .rules(rules(&[("a", ""), ("zzz", "")]))
            .target(TestTarget::new("a"), opts())
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::UnknownTarget { .. }));
        assert!(
            err.to_string().contains("arn:minio:sqs::zzz:webhook"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn send_after_shutdown_started_is_refused() {
        let n = Notifier::builder().build().unwrap();
        n.accepting.store(false, Ordering::Release);
        assert!(matches!(n.send(record("k")).await, Err(Error::ShutDown)));
    }

    #[tokio::test]
    async fn shutdown_through_a_shared_reference_drains_and_refuses() {
        let t = TestTarget::new("a");
        let n = Arc::new(
            Notifier::builder()
                .rules(rules(&[("a", "")]))
                .target(t.clone(), opts())
                .build()
                .unwrap(),
        );
        let other = Arc::clone(&n);
        for i in 0..3 {
            n.send(record(&format!("k{i}"))).await.unwrap();
        }
        // Two callers at once: both return once the queues are drained.
        tokio::join!(
            n.shutdown(Duration::from_secs(5)),
            other.shutdown(Duration::from_secs(5))
        );
        assert_eq!(t.seen(), ["k0", "k1", "k2"]);
        assert!(matches!(
            other.send(record("k")).await,
            Err(Error::ShutDown)
        ));
    }

    #[tokio::test]
    async fn queue_full_with_wait_loses_nothing() {
        let t = Arc::new(TestTarget {
            delay: Duration::from_millis(2),
            ..Arc::try_unwrap(TestTarget::new("a")).unwrap()
        });
        let n = Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(
                t.clone(),
                TargetOptions {
                    queue_limit: 1,
                    full_policy: FullPolicy::Wait,
                    ..opts()
                },
            )
            .build()
            .unwrap();
        for i in 0..10 {
            assert_eq!(n.send(record(&format!("k{i}"))).await.unwrap().dropped, 0);
        }
        n.export_metrics(); // No recorder installed: a no-op, must not panic.
        n.shutdown(Duration::from_secs(5)).await;
        let want: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        assert_eq!(t.seen(), want);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(100), Duration::from_secs(30));
    }
}
