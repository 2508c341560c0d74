//! The [`Notifier`]: routes event records to targets through per-target
//! queues, with retries, a dead-letter store and per-target counters.
//!
//! - Routing uses a [`RuleSet`]; a record goes to every distinct target whose
//!   rules match its event name and decoded key.
//! - Each target has its own pipeline: a bounded in-memory queue, or a durable
//!   [`QueueStore`] when [`TargetOptions::queue_dir`] is set (entries are the
//!   records serialized as JSON), and one worker task per sender that sends
//!   batches of up to [`Target::max_batch`] events **in order**.
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
//! # `queue_dir`
//!
//! Each target keeps its queues in its own sub-directory,
//! `<queue_dir>/<type>-<id>` ([`target_dir`]), as MinIO does, so that
//! several targets may be given the same `queue_dir`:
//!
//! ```text
//! <queue_dir>/<type>-<id>/lane-<i>-of-<n>/   the queue of sender i of n
//! <queue_dir>/<type>-<id>/dead-letter/       the dead-letter store
//! ```
//!
//! Every queue directory is locked while it is open: a second notifier (in
//! this process or another) configured with the same target and
//! `queue_dir` fails to build, naming the process that holds it.
//!
//! On start, queues of other layouts are drained into the current lanes,
//! in order, before the first event is accepted, and then removed:
//!
//! - lanes of another number of [`TargetOptions::senders`]
//!   (`lane-<i>-of-<m>`): each entry goes to the lane its key maps to now;
//! - `replay/`: see [Dead letters](#dead-letters);
//! - the layout of the versions before per-target directories (segments in
//!   `queue_dir` itself, `queue_dir/lane-<i>`, `queue_dir/dead-letter`).
//!   When one target of this notifier uses that `queue_dir`, everything
//!   is its own. When several do, which target an entry was queued for was
//!   not recorded: each entry goes to every target sharing the directory
//!   whose rules match it now, and one that matches none is dead-lettered
//!   in the first of them (in the order targets were added), never
//!   dropped. (A notifier cannot see the targets of other processes: when
//!   programs with different targets shared one `queue_dir`, the first to
//!   start takes all of its old entries, by the rules above.)
//!
//! Moves are at least once: a move interrupted by a crash resumes on the
//! next start from its last durable chunk (kept in
//! `<queue_dir>/<type>-<id>/MOVING`), so at most a chunk arrives twice;
//! an interrupted move of the legacy layout starts over (duplicates,
//! never loss).
//!
//! # Dead letters
//!
//! With `queue_dir`, dead letters are kept in a durable store, bounded by
//! [`TargetOptions::dead_letter_queue_limit`] (beyond it the oldest are
//! discarded, logged and counted in
//! [`TargetStats::dead_letters_discarded`]). An event whose dead letter
//! cannot be written (full or failing disk) stays in the queue until it
//! can: it is never acknowledged away. To look at them and send them again:
//!
//! - from the program running the notifier: [`Notifier::stored_dead_letters`]
//!   lists them (each with the error that put it there) and
//!   [`Notifier::replay_dead_letters`] queues them again for their target;
//! - with the notifier stopped: [`read_dead_letters`] lists them; to send
//!   them again, rename `<queue_dir>/<type>-<id>/dead-letter` to
//!   `<queue_dir>/<type>-<id>/replay` and start the notifier: the entries of
//!   `replay/` are queued again (after the events already queued) and the
//!   directory removed.
//!
//! # Failures of the queue's disk
//!
//! An append that fails is an error to the sender (and counted in
//! [`TargetStats::store_errors`]; when the failed write carried several
//! senders' entries, each sender then appends its own and gets its own
//! answer). An acknowledgement or dead-letter write
//! that fails after a delivery is retried with the backoff of
//! [`TargetOptions::retry`], counted, and shown in
//! [`TargetStats::store_error`] until it succeeds; the delivered batch is
//! not sent again meanwhile.
//!
//! Durable appends wait for their fsync without blocking a runtime thread
//! ([`QueueStore::append_batch_then`]), so concurrent senders share fsyncs;
//! they share writes too: the entries of a lane's concurrent senders are
//! appended by one of them, with one write.

mod dead_letter;
mod layout;
mod migrate;
#[cfg(test)]
mod soak_tests;
mod worker;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use s3_event_core::log::Faults;
use s3_event_core::{EventRecord, RuleSet, Target, TargetId};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use crate::queue_store::{QueueStore, QueueStoreOptions, Seq};
use crate::{Error, Result};
use dead_letter::DeadLetterStore;

pub use layout::{target_dir, DEAD_LETTER_DIR, REPLAY_DIR};

/// Sync mode: waits for each target's answer to one [`Notifier::send`];
/// the first failure is the error.
async fn wait_for_deliveries(
    waits: Vec<(&Arc<Pipeline>, oneshot::Receiver<Delivery>)>,
    mut outcome: SendOutcome,
) -> Result<SendOutcome> {
    let mut failed = None;
    for (p, rx) in waits {
        match rx.await {
            Ok(Delivery::Sent) => outcome.delivered += 1,
            Ok(Delivery::DeadLettered) => outcome.dead_lettered += 1,
            Ok(Delivery::Failed(reason)) => {
                failed.get_or_insert(Error::NotDelivered {
                    target: p.target.id().to_string(),
                    reason,
                });
            }
            Err(_) => {} // The worker stopped (shutdown deadline).
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}

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

/// Backoff for transient errors: the workspace's one retry policy.
pub use s3_event_core::retry::RetryPolicy;

/// Most concurrent senders of one target (as AIStor allows).
pub const MAX_SENDERS: usize = 50_000;

/// Most durable lanes of one target: each is a queue directory with its
/// own files and fsync thread, and lanes share no fsync round, so more
/// lanes than this would cost more than the concurrency they add.
pub const MAX_DURABLE_LANES: usize = 64;

/// Options of one target's pipeline.
#[derive(Clone, Debug)]
pub struct TargetOptions {
    /// Most events queued for the target. Default
    /// [`DEFAULT_QUEUE_LIMIT`](crate::config::DEFAULT_QUEUE_LIMIT), 100000
    /// as in MinIO.
    pub queue_limit: usize,
    /// A directory for durable queues ([`QueueStore`]), in the target's
    /// own sub-directory `<queue_dir>/<type>-<id>` ([`target_dir`]), so
    /// that targets may share one `queue_dir`; `None` (the default) keeps
    /// the queue in memory.
    pub queue_dir: Option<PathBuf>,
    /// What `send` does when the queue is full. Default [`FullPolicy::Drop`].
    pub full_policy: FullPolicy,
    /// Concurrent senders (1 to [`MAX_SENDERS`], default 1). Records are
    /// spread over the senders by a hash of their object key, so the
    /// events of one object stay in order while different objects are sent
    /// in parallel; each sender has its own share of `queue_limit` and,
    /// with `queue_dir`, its own durable queue (see [`target_dir`]), of
    /// which there are at most [`MAX_DURABLE_LANES`] (more are lowered to
    /// it, with a warning). Events queued under another number of senders
    /// are moved to the current lanes on start.
    pub senders: usize,
    /// Backoff for transient errors.
    pub retry: RetryPolicy,
    /// Most dead letters kept in memory (the oldest are forgotten first).
    /// Default 1000.
    pub dead_letter_limit: usize,
    /// Most entries of the durable dead-letter store (with `queue_dir`);
    /// beyond it the oldest are discarded, logged and counted in
    /// [`TargetStats::dead_letters_discarded`]. Default 100000.
    pub dead_letter_queue_limit: usize,
    /// Faults to inject into the file operations of the durable queues
    /// (tests and soaks; see [`Faults`]). Default none.
    pub faults: Option<Arc<Faults>>,
}

impl TargetOptions {
    /// Lowers `senders` to [`MAX_DURABLE_LANES`] when the queues are
    /// durable, with a warning.
    fn cap_durable_lanes(&mut self, target: &TargetId) {
        if self.queue_dir.is_some() && self.senders > MAX_DURABLE_LANES {
            tracing::warn!(
                target_id = %target, senders = self.senders,
                "`senders` over {MAX_DURABLE_LANES} with `queue_dir`: \
                 {MAX_DURABLE_LANES} durable lanes send concurrently"
            );
            self.senders = MAX_DURABLE_LANES;
        }
    }
}

impl PartialEq for TargetOptions {
    fn eq(&self, other: &Self) -> bool {
        self.queue_limit == other.queue_limit
            && self.queue_dir == other.queue_dir
            && self.full_policy == other.full_policy
            && self.senders == other.senders
            && self.retry == other.retry
            && self.dead_letter_limit == other.dead_letter_limit
            && self.dead_letter_queue_limit == other.dead_letter_queue_limit
            && match (&self.faults, &other.faults) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            queue_limit: crate::config::DEFAULT_QUEUE_LIMIT,
            queue_dir: None,
            full_policy: FullPolicy::Drop,
            senders: 1,
            retry: RetryPolicy::default(),
            dead_letter_limit: 1000,
            dead_letter_queue_limit: 100_000,
            faults: None,
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
    /// Dead letters stored now (durable store with `queue_dir`, else the
    /// ones kept in memory).
    pub dead_letter_queued: u64,
    /// Dead letters discarded because the durable dead-letter store was
    /// full ([`TargetOptions::dead_letter_queue_limit`]).
    pub dead_letters_discarded: u64,
    /// Failed operations on the durable queues (appends, reads,
    /// acknowledgements, dead-letter writes); each is retried or reported.
    pub store_errors: u64,
    /// The last such failure, while it lasts: `None` once the operation
    /// that failed succeeded.
    pub store_error: Option<String>,
    /// Queued records the worker read back from the durable queue: those
    /// queued by an earlier run, and those it could not be handed in
    /// memory (more than [`HANDOFF_MAX`] waiting). The others go from the
    /// sender to the worker in memory, written to the queue but never
    /// read from it.
    pub read_back: u64,
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
#[derive(Clone, Debug)]
enum Delivery {
    Sent,
    DeadLettered,
    /// Neither sent nor dead-lettered (its queue entry was found corrupt,
    /// or its outcome is no longer known).
    Failed(String),
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
    dead_letters_discarded: AtomicU64,
    store_errors: AtomicU64,
    read_back: AtomicU64,
    online: AtomicBool,
}

/// Most outcomes kept for sync-mode senders that have not asked yet.
const MAX_EARLY_OUTCOMES: usize = 65_536;

/// Most records a target's durable lanes keep in memory for their workers
/// beside their queue entries, shared evenly by its lanes (a sender hands
/// its record over as it writes the entry, so the worker need not read and
/// decode it again); past it, the worker reads them back from the queue
/// ([`TargetStats::read_back`]).
pub const HANDOFF_MAX: usize = 2048;

/// Sync-mode senders of a durable lane, by sequence number.
#[derive(Default)]
struct Waiters {
    waiting: HashMap<Seq, Waiter>,
    /// Outcomes of entries the worker finished before their sender asked
    /// (a busy worker reads an entry as soon as it is written, before the
    /// sender's fsync returned), oldest dropped beyond a bound.
    early: BTreeMap<Seq, Delivery>,
    /// Every entry up to this one is finished.
    done_upto: Seq,
    /// The first number appended by this notifier: older entries have no
    /// sender waiting.
    first: Seq,
}

/// One sender's queue: the records whose key hashes to it, in order.
struct Lane {
    /// In-memory queue (when `store` is `None`).
    queue: Mutex<VecDeque<(EventRecord, Option<Waiter>)>>,
    /// Most records in `queue` (or `store`).
    limit: usize,
    /// Durable queue and sync-mode waiters by sequence number.
    store: Option<Arc<QueueStore>>,
    /// Records just appended to `store`, by number, handed to the worker in
    /// memory so that it need not read and decode them again: entered
    /// while the store's lock is held ([`QueueStore::append_batch_then`]),
    /// so every entry the worker can read is here already, unless the map
    /// was full. The worker takes a run of consecutive numbers following
    /// what it delivered, and reads from the store when the next number is
    /// not here (queued by an earlier run, a gap, or the map was full),
    /// dropping what it passed.
    /// Boxed: the map moves its values as it grows and shrinks.
    handoff: Mutex<BTreeMap<Seq, Box<EventRecord>>>,
    /// Most records in `handoff`: this lane's share of [`HANDOFF_MAX`].
    handoff_max: usize,
    /// Senders' entries waiting to be appended to `store` together.
    joining: Mutex<Joining>,
    waiters: Mutex<Waiters>,
    /// Whether senders wait for outcomes (sync mode).
    sync: bool,
    /// Work was queued, or shutdown began.
    work: Notify,
    /// Room was made in the queue.
    space: Notify,
}

/// The entries of a durable lane's concurrent senders, appended by one of
/// them with one write ([`Lane::join`]).
#[derive(Default)]
struct Joining {
    entries: Vec<Joiner>,
    /// One sender is appending the entries here (and those that join
    /// while it does).
    leading: bool,
}

/// One sender's entry in [`Joining`]: the record, as encoded for the store,
/// and where to say what became of it.
struct Joiner {
    bytes: Vec<u8>,
    record: Box<EventRecord>,
    tx: oneshot::Sender<Joined>,
}

/// What became of a [`Joiner`].
enum Joined {
    /// Appended as entry `seq`; durable once the future resolves.
    Appended(Seq, crate::queue_store::Durable),
    /// Not appended (alone in its group, or the group's append failed):
    /// the sender appends it itself, so that it gets its own answer.
    Alone(Vec<u8>, Box<EventRecord>),
}

/// The sender that appends the joined entries: appends them when dropped,
/// also if its own send is cancelled while it waits for others to join.
struct Leading<'a> {
    pipeline: &'a Pipeline,
    lane: &'a Lane,
    store: &'a QueueStore,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.lane.append_joined(self.pipeline, self.store);
    }
}

struct Pipeline {
    target: Arc<dyn Target>,
    options: TargetOptions,
    counters: Counters,
    lanes: Vec<Lane>,
    dead: Mutex<VecDeque<DeadLetter>>,
    dead_store: Option<DeadLetterStore>,
    /// The last failure of a queue-store operation, until one succeeds.
    store_error: Mutex<Option<String>>,
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
            (
                "s3_event_target_dead_letters_discarded",
                s.dead_letters_discarded,
            ),
            ("s3_event_target_store_errors", s.store_errors),
        ] {
            metrics::counter!(name, "target" => t.clone()).absolute(v);
        }
        for (name, v) in [
            ("s3_event_target_queued", s.queued as f64),
            ("s3_event_target_in_flight", s.in_flight as f64),
            ("s3_event_target_online", if s.online { 1.0 } else { 0.0 }),
            (
                "s3_event_target_dead_letter_queued",
                s.dead_letter_queued as f64,
            ),
            (
                "s3_event_target_store_ok",
                if s.store_error.is_none() { 1.0 } else { 0.0 },
            ),
        ] {
            metrics::gauge!(name, "target" => t.clone()).set(v);
        }
    }
    metrics::counter!("s3_event_notifier_invalid_records").absolute(invalid);
}

/// Up to `max` of the oldest dead letters of `target` stored under
/// `queue_dir` (see the [module docs](self#dead-letters)), read with the
/// notifier stopped: while one runs on that directory this fails with
/// [`Error::Log`] naming it (use [`Notifier::stored_dead_letters`] there).
/// An entry that is not a record has a default record and its bytes in
/// [`DeadLetter::error`].
pub fn read_dead_letters(
    queue_dir: &Path,
    target: &TargetId,
    max: usize,
) -> Result<Vec<DeadLetter>> {
    let dir = target_dir(queue_dir, target).join(DEAD_LETTER_DIR);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let store = DeadLetterStore::open(&dir, usize::MAX, None)?;
    Ok(store
        .peek(max)?
        .into_iter()
        .map(|(_, l)| l.into_dead_letter())
        .collect())
}

/// Runs `futures` concurrently on this task; their outputs in order.
async fn join_all<F: Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    if futures.len() == 1 {
        let f = futures.pop().expect("one future");
        return vec![f.await];
    }
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match Pin::new(f).poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
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

    /// Opens the queues and starts one worker task per sender of each
    /// target. With `queue_dir`, queues of other layouts are first moved
    /// into the current lanes (see [`target_dir`]), and events left on disk
    /// are replayed at once. Must be called inside a tokio runtime.
    ///
    /// Fails when a rule names a target that was not added
    /// ([`Error::UnknownTarget`]), when two targets share an id, when an
    /// option is out of range, or when a queue directory cannot be opened
    /// (another notifier holds it: [`Error::Log`] naming the holder).
    pub fn build(mut self) -> Result<Notifier> {
        for (target, options) in &mut self.targets {
            options.cap_durable_lanes(target.id());
        }
        let rules = match self.rules {
            Some(r) => r,
            None => RuleSet::new(Vec::new()).expect("an empty rule set is valid"),
        };
        for (i, (target, options)) in self.targets.iter().enumerate() {
            if self.targets[..i].iter().any(|(t, _)| t.id() == target.id()) {
                return Err(Error::DuplicateTarget {
                    id: target.id().to_string(),
                });
            }
            if !(1..=MAX_SENDERS).contains(&options.senders) {
                return Err(Error::InvalidOption {
                    option: "senders",
                    rule: "`senders` must be between 1 and 50000",
                });
            }
            if options.queue_limit == 0 {
                return Err(Error::InvalidOption {
                    option: "queue_limit",
                    rule: "`queue_limit` must be > 0",
                });
            }
            if options.dead_letter_queue_limit == 0 {
                return Err(Error::InvalidOption {
                    option: "dead_letter_queue_limit",
                    rule: "`dead_letter_queue_limit` must be > 0",
                });
            }
        }
        let mut route = Vec::with_capacity(rules.targets().len());
        for arn in rules.targets() {
            let idx = arn
                .as_target_id()
                .and_then(|id| self.targets.iter().position(|(t, _)| t.id() == id));
            match idx {
                Some(i) => route.push(i),
                None => {
                    return Err(Error::UnknownTarget {
                        arn: arn.to_string(),
                    })
                }
            }
        }
        migrate::run(&self.targets, &rules, &route)?;
        let sync = self.mode == DeliveryMode::Sync;
        let mut pipelines: Vec<Arc<Pipeline>> = Vec::with_capacity(self.targets.len());
        for (target, options) in self.targets {
            pipelines.push(Arc::new(Pipeline::open(target, options, sync)?));
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
    /// (appended and fsynced when `queue_dir` is set); in
    /// [`DeliveryMode::Sync`], once every matching target delivered or
    /// dead-lettered it. A record whose event name does not parse, or whose
    /// key does not decode, is an [`Error::InvalidRecord`] naming it (and
    /// counted in [`Notifier::invalid_records`]). A failed durable append
    /// is the queue store's error (the record may or may not be delivered).
    /// In sync mode, a record that a target neither delivered nor
    /// dead-lettered (its queue entry was found corrupt and dropped) is an
    /// [`Error::NotDelivered`] naming the target. After
    /// [`Notifier::shutdown`] began, [`Error::Shutdown`].
    pub fn send(&self, record: EventRecord) -> impl Future<Output = Result<SendOutcome>> + '_ {
        // Boxed at once: the future then holds a pointer instead of the
        // record (most of a KB), and futures are moved whole (into tasks, into
        // boxes, into their callers' futures).
        self.send_boxed(Box::new(record))
    }

    async fn send_boxed(&self, record: Box<EventRecord>) -> Result<SendOutcome> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
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
        let last = hits.len().saturating_sub(1);
        // No local of this future holds a record across an await (the
        // futures that take one are boxed): each such local made the
        // future a record bigger (9.5 KB with the four it had).
        let mut record = Some(record);
        let mut queues = hits.iter().enumerate().map(|(n, &hit)| {
            let p = &self.pipelines[self.route[hit]];
            let (tx, rx) = if sync {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
            (p, rx, n == last, tx)
        });
        // Clone for all but the last target.
        let mut take = move |last: bool| {
            if last {
                *record.take().expect("record taken once")
            } else {
                EventRecord::clone(record.as_ref().expect("record present"))
            }
        };
        let mut waits = Vec::new();
        let mut first_error = None;
        let mut queued = |p, rx, q: Result<bool>| match q {
            Ok(true) => {
                outcome.queued += 1;
                if let Some(rx) = rx {
                    waits.push((p, rx));
                }
            }
            Ok(false) => outcome.dropped += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        };
        let durable = hits
            .iter()
            .filter(|&&hit| self.pipelines[self.route[hit]].options.queue_dir.is_some())
            .count();
        if durable > 1 {
            // Queued for every target at once: with several durable
            // targets, their fsyncs overlap instead of adding up.
            let (meta, enqueues): (Vec<_>, Vec<_>) = queues
                .map(|(p, rx, last, tx)| ((p, rx), Box::pin(p.enqueue(take(last), &key, tx))))
                .unzip();
            for ((p, rx), q) in meta.into_iter().zip(join_all(enqueues).await) {
                queued(p, rx, q);
            }
        } else {
            // One at a time: an in-memory queue with room takes the record
            // without a future, and boxing and polling the futures
            // together would cost more.
            for (p, rx, last, tx) in &mut queues {
                let q = match p.try_push_memory(take(last), &key, tx) {
                    Ok(()) => Ok(true),
                    Err(slow) => slow.await,
                };
                queued(p, rx, q);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        wait_for_deliveries(waits, outcome).await
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
    /// `_failed`, `_dropped`, `_dead_lettered`, `_dead_letters_discarded`,
    /// `_store_errors`; gauges: `_queued`, `_in_flight`, `_online` (1 or
    /// 0), `_dead_letter_queued`, `_store_ok` (0 while a queue-store
    /// operation keeps failing). Call it periodically, e.g. from the scrape
    /// handler, or see [`NotifierBuilder::export_metrics_every`].
    pub fn export_metrics(&self) {
        export(&self.pipelines, self.invalid_records());
    }

    /// The dead letters kept in memory for `target` (oldest first, at most
    /// [`TargetOptions::dead_letter_limit`]).
    pub fn dead_letters(&self, target: &TargetId) -> Vec<DeadLetter> {
        self.pipelines
            .iter()
            .find(|p| p.target.id() == target)
            .map(|p| lock(&p.dead).iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Up to `max` of the oldest stored dead letters of `target`: the
    /// durable dead-letter store with `queue_dir`, else the ones kept in
    /// memory. Fails with [`Error::UnknownTarget`] for a target not added.
    pub fn stored_dead_letters(&self, target: &TargetId, max: usize) -> Result<Vec<DeadLetter>> {
        let p = self.pipeline(target)?;
        match &p.dead_store {
            Some(d) => Ok(d
                .peek(max)?
                .into_iter()
                .map(|(_, l)| l.into_dead_letter())
                .collect()),
            None => Ok(lock(&p.dead).iter().take(max).cloned().collect()),
        }
    }

    /// Queues up to `max` of the oldest stored dead letters of `target`
    /// again (after the events already queued, so a replayed event can
    /// arrive after a newer event of its key) and removes them from the
    /// dead-letter store; returns how many were queued. Stops early when
    /// the target's queue is full. An entry that is not a record stays in
    /// the store. Fails with [`Error::UnknownTarget`] for a target not
    /// added, or with the queue store's error (what was queued before it
    /// stays queued; what was not stays dead-lettered).
    pub async fn replay_dead_letters(&self, target: &TargetId, max: usize) -> Result<usize> {
        self.pipeline(target)?.replay_dead_letters(max).await
    }

    fn pipeline(&self, target: &TargetId) -> Result<&Arc<Pipeline>> {
        self.pipelines
            .iter()
            .find(|p| p.target.id() == target)
            .ok_or_else(|| Error::UnknownTarget {
                arn: target.to_string(),
            })
    }

    /// Stops accepting records, lets the workers drain their queues for at
    /// most `deadline`, then stops them and closes the targets. In-memory
    /// events still queued after the deadline are lost (they remain in
    /// [`TargetStats::queued`] of the last snapshot); with `queue_dir` they
    /// stay on disk and are replayed by the next notifier built on that
    /// directory, which may be built as soon as this returns (the queue
    /// directories are released).
    ///
    /// Takes `&self`, so a notifier shared behind an `Arc` (an HTTP
    /// handler, a poller) can be shut down while clones are alive: from then
    /// on their [`Notifier::send`] fails with [`Error::Shutdown`]. A second
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
            // The queue directories are released (synced, unlocked) now, not
            // when the last reference to the notifier goes, so a new
            // notifier can open them at once.
            let stores = p.lanes.iter().filter_map(|l| l.store.as_deref());
            for store in stores {
                if let Err(e) = store.release() {
                    tracing::error!(dir = %store.dir().display(), error = %e, "queue store: releasing its directory failed");
                }
            }
            if let Some(d) = &p.dead_store {
                if let Err(e) = d.release() {
                    tracing::error!(error = %e, "dead-letter store: releasing its directory failed");
                }
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
    /// Opens the target's queues (after [`migrate::run`]).
    fn open(target: Arc<dyn Target>, options: TargetOptions, sync: bool) -> Result<Pipeline> {
        let n = options.senders;
        let limit = options.queue_limit.div_ceil(n);
        let dir = options
            .queue_dir
            .as_ref()
            .map(|q| target_dir(q, target.id()));
        let mut lanes = Vec::with_capacity(n);
        for i in 0..n {
            let store = match &dir {
                Some(dir) => Some(Arc::new(QueueStore::open(
                    layout::lane_dir(dir, i, n),
                    QueueStoreOptions {
                        queue_limit: limit,
                        faults: options.faults.clone(),
                        ..QueueStoreOptions::default()
                    },
                )?)),
                None => None,
            };
            let first = match &store {
                // An empty append assigns nothing and returns the next number.
                Some(s) => s.append_batch::<&[u8]>(&[])?.start,
                None => 0,
            };
            lanes.push(Lane {
                queue: Mutex::new(VecDeque::new()),
                limit,
                store,
                handoff: Mutex::new(BTreeMap::new()),
                handoff_max: (HANDOFF_MAX / n).max(1),
                joining: Mutex::new(Joining::default()),
                waiters: Mutex::new(Waiters {
                    first,
                    done_upto: first.saturating_sub(1),
                    ..Waiters::default()
                }),
                sync,
                work: Notify::new(),
                space: Notify::new(),
            });
        }
        let dead_store = match &dir {
            Some(dir) => Some(DeadLetterStore::open(
                &dir.join(DEAD_LETTER_DIR),
                options.dead_letter_queue_limit,
                options.faults.clone(),
            )?),
            None => None,
        };
        let counters = Counters::default();
        counters.online.store(true, Ordering::Relaxed);
        Ok(Pipeline {
            target,
            options,
            counters,
            lanes,
            dead: Mutex::new(VecDeque::new()),
            dead_store,
            store_error: Mutex::new(None),
            closing: AtomicBool::new(false),
        })
    }

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
        let dead_letter_queued = match &self.dead_store {
            Some(d) => d.len(),
            None => lock(&self.dead).len(),
        } as u64;
        TargetStats {
            total: c.total.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            queued,
            dropped: c.dropped.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            online: c.online.load(Ordering::Relaxed),
            dead_letter_queued,
            dead_letters_discarded: c.dead_letters_discarded.load(Ordering::Relaxed),
            store_errors: c.store_errors.load(Ordering::Relaxed),
            store_error: lock(&self.store_error).clone(),
            read_back: c.read_back.load(Ordering::Relaxed),
        }
    }

    /// Pushes a record on its in-memory lane if that lane has room
    /// (counted as [`Self::enqueue`] counts it); otherwise, and for a
    /// durable lane, [`Self::enqueue`] boxed, for the caller to await.
    #[inline]
    fn try_push_memory<'a>(
        self: &'a Arc<Self>,
        record: EventRecord,
        key: &'a str,
        waiter: Option<Waiter>,
    ) -> std::result::Result<(), Pin<Box<dyn Future<Output = Result<bool>> + Send + 'a>>> {
        let lane = &self.lanes[lane_of(key, self.lanes.len())];
        match &lane.store {
            // What `enqueue` would do, without boxing its future too.
            Some(store) => {
                self.counters.total.fetch_add(1, Ordering::Relaxed);
                Err(Box::pin(self.enqueue_durable(
                    lane,
                    store,
                    Box::new(record),
                    waiter,
                )))
            }
            None => match lane.try_push(record, waiter) {
                None => {
                    self.counters.total.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Some((record, waiter)) => Err(Box::pin(self.enqueue(record, key, waiter))),
            },
        }
    }

    /// Queues one record; `Ok(false)` when it was dropped (queue full).
    /// An in-memory queue with room takes it without awaiting anything;
    /// the other paths are boxed, so that this future stays small (it is
    /// made for every target of every record).
    async fn enqueue(
        self: &Arc<Self>,
        record: EventRecord,
        key: &str,
        waiter: Option<Waiter>,
    ) -> Result<bool> {
        self.counters.total.fetch_add(1, Ordering::Relaxed);
        let lane = &self.lanes[lane_of(key, self.lanes.len())];
        match &lane.store {
            None => match lane.try_push(record, waiter) {
                None => Ok(true),
                Some((record, waiter)) => {
                    Ok(Box::pin(self.push_waiting(lane, record, waiter)).await)
                }
            },
            Some(store) => {
                Box::pin(self.enqueue_durable(lane, store, Box::new(record), waiter)).await
            }
        }
    }

    /// An in-memory queue was full: waits for room as the policy says;
    /// `false` when the record was dropped.
    async fn push_waiting(
        &self,
        lane: &Lane,
        mut record: EventRecord,
        mut waiter: Option<Waiter>,
    ) -> bool {
        loop {
            if !self.wait_for_space(lane).await {
                return false;
            }
            match lane.try_push(record, waiter) {
                None => return true,
                Some(back) => (record, waiter) = back,
            }
        }
    }

    /// Appends one record to its durable lane: `Ok(false)` when it was
    /// dropped (queue full).
    async fn enqueue_durable(
        &self,
        lane: &Lane,
        store: &QueueStore,
        record: Box<EventRecord>,
        waiter: Option<Waiter>,
    ) -> Result<bool> {
        // Serializing an EventRecord cannot fail: every key is a string.
        let mut bytes = Vec::with_capacity(1024);
        serde_json::to_writer(&mut bytes, &record).expect("record serializes");
        // Concurrent senders' entries are appended together, with
        // one write; one alone appends its own (as does one too
        // large for the store, which fails alone).
        let joined = if bytes.len() <= crate::queue_store::MAX_ENTRY_BYTES {
            lane.join(self, store, bytes, record).await?
        } else {
            Joined::Alone(bytes, record)
        };
        let appended = match joined {
            Joined::Appended(seq, durable) => Some((seq, durable)),
            Joined::Alone(bytes, record) => self.append_alone(lane, store, &bytes, record).await?,
        };
        let Some((seq, durable)) = appended else {
            return Ok(false);
        };
        // Fsynced by the log's thread: concurrent senders share
        // fsync rounds and no runtime thread blocks. The worker is
        // woken once the entry is durable, as a group with the
        // round's other senders (one wake per append, before the
        // fsync, costs more than it gains); it may take the record
        // earlier when busy.
        let synced = durable.await;
        lane.work.notify_one();
        if let Err(e) = synced {
            self.store_failed("append", &e);
            return Err(e);
        }
        if let Some(w) = waiter {
            lane.register_waiter(seq, w);
        }
        Ok(true)
    }

    /// Appends one entry to a durable lane's store, waiting for room as the
    /// policy says: its number and durability, or `None` when it was
    /// dropped (queue full). The record goes to the worker in memory,
    /// before the worker can read the entry.
    async fn append_alone(
        &self,
        lane: &Lane,
        store: &QueueStore,
        bytes: &[u8],
        record: Box<EventRecord>,
    ) -> Result<Option<(Seq, crate::queue_store::Durable)>> {
        let mut record = Some(record);
        loop {
            let written = |seqs: std::ops::Range<Seq>| {
                if let Some(r) = record.take() {
                    lane.hand_over(seqs.start, r);
                }
            };
            match store.append_batch_then(&[bytes], written) {
                Ok((seqs, durable)) => return Ok(Some((seqs.start, durable))),
                Err(Error::QueueFull { .. }) => {
                    if !self.wait_for_space(lane).await {
                        return Ok(None);
                    }
                }
                Err(e) => {
                    self.store_failed("append", &e);
                    return Err(e);
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

    /// Counts a failed queue-store operation and shows it in the stats
    /// until one succeeds.
    fn store_failed(&self, op: &str, e: &Error) {
        self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
        let mut msg = format!("{op}: {e}");
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        tracing::error!(target_id = %self.target.id(), error = %msg, "queue store operation failed");
        *lock(&self.store_error) = Some(msg);
    }

    /// A queue-store operation succeeded: clears the shown failure.
    fn store_ok(&self) {
        let mut e = lock(&self.store_error);
        if e.is_some() {
            tracing::info!(target_id = %self.target.id(), "queue store operations succeed again");
            *e = None;
        }
    }

    /// Queues `record` again, without waiting for room: `Ok(false)` when
    /// its lane is full.
    async fn requeue(&self, record: EventRecord) -> Result<bool> {
        let key = record
            .decoded_key()
            .unwrap_or_else(|_| record.key().unwrap_or_default().to_owned());
        let lane = &self.lanes[lane_of(&key, self.lanes.len())];
        match &lane.store {
            None => {
                let mut q = lock(&lane.queue);
                if q.len() >= lane.limit {
                    return Ok(false);
                }
                q.push_back((record, None));
            }
            Some(store) => {
                let bytes = serde_json::to_vec(&record).expect("record serializes");
                match store.append_batch_synced(&[bytes.as_slice()]).await {
                    Ok(_) => {}
                    Err(Error::QueueFull { .. }) => return Ok(false),
                    Err(e) => {
                        self.store_failed("append", &e);
                        return Err(e);
                    }
                }
            }
        }
        self.counters.total.fetch_add(1, Ordering::Relaxed);
        lane.work.notify_one();
        Ok(true)
    }

    /// See [`Notifier::replay_dead_letters`].
    async fn replay_dead_letters(&self, max: usize) -> Result<usize> {
        let Some(store) = &self.dead_store else {
            let mut n = 0;
            while n < max {
                let Some(d) = lock(&self.dead).pop_front() else {
                    break;
                };
                if !self.requeue(d.record.clone()).await? {
                    lock(&self.dead).push_front(d);
                    break;
                }
                n += 1;
            }
            return Ok(n);
        };
        let mut queued = 0;
        let mut done = None;
        let mut kept = Vec::new();
        for (seq, letter) in store.peek(max)? {
            match letter {
                dead_letter::Letter::Record(d) => {
                    if !self.requeue(d.record).await? {
                        break;
                    }
                    queued += 1;
                }
                dead_letter::Letter::Undecodable { error, entry } => {
                    kept.push(dead_letter::encode_undecodable(entry.as_bytes(), &error));
                }
            }
            done = Some(seq);
        }
        if !kept.is_empty() {
            // Kept, at the end of the store.
            store.append(&kept).await?;
        }
        if let Some(seq) = done {
            store.ack(seq)?;
        }
        Ok(queued)
    }
}

impl Lane {
    /// Keeps `record`, just queued as entry `seq`, for the worker (unless
    /// the lane's share of [`HANDOFF_MAX`] is kept already: it reads that
    /// one back).
    /// Joins the lane's other senders: the entry waits in [`Joining`] until
    /// one of them appends all that wait, with one write. The first to
    /// join leads: it lets the tasks that are ready run first (those woken
    /// by the same fsync round usually send next), then takes what joined
    /// meanwhile and appends it; whoever joins after that starts the next
    /// group (so a leader writes one group, its own, however busy the
    /// lane). A group of one is handed back to append alone, as is a group
    /// whose append failed (each sender then gets its own answer: room, or
    /// the error).
    async fn join(
        &self,
        pipeline: &Pipeline,
        store: &QueueStore,
        bytes: Vec<u8>,
        record: Box<EventRecord>,
    ) -> Result<Joined> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut j = lock(&self.joining);
            j.entries.push(Joiner { bytes, record, tx });
            !std::mem::replace(&mut j.leading, true)
        };
        if lead {
            let leading = Leading {
                pipeline,
                lane: self,
                store,
            };
            tokio::task::yield_now().await;
            drop(leading);
        }
        // Every joiner is answered (`append_joined`, also when the leader
        // is dropped), unless a panic stopped the leader.
        rx.await.map_err(|_| Error::Io {
            path: store.dir().to_owned(),
            source: std::io::Error::other("the sender appending this entry stopped"),
        })
    }

    /// Takes what waits in [`Joining`] (the next sender to join leads the
    /// next group) and appends it. A failed group write is counted and
    /// shown (`pipeline`) before its senders try alone.
    fn append_joined(&self, pipeline: &Pipeline, store: &QueueStore) {
        let group = {
            let mut j = lock(&self.joining);
            j.leading = false;
            std::mem::take(&mut j.entries)
        };
        if group.len() < 2 {
            for g in group {
                let _ = g.tx.send(Joined::Alone(g.bytes, g.record));
            }
            return;
        }
        let mut bytes = Vec::with_capacity(group.len());
        let mut records = Vec::with_capacity(group.len());
        let mut txs = Vec::with_capacity(group.len());
        for g in group {
            bytes.push(g.bytes);
            records.push(g.record);
            txs.push(g.tx);
        }
        let written = |seqs: std::ops::Range<Seq>| self.hand_over_all(seqs.start, &mut records);
        match store.append_batch_then(&bytes, written) {
            Ok((seqs, durable)) => {
                for (i, tx) in txs.into_iter().enumerate() {
                    let _ = tx.send(Joined::Appended(seqs.start + i as Seq, durable.clone()));
                }
            }
            Err(e) => {
                if !matches!(e, Error::QueueFull { .. }) {
                    pipeline.store_failed("append", &e);
                }
                // Nothing was appended: each sender tries alone.
                for ((tx, b), r) in txs.into_iter().zip(bytes).zip(records) {
                    let _ = tx.send(Joined::Alone(b, r));
                }
            }
        }
    }

    /// [`Self::hand_over`] for consecutive entries from `first`, taking the
    /// records out of `records`.
    // The boxes go into the map as they are (it holds boxed records).
    #[allow(clippy::vec_box)]
    fn hand_over_all(&self, first: Seq, records: &mut Vec<Box<EventRecord>>) {
        let mut h = lock(&self.handoff);
        for (i, r) in records.drain(..).enumerate() {
            if h.len() >= self.handoff_max {
                break;
            }
            h.insert(first + i as Seq, r);
        }
    }

    /// Pushes a record on the in-memory queue if it has room, and wakes
    /// the worker if the queue was empty; hands it back if it has no room.
    ///
    /// The worker waits only after it found the queue empty (under the
    /// lock), and drains it again without waiting while it is not; so only
    /// the push that makes it non-empty needs to wake it. Waking it on
    /// every push woke it (and often parked a runtime thread) once per
    /// record in a burst.
    #[inline]
    fn try_push(
        &self,
        record: EventRecord,
        waiter: Option<Waiter>,
    ) -> Option<(EventRecord, Option<Waiter>)> {
        let mut q = lock(&self.queue);
        if q.len() >= self.limit {
            return Some((record, waiter));
        }
        let was_empty = q.is_empty();
        q.push_back((record, waiter));
        drop(q);
        if was_empty {
            self.work.notify_one();
        }
        None
    }

    fn hand_over(&self, seq: Seq, record: Box<EventRecord>) {
        let mut h = lock(&self.handoff);
        if h.len() < self.handoff_max {
            h.insert(seq, record);
        }
    }

    /// The records handed over for the entries following `after`, at most
    /// `max`, numbered consecutively from `after + 1`; drops those at or
    /// below `after` (read from the queue instead). Empty when entry
    /// `after + 1` was not handed over: the worker reads the queue.
    fn take_handed(&self, after: Seq, max: usize) -> Vec<(Seq, EventRecord)> {
        let mut h = lock(&self.handoff);
        while h.first_key_value().is_some_and(|(&s, _)| s <= after) {
            h.pop_first();
        }
        let mut out = Vec::new();
        while out.len() < max {
            match h.first_entry() {
                Some(e) if *e.key() == after + 1 + out.len() as Seq => out.push(e.remove_entry()),
                _ => break,
            }
        }
        drop(h);
        out.into_iter().map(|(seq, r)| (seq, *r)).collect()
    }

    /// Sync mode: hands `waiter` the outcome of entry `seq`, now if the
    /// worker already finished it, else when it does.
    fn register_waiter(&self, seq: Seq, waiter: Waiter) {
        let mut w = lock(&self.waiters);
        if let Some(d) = w.early.remove(&seq) {
            drop(w);
            let _ = waiter.send(d);
        } else if seq <= w.done_upto {
            // Finished, and its outcome no longer kept (more than
            // MAX_EARLY_OUTCOMES senders had not asked yet): never guess.
            drop(w);
            let _ = waiter.send(Delivery::Failed(
                "its outcome is no longer known (too many unanswered senders)".to_owned(),
            ));
        } else {
            w.waiting.insert(seq, waiter);
        }
    }

    /// Reports the outcomes of a batch; every entry up to `last` is done.
    fn finish(&self, outcomes: impl IntoIterator<Item = (Seq, Delivery)>, last: Seq) {
        let mut w = lock(&self.waiters);
        for (seq, d) in outcomes {
            if let Some(tx) = w.waiting.remove(&seq) {
                let _ = tx.send(d);
            } else if self.sync && seq >= w.first {
                w.early.insert(seq, d);
                if w.early.len() > MAX_EARLY_OUTCOMES {
                    w.early.pop_first();
                }
            }
        }
        w.done_upto = w.done_upto.max(last);
    }
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;
