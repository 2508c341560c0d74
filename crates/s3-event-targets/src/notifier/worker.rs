//! The worker of one lane: takes batches in order, delivers them with
//! retries, dead-letters what the target rejects, and (with `queue_dir`)
//! acknowledges what it delivered in the queue store, retrying a failed
//! acknowledgement or dead-letter write with backoff, never sending the
//! delivered events again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use s3_event_core::retry::Retry;
use s3_event_core::{EventRecord, TargetError};
use tokio::time::Instant;

use super::dead_letter;
use super::{lock, DeadLetter, Delivery, Lane, Pipeline};
use crate::queue_store::{QueueStore, Seq};
use crate::{Error, Result};

/// How the delivery of one record ended.
pub(super) enum Delivered {
    Sent,
    /// Dead-lettered, with the error that sent it there.
    Dead(String),
}

/// Most time a busy durable lane goes without writing its acknowledgement.
const ACK_EVERY: Duration = Duration::from_millis(10);

/// Most dead letters a durable lane holds in memory while they cannot be
/// stored; past it the lane stops reading until they are.
const MAX_UNSTORED_DEAD: usize = 10_000;

/// What a durable lane has delivered and not yet finished.
struct Finish {
    /// Everything up to this entry was delivered or dead-lettered.
    delivered: Seq,
    /// Everything up to this entry is acknowledged in the store.
    acked: Seq,
    /// Encoded dead letters to store before the acknowledgement.
    dead: Vec<Vec<u8>>,
    last_flush: Instant,
    /// Failed flushes in a row, and when to try again.
    failures: u32,
    retry_at: Option<Instant>,
    /// Failed reads in a row.
    read_failures: u32,
}

impl Default for Finish {
    fn default() -> Self {
        Finish {
            delivered: 0,
            acked: 0,
            dead: Vec::new(),
            last_flush: Instant::now(),
            failures: 0,
            retry_at: None,
            read_failures: 0,
        }
    }
}

impl Finish {
    fn pending(&self) -> bool {
        self.delivered > self.acked || !self.dead.is_empty()
    }

    /// Whether to flush now, while busy.
    fn due(&self, now: Instant) -> bool {
        self.pending()
            && match self.retry_at {
                Some(t) => now >= t,
                None => now >= self.last_flush + ACK_EVERY,
            }
    }
}

impl Pipeline {
    /// The worker of lane `i`: takes its batches in order and delivers them
    /// until shutdown and an empty queue.
    pub(super) async fn run(self: Arc<Self>, i: usize) {
        let lane = &self.lanes[i];
        match &lane.store {
            None => self.run_memory(lane).await,
            Some(store) => self.run_durable(lane, store).await,
        }
    }

    async fn run_memory(&self, lane: &Lane) {
        let max = self.target.max_batch().max(1);
        loop {
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
                    let _ = w.send(match r {
                        Delivered::Sent => Delivery::Sent,
                        Delivered::Dead(_) => Delivery::DeadLettered,
                    });
                }
            }
        }
    }

    /// The worker of a durable lane. It takes the records its senders
    /// handed over ([`Lane::take_handed`]) and reads the others past what
    /// it delivered ([`QueueStore::peek_after`]), so nothing is sent twice
    /// by this process whatever happens to the acknowledgements, which are
    /// written at most every [`ACK_EVERY`], busy or idle (after the dead
    /// letters they cover are stored), so that most fsync rounds sync the
    /// segments alone. A failed acknowledgement or
    /// dead-letter write is retried with backoff, counted and shown.
    async fn run_durable(&self, lane: &Lane, store: &QueueStore) {
        let max = self.target.max_batch().max(1);
        let mut f = Finish::default();
        // Entries are dropped as corrupt only by this worker's reads.
        let mut read = true;
        loop {
            let now = Instant::now();
            if f.due(now) {
                self.flush(lane, store, &mut f).await;
            }
            if std::mem::take(&mut read) {
                self.answer_dropped(lane, store);
            }
            // Undelivered dead letters are bounded: past the bound, wait
            // for the dead-letter store instead of reading more.
            if f.dead.len() < MAX_UNSTORED_DEAD {
                let handed = lane.take_handed(f.delivered, max);
                if !handed.is_empty() {
                    let last = handed.last().map_or(0, |h| h.0);
                    let (seqs, records): (Vec<_>, Vec<_>) = handed.into_iter().unzip();
                    self.deliver_records(lane, seqs, records, Vec::new(), last, &mut f)
                        .await;
                    continue;
                }
            }
            let entries = if f.dead.len() >= MAX_UNSTORED_DEAD {
                Ok(Vec::new())
            } else {
                read = true;
                store.peek_after(f.delivered, max)
            };
            let entries = match entries {
                Ok(e) => e,
                // Dropped and logged by the store; its sender is answered
                // on the next turn.
                Err(Error::Corrupt { .. }) => continue,
                Err(e) => {
                    f.read_failures += 1;
                    self.store_failed("read", &e);
                    if !self.backoff(lane, f.read_failures).await {
                        return;
                    }
                    continue;
                }
            };
            f.read_failures = 0;
            self.counters
                .read_back
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
            if entries.is_empty() {
                if f.pending() {
                    if f.retry_at.is_none() {
                        // Idle: acknowledge, at most every ACK_EVERY. A busy
                        // lane catches up after each of its senders' fsync
                        // rounds; an acknowledgement each time would add
                        // the ack file's fsync to most of those rounds.
                        let due = f.last_flush + ACK_EVERY;
                        if Instant::now() >= due || self.closing.load(Ordering::Acquire) {
                            self.flush(lane, store, &mut f).await;
                        } else {
                            self.wait(lane, Some(due)).await;
                        }
                        continue;
                    }
                    if self.closing.load(Ordering::Acquire) {
                        return; // What is unacknowledged is sent again later.
                    }
                    self.wait(lane, f.retry_at).await;
                    continue;
                }
                if self.closing.load(Ordering::Acquire) {
                    return;
                }
                lane.work.notified().await;
                continue;
            }
            self.deliver_entries(lane, entries, &mut f).await;
        }
    }

    /// Delivers records of consecutive entries, in order, with the
    /// outcomes of entries already finished before them (dead-lettered as
    /// undecodable): what the target refuses for good becomes a dead
    /// letter for the next flush; the senders waiting are answered, and
    /// every entry up to `last` is done.
    async fn deliver_records(
        &self,
        lane: &Lane,
        seqs: Vec<Seq>,
        records: Vec<EventRecord>,
        mut outcomes: Vec<(Seq, Delivery)>,
        last: Seq,
        f: &mut Finish,
    ) {
        let results = self.deliver(&records).await;
        for ((seq, record), r) in seqs.into_iter().zip(&records).zip(results) {
            outcomes.push(match r {
                Delivered::Sent => (seq, Delivery::Sent),
                Delivered::Dead(error) => {
                    f.dead.push(dead_letter::encode(record, &error));
                    (seq, Delivery::DeadLettered)
                }
            });
        }
        lane.finish(outcomes, last);
        f.delivered = last;
    }

    /// Delivers entries read from the store, in order: an entry that does
    /// not decode, or that the target refuses for good, becomes a dead
    /// letter for the next flush; the senders waiting are answered.
    async fn deliver_entries(&self, lane: &Lane, entries: Vec<(Seq, Vec<u8>)>, f: &mut Finish) {
        let last = entries.last().map_or(0, |e| e.0);
        let mut seqs = Vec::with_capacity(entries.len());
        let mut records = Vec::with_capacity(entries.len());
        let mut outcomes = Vec::with_capacity(entries.len());
        for (seq, bytes) in entries {
            match EventRecord::from_slice(&bytes) {
                Ok(r) => {
                    seqs.push(seq);
                    records.push(r);
                }
                Err(e) => {
                    tracing::error!(target_id = %self.target.id(), seq, error = %e, "undecodable queue entry dead-lettered");
                    self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    f.dead.push(dead_letter::encode_undecodable(
                        &bytes,
                        &format!("undecodable queue entry: {e}"),
                    ));
                    outcomes.push((seq, Delivery::DeadLettered));
                }
            }
        }
        self.deliver_records(lane, seqs, records, outcomes, last, f)
            .await;
    }

    /// Stores the pending dead letters, then acknowledges everything
    /// delivered; on failure, schedules a retry with backoff.
    async fn flush(&self, lane: &Lane, store: &QueueStore, f: &mut Finish) {
        let res = async {
            if !f.dead.is_empty() {
                self.store_dead_letters(&f.dead).await?;
                f.dead.clear();
            }
            if f.delivered > f.acked {
                store.ack_synced(f.delivered).await?;
                f.acked = f.delivered;
            }
            Ok::<(), Error>(())
        }
        .await;
        f.last_flush = Instant::now();
        match res {
            Ok(()) => {
                f.failures = 0;
                f.retry_at = None;
                self.store_ok();
                lane.space.notify_waiters();
            }
            Err(e) => {
                f.failures += 1;
                let op = if f.dead.is_empty() {
                    "acknowledge delivered events"
                } else {
                    "store dead letters"
                };
                self.store_failed(op, &e);
                f.retry_at = Some(Instant::now() + self.options.retry.delay(f.failures));
            }
        }
    }

    /// Appends dead letters to the durable store, counting discards.
    async fn store_dead_letters(&self, letters: &[Vec<u8>]) -> Result<()> {
        let d = self
            .dead_store
            .as_ref()
            .expect("a durable lane has a dead-letter store");
        let discarded = d.append(letters).await?;
        if discarded > 0 {
            self.counters
                .dead_letters_discarded
                .fetch_add(discarded, Ordering::Relaxed);
            tracing::error!(
                target_id = %self.target.id(), discarded,
                limit = self.options.dead_letter_queue_limit,
                "dead-letter store full: the oldest dead letters were discarded"
            );
        }
        Ok(())
    }

    /// Waits until `until` (or for new work, or shutdown).
    async fn wait(&self, lane: &Lane, until: Option<Instant>) {
        match until {
            Some(t) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(t) => {}
                    _ = lane.work.notified() => {}
                }
            }
            None => lane.work.notified().await,
        }
    }

    /// Answers the senders of entries the store dropped as corrupt.
    fn answer_dropped(&self, lane: &Lane, store: &QueueStore) {
        let dropped = store.take_dropped();
        if !dropped.is_empty() {
            let reason = "its queue entry was found corrupt on disk and dropped";
            lane.finish(
                dropped
                    .into_iter()
                    .map(|s| (s, Delivery::Failed(reason.to_owned()))),
                0,
            );
        }
    }

    /// Waits the retry policy's delay for attempt `attempt`; `false` when
    /// shutdown began (the caller stops: what is unfinished stays queued).
    async fn backoff(&self, lane: &Lane, attempt: u32) -> bool {
        let until = Instant::now() + self.options.retry.delay(attempt);
        loop {
            if self.closing.load(Ordering::Acquire) {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                // Shutdown wakes the worker; new work does not shorten the wait.
                _ = lane.work.notified() => {}
            }
        }
    }

    /// Delivers `records` in order, retrying transient errors and
    /// dead-lettering permanent ones; returns one result per record.
    pub(super) async fn deliver(&self, records: &[EventRecord]) -> Vec<Delivered> {
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
                    return records.iter().map(|_| Delivered::Sent).collect();
                }
                Err(e) => e,
            };
            c.failed.fetch_add(n, Ordering::Relaxed);
            match err.retry() {
                Retry::Permanent(_) if records.len() > 1 => {
                    // Find the poison events: retry one by one.
                    let mut out = Vec::with_capacity(records.len());
                    for r in records {
                        out.extend(Box::pin(self.deliver(std::slice::from_ref(r))).await);
                    }
                    return out;
                }
                Retry::Permanent(_) => {
                    return self.dead_letter(records, &err);
                }
                class => {
                    attempt += 1;
                    tracing::warn!(target_id = %self.target.id(), attempt, error = %err, "send failed, retrying");
                    if self.options.retry.exhausted(attempt) {
                        return self.dead_letter(records, &err);
                    }
                    c.online.store(false, Ordering::Relaxed);
                    let delay = self.options.retry.delay_for(&class, attempt);
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

    /// Counts and logs dead letters and keeps them in memory; the durable
    /// store is written by the lane's worker before it acknowledges.
    fn dead_letter(&self, records: &[EventRecord], err: &TargetError) -> Vec<Delivered> {
        self.counters
            .dead_lettered
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        tracing::error!(target_id = %self.target.id(), events = records.len(), error = %err, "events dead-lettered");
        let error = err.to_string();
        if self.options.dead_letter_limit > 0 {
            let mut dead = lock(&self.dead);
            for r in records {
                if dead.len() >= self.options.dead_letter_limit {
                    dead.pop_front();
                }
                dead.push_back(DeadLetter {
                    record: r.clone(),
                    error: error.clone(),
                });
            }
        }
        records
            .iter()
            .map(|_| Delivered::Dead(error.clone()))
            .collect()
    }
}
