//! The consumer loop: rdkafka in, [`PartitionState`]s out.
//!
//! librdkafka runs the rebalance callbacks inside the poll that `recv`
//! makes; the context only queues them, and the loop applies them before it
//! handles the message that poll returned, so a message is never handled
//! for a partition already revoked.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::{FutureExt, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use s3_event_core::Partitioner;

use super::partition::{Incoming, PartitionState, Shared};
use super::record::{self, Body, MessageRef};
use super::{Counters, KafkaSource, KafkaSourceStats, KafkaStatsHandle};
use crate::{Error, Result};

/// How often the loop wakes without messages: rebalances, commits, time
/// flushes.
const TICK: Duration = Duration::from_millis(200);

/// How many messages the loop takes in a row when the client has them
/// ready, before it checks timers, rebalances and commits.
const DRAIN: usize = 256;

/// How long looking up committed offsets on assignment may take.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// Offsets a commit carries, by topic and partition.
type Offsets = Vec<((String, i32), i64)>;

/// A commit's answer and how long the client took to give it.
type Answer = (rdkafka::error::KafkaResult<()>, Duration);

/// A commit running on the blocking pool while the loop goes on.
struct InFlight {
    task: tokio::task::JoinHandle<Answer>,
    offsets: Offsets,
}

/// Commits `tpl` synchronously, timed where it runs: the loop looks at
/// the answer only when it next wakes, up to a [`TICK`] later.
fn commit_timed(client: &impl Consumer<Context>, tpl: &TopicPartitionList) -> Answer {
    let started = Instant::now();
    let r = client.commit(tpl, CommitMode::Sync);
    (r, started.elapsed())
}

enum Event {
    Assign(Vec<(String, i32)>),
    Revoke(Vec<(String, i32)>),
    /// A rebalance error: librdkafka has unassigned every partition.
    RevokeAll,
}

fn list_offsets(tpl: &TopicPartitionList) -> Vec<(String, i32, Offset)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition(), e.offset()))
        .collect()
}

fn list(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

struct Context {
    events: Mutex<Vec<Event>>,
    /// Set after an event is queued: the loop looks at it before every
    /// message, and takes the lock only when it is set.
    queued: AtomicBool,
    /// High watermarks from the last statistics.
    watermarks: Mutex<HashMap<(String, i32), i64>>,
    /// Per partition, the offset a commit may carry (its objects are
    /// stored) and none has carried yet, as of the loop's last look: what
    /// a revocation commits before the partition goes, so that the next
    /// owner does not have to find those objects again.
    ready: Mutex<HashMap<(String, i32), i64>>,
    counters: Arc<Counters>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let mut w = self.watermarks.lock().expect("watermarks lock");
        for (topic, t) in statistics.topics {
            for (p, s) in t.partitions {
                if p >= 0 && s.hi_offset >= 0 {
                    w.insert((topic.clone(), p), s.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Context {
    /// A revocation commits what the loop has stored of the partitions
    /// going and not yet committed (the commit interval may have held it
    /// back). librdkafka runs this inside the loop's poll, before it gives
    /// the partitions up, while this member may still commit for them.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let mut commit = TopicPartitionList::new();
        {
            let mut ready = self.ready.lock().expect("ready lock");
            for e in tpl.elements() {
                let key = (e.topic().to_owned(), e.partition());
                if let Some(c) = ready.remove(&key) {
                    let _ = commit.add_partition_offset(&key.0, key.1, Offset::Offset(c));
                }
            }
        }
        if commit.count() == 0 {
            return;
        }
        match commit_timed(consumer, &commit) {
            (Ok(()), took) => {
                let micros = took.as_micros() as u64;
                let c = &self.counters;
                c.commits.fetch_add(1, Ordering::Relaxed);
                c.commit_micros_total.fetch_add(micros, Ordering::Relaxed);
                c.commit_micros_max.fetch_max(micros, Ordering::Relaxed);
                tracing::info!(offsets = ?list_offsets(&commit), "kafka source: committed what is stored of the partitions revoked");
            }
            (Err(e), _) => {
                self.counters
                    .commit_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "kafka source: the commit on revocation was refused; the next owner finds the stored objects with the chain check");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(tpl) => Event::Assign(list(tpl)),
            Rebalance::Revoke(tpl) => Event::Revoke(list(tpl)),
            Rebalance::Error(e) => {
                // The client has unassigned everything: nothing may be
                // uploaded or committed until the next assignment.
                tracing::warn!(error = %e, "kafka source: rebalance error; every partition is given up");
                Event::RevokeAll
            }
        };
        self.events.lock().expect("events lock").push(event);
        self.queued.store(true, Ordering::Release);
    }
}

type Client = rdkafka::consumer::StreamConsumer<Context>;

fn kafka_err(context: impl Into<String>, e: rdkafka::error::KafkaError) -> Error {
    Error::Kafka {
        context: context.into(),
        source: Some(Box::new(e)),
    }
}

fn client(source: &KafkaSource, ctx: Context) -> Result<Client> {
    let c = &source.config;
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &c.brokers)
        .set("group.id", &c.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    if !c.statistics_interval.is_zero() {
        cfg.set(
            "statistics.interval.ms",
            c.statistics_interval.as_millis().to_string(),
        );
    }
    for (k, v) in &c.options {
        cfg.set(k, v);
    }
    cfg.create_with_context(ctx).map_err(|e| match e {
        // librdkafka's message names the refused option and repeats its
        // value, which may be a password: keep the key, drop the rest.
        rdkafka::error::KafkaError::ClientConfig(_, _, key, _) => Error::Kafka {
            context: format!(
                "creating the consumer for `{}`: librdkafka refused the option `{key}` (its value is not shown)",
                c.brokers
            ),
            source: None,
        },
        e => kafka_err(format!("creating the consumer for `{}`", c.brokers), e),
    })
}

/// The time partition of a message: its Kafka timestamp (the epoch when it
/// has none, so that a redo agrees).
fn time_partition(p: &s3_event_core::TimePartitioner, ts: Option<i64>) -> String {
    let t = ts
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    // Processing-time partitioners only read `now`; they cannot fail.
    p.partition(&serde_json::Value::Null, t)
        .map(|k| k.into_string())
        .unwrap_or_default()
}

struct Loop {
    client: Arc<Client>,
    /// What [`incoming`] lends the message in hand.
    lent: Lent,
    parts: HashMap<(String, i32), PartitionState>,
    commit: bool,
    /// The least time between the starts of two commits.
    commit_interval: Duration,
    /// When the last commit started.
    last_commit: Option<Instant>,
    in_flight: Option<InFlight>,
}

pub(super) async fn run(
    source: KafkaSource,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<KafkaSourceStats> {
    let ctx = Context {
        events: Mutex::new(Vec::new()),
        queued: AtomicBool::new(false),
        watermarks: Mutex::new(HashMap::new()),
        ready: Mutex::new(HashMap::new()),
        counters: Arc::clone(&source.counters),
    };
    let client = Arc::new(client(&source, ctx)?);
    let topics: Vec<&str> = source.config.topics.iter().map(String::as_str).collect();
    client
        .subscribe(&topics)
        .map_err(|e| kafka_err(format!("subscribing to {topics:?}"), e))?;
    tracing::info!(group = %source.config.group_id, topics = ?topics, "kafka source: subscribed");
    let mut l = Loop {
        client: Arc::clone(&client),
        lent: Lent {
            tpart: (i64::MIN, String::new()),
            record: Vec::new(),
        },
        parts: HashMap::new(),
        commit: source.config.commit,
        commit_interval: source.config.commit_interval,
        last_commit: None,
        in_flight: None,
    };
    let sh = &source.shared;
    let wrap = source.config.wrap;
    let result = l.main(&source, sh, wrap, shutdown).await;
    let stats = KafkaStatsHandle(Arc::clone(&source.counters));
    match result {
        Ok(()) => {
            // Shutdown: revocations queued last come first; then everything
            // open goes up, then its commit.
            l.apply_events(&source.counters).await;
            if source.config.flush_on_shutdown {
                for p in l.parts.values_mut() {
                    p.flush_due(sh, None).await?;
                }
            }
            l.commit_dirty(&source.counters, true).await;
            l.publish(&source.counters);
            drop(l);
            // Leaves the group (librdkafka's consumer close) on drop.
            let client = Arc::into_inner(client);
            tokio::task::spawn_blocking(move || drop(client)).await.ok();
            Ok(stats.snapshot())
        }
        Err(e) => Err(e),
    }
}

impl Loop {
    async fn main(
        &mut self,
        source: &KafkaSource,
        sh: &Shared,
        wrap: bool,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<()> {
        let counters = &source.counters;
        tokio::pin!(shutdown);
        let mut last_publish = Instant::now();
        // One stream for the loop's life: `recv` makes one per call, and
        // registers and unregisters its waker under a lock each time.
        let client = Arc::clone(&self.client);
        let mut stream = client.stream();
        loop {
            self.apply_events(counters).await;
            let deadline = self
                .parts
                .values()
                .filter_map(|p| p.deadline(sh))
                .chain(self.next_commit())
                .min()
                .map_or(Instant::now() + TICK, |d| d.min(Instant::now() + TICK));
            let mut msg = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                m = stream.next() => m,
                () = tokio::time::sleep_until(deadline.into()) => None,
            };
            // Rebalances the poll ran come before its message, and before
            // any flush or commit: a poll that ran only a rebalance answers
            // nothing, and the timer branch may win, with partitions the
            // client no longer owns still here.
            self.apply_events(counters).await;
            // Then whatever the client already holds, without a timer per
            // message, up to a bound so that time flushes stay on time.
            let mut taken = 0;
            while let Some(m) = msg.take() {
                // Rebalances a poll ran come before its message.
                self.apply_events(counters).await;
                match m {
                    Ok(m) => {
                        let (topic, partition) = (m.topic(), m.partition());
                        if let Some(state) = self
                            .parts
                            .values_mut()
                            .find(|p| p.partition == partition && p.topic == topic)
                        {
                            let incoming =
                                incoming(&m, &source.partitioner, &mut self.lent, wrap, sh);
                            drop(m);
                            state.offer(sh, incoming).await?;
                        }
                    }
                    Err(e) => {
                        counters.consumer_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "kafka source: consumer error");
                    }
                }
                taken += 1;
                if taken < DRAIN {
                    // A Kafka stream never ends: `None` is "none ready".
                    msg = stream.next().now_or_never().flatten();
                }
            }
            // The last poll may have run a rebalance and answered nothing.
            self.apply_events(counters).await;
            let now = Instant::now();
            for p in self.parts.values_mut() {
                if p.deadline(sh).is_some_and(|d| d <= now) {
                    p.flush_due(sh, Some(now)).await?;
                }
            }
            self.commit_dirty(counters, false).await;
            if last_publish.elapsed() >= TICK {
                self.publish(counters);
                last_publish = Instant::now();
            }
        }
    }

    /// Applies queued assignments and revocations.
    async fn apply_events(&mut self, counters: &Counters) {
        if !self.client.context().queued.swap(false, Ordering::Acquire) {
            return;
        }
        let events =
            std::mem::take(&mut *self.client.context().events.lock().expect("events lock"));
        for e in events {
            match e {
                Event::Revoke(list) => {
                    counters.revocations.fetch_add(1, Ordering::Relaxed);
                    for key in list {
                        if let Some(p) = self.parts.remove(&key) {
                            tracing::info!(topic = %key.0, partition = key.1, open = p.open_records(), "kafka source: partition revoked; its open batches are abandoned (their offsets are not committed: the next owner reads them again)");
                        }
                    }
                }
                Event::RevokeAll => {
                    counters.revocations.fetch_add(1, Ordering::Relaxed);
                    // Nothing may be committed for partitions given up.
                    self.client
                        .context()
                        .ready
                        .lock()
                        .expect("ready lock")
                        .clear();
                    for (key, p) in self.parts.drain() {
                        tracing::info!(topic = %key.0, partition = key.1, open = p.open_records(), "kafka source: partition given up after a rebalance error; its open batches are abandoned");
                    }
                }
                Event::Assign(list) => {
                    counters.assignments.fetch_add(1, Ordering::Relaxed);
                    let mut tpl = TopicPartitionList::new();
                    for (t, p) in &list {
                        self.parts
                            .entry((t.clone(), *p))
                            .or_insert_with(|| PartitionState::new(t, *p));
                        tpl.add_partition(t, *p);
                    }
                    let client = Arc::clone(&self.client);
                    let committed = tokio::task::spawn_blocking(move || {
                        client.committed_offsets(tpl, COMMITTED_TIMEOUT)
                    })
                    .await;
                    match committed {
                        Ok(Ok(tpl)) => {
                            for e in tpl.elements() {
                                let key = (e.topic().to_owned(), e.partition());
                                if let (Some(p), Offset::Offset(c)) =
                                    (self.parts.get_mut(&key), e.offset())
                                {
                                    p.resume_at(c);
                                }
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "kafka source: looking up committed offsets failed; resuming where the client fetches")
                        }
                        Err(_) => {}
                    }
                    tracing::info!(partitions = ?list, "kafka source: partitions assigned");
                }
            }
        }
    }

    /// When a commit waiting for the interval may start: none while one is
    /// in flight (its answer is looked at on the next wake) or while no
    /// partition has an offset to commit (a dirty partition may have none
    /// yet, and a deadline already passed would wake the loop at once).
    fn next_commit(&self) -> Option<Instant> {
        let last = self.last_commit?;
        (self.commit
            && self.in_flight.is_none()
            && self.parts.values().any(|p| p.to_commit().is_some()))
        .then(|| last + self.commit_interval)
    }

    /// Commits every partition whose committable offset moved, once the
    /// commit interval has passed since the last commit started.
    ///
    /// The commit (librdkafka's synchronous one) runs on the blocking pool
    /// and the loop goes on consuming; the next one starts once it is
    /// answered, so commits are answered in order. Waiting for each one
    /// halved the source's throughput on a local broker
    /// (`benches/kafka_source.rs`). A commit only ever carries offsets whose
    /// objects are stored, so one answered late, or for partitions given up
    /// meanwhile, costs a redo that the chain check finds, never a loss.
    /// With `wait` (shutdown) it waits for the one in flight and its own.
    async fn commit_dirty(&mut self, counters: &Counters, wait: bool) {
        if let Some(f) = self.in_flight.take() {
            if !wait && !f.task.is_finished() {
                self.in_flight = Some(f);
                return;
            }
            let InFlight { task, offsets } = f;
            self.answered(counters, task.await, &offsets);
        }
        if !self.parts.values().any(|p| p.dirty) {
            return;
        }
        if self.commit {
            *self.client.context().ready.lock().expect("ready lock") = self
                .parts
                .iter()
                .filter_map(|(k, p)| Some((k.clone(), p.to_commit()?)))
                .collect();
        }
        if !wait
            && self
                .last_commit
                .is_some_and(|t| t.elapsed() < self.commit_interval)
        {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        let mut offsets = Vec::new();
        for (key, p) in &self.parts {
            let Some(c) = p.to_commit() else { continue };
            if tpl
                .add_partition_offset(&key.0, key.1, Offset::Offset(c))
                .is_ok()
            {
                offsets.push((key.clone(), c));
            }
        }
        if offsets.is_empty() || !self.commit {
            return;
        }
        let client = Arc::clone(&self.client);
        self.last_commit = Some(Instant::now());
        let task = tokio::task::spawn_blocking(move || commit_timed(&*client, &tpl));
        if wait {
            self.answered(counters, task.await, &offsets);
        } else {
            self.in_flight = Some(InFlight { task, offsets });
        }
    }

    /// Counts a commit's answer and, if it succeeded, applies its offsets.
    fn answered(
        &mut self,
        counters: &Counters,
        r: std::result::Result<Answer, tokio::task::JoinError>,
        offsets: &Offsets,
    ) {
        match r {
            Ok((Ok(()), took)) => {
                let micros = took.as_micros() as u64;
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters
                    .commit_micros_total
                    .fetch_add(micros, Ordering::Relaxed);
                counters
                    .commit_micros_max
                    .fetch_max(micros, Ordering::Relaxed);
                let mut ready = self.client.context().ready.lock().expect("ready lock");
                for (key, c) in offsets {
                    if ready.get(key).is_some_and(|r| r <= c) {
                        ready.remove(key);
                    }
                    // An answer that came after the partition was given up
                    // and assigned again never moves its offset back.
                    if let Some(p) = self.parts.get_mut(key) {
                        if p.committed.is_none_or(|done| done < *c) {
                            p.set_committed(*c);
                        }
                    }
                }
            }
            Ok((Err(e), _)) => {
                counters.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "kafka source: commit refused (a rebalance?); the offsets stay uncommitted");
            }
            Err(_) => {
                counters.commit_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Per-partition figures into the counters.
    fn publish(&self, counters: &Counters) {
        let w = self
            .client
            .context()
            .watermarks
            .lock()
            .expect("watermarks lock")
            .clone();
        let mut out = std::collections::BTreeMap::new();
        for (key, p) in &self.parts {
            let hw = w.get(key).copied();
            let pos = p.position();
            out.insert(
                format!("{}+{}", key.0, key.1),
                super::PartitionStats {
                    position: pos,
                    committed: p.committed,
                    high_watermark: hw,
                    lag: hw.zip(pos).map(|(h, p)| (h - p).max(0)),
                    open_records: p.open_records(),
                },
            );
        }
        *counters.partitions.lock().expect("stats lock") = out;
    }
}

/// A message's headers. librdkafka parses them anew on every call, into a
/// buffer it allocates, even when there are none: only wrapped records and
/// failure reports show them, so only those ask.
fn headers_of<M: Message>(m: &M) -> Vec<(&str, Option<&[u8]>)> {
    m.headers()
        .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default()
}

/// The buffers the loop reuses for the message in hand.
struct Lent {
    /// The last time partition computed, by minute of its timestamp.
    tpart: (i64, String),
    /// The message's record, copied so that the message can go back to the
    /// client before the record is offered.
    record: Vec<u8>,
}

/// What `m` becomes, lent from the loop's buffers.
fn incoming<'s, M: Message>(
    m: &M,
    partitioner: &s3_event_core::TimePartitioner,
    lent: &'s mut Lent,
    wrap: bool,
    sh: &Shared,
) -> Incoming<'s> {
    let timestamp = m.timestamp().to_millis();
    let mut r = MessageRef {
        topic: m.topic(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp,
        key: m.key(),
        payload: m.payload(),
        headers: if wrap { headers_of(m) } else { Vec::new() },
    };
    let mut body = record::body(&r, wrap, sh.encoding);
    if let (Body::Poison { reason, .. }, false) = (&body, wrap) {
        r.headers = headers_of(m);
        body = record::poison(&r, reason.clone());
    }
    // Partitions are whole hours or days (UTC): a minute never spans two.
    let minute = timestamp.map_or(i64::MIN + 1, |t| t.div_euclid(60_000));
    if lent.tpart.0 != minute {
        lent.tpart = (minute, time_partition(partitioner, timestamp));
    }
    let body = match body {
        // Borrowed from the message, which goes back to the client before
        // the record is offered: copied. A record made here (wrapped, or
        // with line breaks replaced) is already owned.
        Body::Record(Cow::Borrowed(record)) => {
            lent.record.clear();
            lent.record.extend_from_slice(record);
            Body::Record(Cow::Borrowed(lent.record.as_slice()))
        }
        Body::Record(Cow::Owned(record)) => Body::Record(Cow::Owned(record)),
        Body::Poison { report, reason } => Body::Poison { report, reason },
    };
    Incoming {
        offset: m.offset(),
        tpart: Cow::Borrowed(lent.tpart.1.as_str()),
        body,
    }
}
