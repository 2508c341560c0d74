//! The worker of one lane: takes batches in order, delivers them with
//! retries, dead-letters what the target rejects, and (with `queue_dir`)
//! acknowledges the batch in the queue store, retrying a failed
//! acknowledgement or dead-letter write with backoff instead of sending
//! the batch again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

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

/// What is left to do for a delivered batch of a durable lane.
struct Finish {
    /// Encoded dead letters to store durably.
    dead: Vec<Vec<u8>>,
    /// The last entry of the batch, to acknowledge.
    ack: Seq,
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

    async fn run_durable(&self, lane: &Lane, store: &QueueStore) {
        let max = self.target.max_batch().max(1);
        let mut pending: Option<Finish> = None;
        let mut failures = 0u32;
        loop {
            // A delivered batch is finished (dead letters stored, ack
            // written) before the next is read: never sent again meanwhile.
            if let Some(f) = &mut pending {
                match self.finish(store, f).await {
                    Ok(()) => {
                        pending = None;
                        failures = 0;
                        self.store_ok();
                        lane.space.notify_waiters();
                    }
                    Err(e) => {
                        failures += 1;
                        let op = if f.dead.is_empty() {
                            "acknowledge a delivered batch"
                        } else {
                            "store dead letters"
                        };
                        self.store_failed(op, &e);
                        if !self.backoff(lane, failures).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let entries = match store.peek(max) {
                Ok(e) => e,
                Err(e) => {
                    if !matches!(e, Error::Corrupt { .. }) {
                        // A corrupt entry is dropped (and logged) by the
                        // store; its sender is answered below.
                        failures += 1;
                        self.store_failed("read", &e);
                        if !self.backoff(lane, failures).await {
                            return;
                        }
                    }
                    self.answer_dropped(lane, store);
                    continue;
                }
            };
            self.answer_dropped(lane, store);
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
            let mut outcomes = Vec::with_capacity(entries.len());
            let mut dead = Vec::new();
            for (seq, bytes) in entries {
                match EventRecord::from_slice(&bytes) {
                    Ok(r) => {
                        seqs.push(seq);
                        records.push(r);
                    }
                    Err(e) => {
                        tracing::error!(target_id = %self.target.id(), seq, error = %e, "undecodable queue entry dead-lettered");
                        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        dead.push(dead_letter::encode_undecodable(
                            &bytes,
                            &format!("undecodable queue entry: {e}"),
                        ));
                        outcomes.push((seq, Delivery::DeadLettered));
                    }
                }
            }
            let results = self.deliver(&records).await;
            for ((seq, record), r) in seqs.into_iter().zip(&records).zip(results) {
                outcomes.push(match r {
                    Delivered::Sent => (seq, Delivery::Sent),
                    Delivered::Dead(error) => {
                        dead.push(dead_letter::encode(record, &error));
                        (seq, Delivery::DeadLettered)
                    }
                });
            }
            lane.finish(outcomes, last);
            pending = Some(Finish { dead, ack: last });
        }
    }

    /// Stores the batch's dead letters, then acknowledges it.
    async fn finish(&self, store: &QueueStore, f: &mut Finish) -> Result<()> {
        if !f.dead.is_empty() {
            let d = self
                .dead_store
                .as_ref()
                .expect("a durable lane has a dead-letter store");
            let discarded = d.append(&f.dead).await?;
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
            f.dead.clear();
        }
        store.ack(f.ack)
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
                    return self.dead_letter(records, &err);
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
                        return self.dead_letter(records, &err);
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
