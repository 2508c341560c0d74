//! One Kafka partition's state: its open batches (one per time partition),
//! the chain check, create-only uploads that adopt what another attempt
//! stored, and the offset it is safe to commit. No Kafka client here: the
//! consumer loop hands messages in, so this is tested on its own.
//!
//! See the [module docs](super) for the argument; the names below follow it:
//! a *T-message* is a data message (not poison) of time partition T, a
//! *chain point* the first T-message after a stored T-object.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use s3_event_core::retry::{Retry, RetryPolicy};

use super::record::Body;
use super::Counters;
use crate::manifest::Manifest;
use crate::{BatchEncoder, Compression, Encoding, Error, Result};

/// The longest `s3e-seq-runs` text a batch may need (the manifest's limit):
/// a batch whose offsets would need more is closed first, so every manifest
/// lists its offsets exactly.
const MAX_RUNS_TEXT: usize = 1000;

/// How long an object found without its manifest is re-read before its
/// records are counted instead (a writer between the object and its
/// metadata: the local-directory store writes a sidecar after the object).
pub(crate) const MANIFEST_WAIT: Duration = Duration::from_secs(3);

/// What every partition shares: the store and the batching rules.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: String,
    pub failure_dir: String,
    pub encoding: Encoding,
    pub compression: Compression,
    pub flush_size: usize,
    pub max_bytes: usize,
    pub flush_interval: Duration,
    pub retry: RetryPolicy,
    pub counters: Arc<Counters>,
    /// Look for a stored object before opening a batch (off only in tests
    /// of the collision path).
    pub chain_check: bool,
    /// [`MANIFEST_WAIT`] (shorter in tests).
    pub manifest_wait: Duration,
}

impl Shared {
    fn ext(&self) -> String {
        format!(
            "{}{}",
            self.encoding.extension(),
            if self.encoding.is_parquet() {
                ""
            } else {
                self.compression.extension()
            }
        )
    }

    /// `{prefix}{time partition}{topic}+{partition}+{offset:020}{ext}`.
    pub(crate) fn key(&self, tpart: &str, topic: &str, partition: i32, first: i64) -> Path {
        Path::from(format!(
            "{}{tpart}{topic}+{partition}+{first:020}{}",
            self.prefix,
            self.ext()
        ))
    }

    /// `{prefix}{time partition}{failure dir}/{topic}+{partition}+{offset:020}.ndjson`.
    pub(crate) fn failure_key(
        &self,
        tpart: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Path {
        Path::from(format!(
            "{}{tpart}{}/{topic}+{partition}+{offset:020}.ndjson",
            self.prefix, self.failure_dir
        ))
    }

    fn encoder(&self) -> BatchEncoder {
        BatchEncoder::new(self.encoding, self.compression).with_target_size(self.max_bytes)
    }
}

/// One message handed in: its offset, time partition and what it became.
/// The consumer loop lends both from buffers it reuses, so a message costs
/// no allocation of its own; tests hand in owned values.
#[derive(Debug)]
pub(crate) struct Incoming<'a> {
    pub offset: i64,
    pub tpart: Cow<'a, str>,
    pub body: Body<'a>,
}

/// An open batch: the records are kept beside the encoder so that, when
/// another attempt's object turns out to hold some of them, the rest can
/// be encoded again as a batch of their own. Uncompressed NDJSON keeps no
/// copy: the object's lines are the records.
#[derive(Debug)]
struct Batch {
    first: i64,
    offsets: Vec<i64>,
    /// Whether `data` and `ends` hold the records (every layout but
    /// uncompressed NDJSON).
    copied: bool,
    /// The records, end to end (one buffer, not one allocation each).
    data: Vec<u8>,
    /// Where each record ends in `data`.
    ends: Vec<usize>,
    encoder: BatchEncoder,
    opened: Instant,
    /// Length of the manifest's runs text so far, and the current run's
    /// first offset.
    runs_text: usize,
    run_start: i64,
}

/// The records a batch holds end to end in `data`, each ending at the
/// next of `ends`.
fn records<'a>(data: &'a [u8], ends: &'a [usize]) -> impl Iterator<Item = &'a [u8]> {
    std::iter::once(0)
        .chain(ends.iter().copied())
        .zip(ends.iter().copied())
        .map(|(a, b)| &data[a..b])
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

impl Batch {
    fn new(sh: &Shared, first: i64, opened: Instant) -> Batch {
        Batch {
            first,
            offsets: Vec::new(),
            copied: !(sh.encoding == Encoding::Ndjson && sh.compression == Compression::None),
            data: Vec::new(),
            ends: Vec::new(),
            encoder: sh.encoder(),
            opened,
            runs_text: 0,
            run_start: first,
        }
    }

    /// The runs text length with `offset` added.
    fn runs_text_with(&self, offset: i64) -> usize {
        let Some(&last) = self.offsets.last() else {
            return 0;
        };
        if offset == last + 1 {
            // The current run grows: its count may gain a digit.
            let count = (offset - self.run_start + 1) as u64;
            self.runs_text + digits(count) - digits(count - 1)
        } else {
            let off = (offset - self.first) as u64;
            self.runs_text + 1 + digits(off) + 1 + 1
        }
    }

    /// Adds a record, or gives the encoder's error when it refuses it.
    fn push(&mut self, offset: i64, record: &[u8]) -> Result<()> {
        self.encoder.push_checked(record)?;
        self.runs_text = self.runs_text_with(offset);
        if self.offsets.last().is_none_or(|&l| offset != l + 1) {
            self.run_start = offset;
            if self.offsets.is_empty() {
                // The first run: "0+1".
                self.runs_text = 3;
            }
        }
        self.offsets.push(offset);
        if self.copied {
            self.data.extend_from_slice(record);
            self.ends.push(self.data.len());
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.offsets.len()
    }

    fn due(&self, sh: &Shared) -> bool {
        self.len() >= sh.flush_size || self.encoder.encoded_len() >= sh.max_bytes
    }
}

/// What a stored object at a chain point holds, as far as it can be known.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Held {
    /// Its manifest: the offsets, as runs, and the SHA-256 of its bytes.
    Offsets {
        runs: Vec<(u64, u64)>,
        sha256: String,
    },
    /// Its records, counted; they are the next that many T-messages.
    /// `unlisted` holds the object's bytes when it has no manifest at all
    /// (a writer died between the object and its metadata, which the
    /// local-directory store writes second): once its offsets are known,
    /// its manifest is written for it. Without it, a manifest too long to
    /// list the offsets.
    Count {
        records: u64,
        unlisted: Option<Bytes>,
    },
}

/// Messages of one time partition still to be dropped because an object
/// without a manifest holds them.
#[derive(Debug)]
struct CountSkip {
    first: i64,
    last: i64,
    remaining: u64,
    /// The object's bytes and the offsets counted so far, when it has no
    /// manifest: see [`Held::Count`].
    unlisted: Option<(Bytes, Vec<i64>)>,
}

/// An object found without a manifest whose offsets are now known: its
/// manifest is still to be written.
#[derive(Debug)]
struct Unlisted {
    key: Path,
    bytes: Bytes,
    offsets: Vec<i64>,
}

#[derive(Debug)]
struct TimePart {
    open: Option<Batch>,
    /// Look for a stored object at the next batch's key before opening it.
    check: bool,
    count_skip: Option<CountSkip>,
}

/// One assigned partition.
#[derive(Debug)]
pub(crate) struct PartitionState {
    pub topic: String,
    pub partition: i32,
    /// `{topic}+{partition}`: the manifests' instance.
    instance: String,
    /// The next offset expected (the last seen + 1).
    next: Option<i64>,
    parts: BTreeMap<String, TimePart>,
    /// Offsets held by stored objects this attempt adopted and has not
    /// reached yet.
    skip: BTreeSet<i64>,
    /// Spans `(first, last)` of the objects stored or adopted since the
    /// last commit: a commit never cuts through one.
    stored: Vec<(i64, i64)>,
    /// The offset last committed (or found committed on assignment).
    pub committed: Option<i64>,
    /// Something was stored or adopted since the last commit.
    pub dirty: bool,
    /// Since when a stored object straddles every offset that could
    /// otherwise be committed.
    stuck_since: Option<Instant>,
    /// Objects found without a manifest, counted off to their end: their
    /// manifests are written before the next message is taken.
    unlisted: Vec<Unlisted>,
}

impl PartitionState {
    pub(crate) fn new(topic: &str, partition: i32) -> PartitionState {
        PartitionState {
            topic: topic.to_owned(),
            partition,
            instance: format!("{topic}+{partition}"),
            next: None,
            parts: BTreeMap::new(),
            skip: BTreeSet::new(),
            stored: Vec::new(),
            committed: None,
            dirty: false,
            stuck_since: None,
            unlisted: Vec::new(),
        }
    }

    /// The next offset this partition expects, if it has seen one.
    pub(crate) fn position(&self) -> Option<i64> {
        self.next
    }

    /// Records in open batches.
    pub(crate) fn open_records(&self) -> usize {
        self.parts
            .values()
            .filter_map(|t| t.open.as_ref())
            .map(Batch::len)
            .sum()
    }

    /// Takes one message. Offsets at or below one already seen are
    /// ignored (a fetch repeated by the client).
    pub(crate) async fn offer(&mut self, sh: &Shared, m: Incoming<'_>) -> Result<()> {
        self.take(sh, m).await?;
        if !self.unlisted.is_empty() {
            self.write_manifests(sh).await?;
        }
        Ok(())
    }

    /// [`offer`](Self::offer) but for the manifests of objects found
    /// without one.
    async fn take(&mut self, sh: &Shared, m: Incoming<'_>) -> Result<()> {
        if self.next.is_some_and(|n| m.offset < n) {
            return Ok(());
        }
        self.next = Some(m.offset + 1);
        let c = &sh.counters;
        c.messages.fetch_add(1, Ordering::Relaxed);
        let record = match m.body {
            Body::Poison { report, reason } => {
                return self.report(sh, &m.tpart, m.offset, report, &reason).await;
            }
            Body::Record(r) => r,
        };
        if self.skip.remove(&m.offset) {
            c.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if self.count_skipped(sh, &m.tpart, m.offset) {
            return Ok(());
        }
        let tp = self
            .parts
            .get_mut(m.tpart.as_ref())
            .expect("added by count_skipped");
        if tp.open.is_none() && tp.check && self.chain_check(sh, &m.tpart, m.offset).await? {
            return Ok(());
        }
        let tp = self
            .parts
            .get_mut(m.tpart.as_ref())
            .expect("inserted above");
        if tp
            .open
            .as_ref()
            .is_some_and(|b| b.runs_text_with(m.offset) > MAX_RUNS_TEXT)
        {
            // Its manifest could not list one more run: close it first,
            // then take this message again (it starts the next batch, or
            // an object another attempt stored there holds it).
            self.flush(sh, &m.tpart).await?;
            self.next = Some(m.offset);
            c.messages.fetch_sub(1, Ordering::Relaxed);
            return Box::pin(self.take(
                sh,
                Incoming {
                    body: Body::Record(record),
                    ..m
                },
            ))
            .await;
        }
        let batch = tp
            .open
            .get_or_insert_with(|| Batch::new(sh, m.offset, Instant::now()));
        if let Err(e) = batch.push(m.offset, &record) {
            // A record the encoder refuses (a Parquet schema mismatch):
            // reported like a message that is not JSON.
            if batch.len() == 0 {
                tp.open = None;
            }
            let reason = e.to_string();
            let report = self.refusal_report(m.offset, &record, &reason);
            return self.report(sh, &m.tpart, m.offset, report, &reason).await;
        }
        c.records.fetch_add(1, Ordering::Relaxed);
        if batch.due(sh) {
            self.flush(sh, &m.tpart).await?;
        }
        Ok(())
    }

    /// Adds `tpart`'s state if it is new; true when the message at
    /// `offset` is one of the records of an object found without a manifest
    /// (counted off, not stored again).
    fn count_skipped(&mut self, sh: &Shared, tpart: &str, offset: i64) -> bool {
        if !self.parts.contains_key(tpart) {
            self.parts.insert(
                tpart.to_owned(),
                TimePart {
                    open: None,
                    check: sh.chain_check,
                    count_skip: None,
                },
            );
        }
        let tp = self.parts.get_mut(tpart).expect("inserted above");
        let Some(cs) = &mut tp.count_skip else {
            return false;
        };
        sh.counters.skipped.fetch_add(1, Ordering::Relaxed);
        cs.remaining -= 1;
        cs.last = offset;
        if let Some((_, offsets)) = &mut cs.unlisted {
            offsets.push(offset);
        }
        if cs.remaining == 0 {
            self.stored.push((cs.first, cs.last));
            self.dirty = true;
            if let Some((bytes, offsets)) = cs.unlisted.take() {
                self.unlisted.push(Unlisted {
                    key: sh.key(tpart, &self.topic, self.partition, cs.first),
                    bytes,
                    offsets,
                });
            }
            tp.count_skip = None;
            tp.check = sh.chain_check;
        }
        true
    }

    /// Writes the manifests of the objects found without one whose
    /// offsets are now known, by putting the same bytes again create-only
    /// with the manifest: a store that keeps metadata beside the object
    /// (the local directory's sidecar) writes the missing metadata when
    /// the bytes match; any other store refuses the put as taken, and
    /// nothing changes. So `verify` and the next owner's chain check find
    /// the manifest, not only a count.
    async fn write_manifests(&mut self, sh: &Shared) -> Result<()> {
        for u in std::mem::take(&mut self.unlisted) {
            let manifest = self.manifest(&u.bytes, &u.offsets);
            let stored = put_object(sh, &u.key, &u.bytes, &manifest).await?;
            // Counted only when the manifest is there now: a store that
            // refuses the put as taken without writing it (any but the
            // local directory, or a sidecar that differs) changes nothing.
            match Manifest::read(&*sh.store, &u.key).await {
                Ok(Ok(Some(m))) if m.sha256 == manifest.sha256 => {
                    sh.counters
                        .manifests_written
                        .fetch_add(1, Ordering::Relaxed);
                    if stored {
                        tracing::warn!(key = %u.key, records = u.offsets.len(), "kafka source: an object found without a manifest was gone when its manifest was written; stored again as it was read, with the manifest");
                    } else {
                        tracing::info!(key = %u.key, records = u.offsets.len(), "kafka source: wrote the manifest of an object found without one");
                    }
                }
                found => {
                    let found = match found {
                        Ok(Ok(Some(_))) => "another manifest".to_owned(),
                        Ok(Ok(None)) => "none".to_owned(),
                        Ok(Err(bad)) => format!("a malformed one ({bad})"),
                        Err(e) => format!("no answer ({e})"),
                    };
                    tracing::warn!(key = %u.key, records = u.offsets.len(), %found, "kafka source: could not write the manifest of an object found without one (its records are stored once; verify reports the object without offsets)");
                }
            }
        }
        Ok(())
    }

    /// The manifest of a data object of this partition holding `offsets`.
    fn manifest(&self, bytes: &[u8], offsets: &[i64]) -> Manifest {
        let seqs: Vec<u64> = offsets.iter().map(|&o| o as u64).collect();
        Manifest::new(bytes, seqs.len() as u64, &seqs, &self.instance)
    }

    /// The chain check at a chain point of `tpart` (the message at
    /// `offset` would open a batch): true when an object is already stored
    /// at its key (adopted: its records are skipped), false when none is
    /// (no check in this time partition until the next chain point).
    async fn chain_check(&mut self, sh: &Shared, tpart: &str, offset: i64) -> Result<bool> {
        let key = sh.key(tpart, &self.topic, self.partition, offset);
        match Self::held(sh, &self.instance, &key, offset).await? {
            None => {
                if let Some(tp) = self.parts.get_mut(tpart) {
                    tp.check = false;
                }
                Ok(false)
            }
            Some(held) => {
                let c = &sh.counters;
                c.adopted.fetch_add(1, Ordering::Relaxed);
                c.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::info!(key = %key, "kafka source: the object at the next batch's key is already stored (an upload whose commit was lost); skipping its records");
                self.adopt(sh, tpart, &key, offset, held, &[])?;
                Ok(true)
            }
        }
    }

    /// The failure report of a record the encoder refused.
    fn refusal_report(&self, offset: i64, record: &[u8], reason: &str) -> Vec<u8> {
        let m = super::record::MessageRef {
            topic: &self.topic,
            partition: self.partition,
            offset,
            timestamp: None,
            key: None,
            payload: Some(record),
            headers: Vec::new(),
        };
        match super::record::poison(&m, reason.to_owned()) {
            Body::Poison { report, .. } => report,
            Body::Record(_) => unreachable!("poison() makes reports"),
        }
    }

    /// Stores the failure report of the message at `offset` (create-only:
    /// a redo finds it stored and is done).
    async fn report(
        &mut self,
        sh: &Shared,
        tpart: &str,
        offset: i64,
        report: Vec<u8>,
        reason: &str,
    ) -> Result<()> {
        let key = sh.failure_key(tpart, &self.topic, self.partition, offset);
        tracing::warn!(key = %key, offset, reason, "kafka source: a message that cannot be stored as JSON; its failure report goes beside the data");
        let bytes = Bytes::from(report);
        let manifest = Manifest::new(&bytes, 1, &[offset as u64], &self.instance);
        put_until_done(sh, &key, &bytes, &manifest, "application/x-ndjson", None).await?;
        sh.counters.poison.fetch_add(1, Ordering::Relaxed);
        self.dirty = true;
        Ok(())
    }

    /// What the object at `key` (a chain point at `first`) holds, or
    /// `None` when there is none.
    async fn held(sh: &Shared, instance: &str, key: &Path, first: i64) -> Result<Option<Held>> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            match Manifest::read(&*sh.store, key).await {
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => {
                    attempt += 1;
                    retry_wait(sh, &e, attempt, "reading a manifest").await;
                }
                Ok(Err(bad)) => {
                    return Err(foreign(key, &format!("its manifest is malformed: {bad}")))
                }
                Ok(Ok(Some(m))) => {
                    if m.instance != instance || m.first_seq() != Some(first as u64) {
                        return Err(foreign(
                            key,
                            &format!(
                                "its manifest names instance `{}` from offset {:?}, not `{}` from {first}",
                                m.instance,
                                m.first_seq(),
                                instance
                            ),
                        ));
                    }
                    if m.runs_omitted {
                        return Ok(Some(Held::Count {
                            records: m.records,
                            unlisted: None,
                        }));
                    }
                    return Ok(Some(Held::Offsets {
                        runs: m.runs,
                        sha256: m.sha256,
                    }));
                }
                Ok(Ok(None)) if started.elapsed() < sh.manifest_wait => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Ok(None)) => {
                    let bytes = loop {
                        match sh.store.get(key).await {
                            Ok(g) => match g.bytes().await {
                                Ok(b) => break b,
                                Err(e) => {
                                    attempt += 1;
                                    retry_wait(sh, &e, attempt, "reading an object").await;
                                }
                            },
                            Err(e) => {
                                attempt += 1;
                                retry_wait(sh, &e, attempt, "reading an object").await;
                            }
                        }
                    };
                    let d = crate::decode(key.as_ref(), &bytes)
                        .map_err(|e| foreign(key, &format!("it has no manifest and {e}")))?;
                    tracing::warn!(key = %key, records = d.records.len(), "kafka source: an object at a chain point has no manifest (its writer stopped between the object and its metadata); its records are counted");
                    return Ok(Some(Held::Count {
                        records: (d.records.len() + d.bad.len()) as u64,
                        unlisted: Some(bytes),
                    }));
                }
            }
        }
    }

    /// Takes the object at `key` (time partition `tpart`, first offset
    /// `first`) as stored: `mine` are the offsets of this attempt's batch
    /// starting at `first` (empty when found before opening one); returns
    /// how many of them it holds (a prefix).
    fn adopt(
        &mut self,
        sh: &Shared,
        tpart: &str,
        key: &Path,
        first: i64,
        held: Held,
        mine: &[i64],
    ) -> Result<usize> {
        self.dirty = true;
        let tp = self.parts.get_mut(tpart).expect("time partition present");
        tp.check = sh.chain_check;
        match held {
            Held::Offsets { runs, .. } => {
                let span = (runs[0].0 as i64, runs[runs.len() - 1].1 as i64);
                self.stored.push(span);
                let held: BTreeSet<i64> = runs
                    .iter()
                    .flat_map(|&(a, b)| a as i64..=b as i64)
                    .collect();
                // Ours are a prefix of the same chain: the object holds a
                // prefix of them, and beyond them only messages to come.
                let n = mine.iter().take_while(|o| held.contains(o)).count();
                if mine[n..].iter().any(|o| held.contains(o)) {
                    return Err(foreign(
                        key,
                        "it holds offsets of this batch that are not a prefix of it",
                    ));
                }
                let reached = mine.last().copied().unwrap_or(first);
                self.skip
                    .extend(held.into_iter().filter(|&o| o > reached && o != first));
                Ok(n)
            }
            Held::Count { records: 0, .. } => Err(foreign(key, "it holds no record")),
            Held::Count {
                records: count,
                unlisted,
            } => {
                let n = (count as usize).min(mine.len());
                // The offsets it holds, as far as known: ours it holds, or
                // the message at `first` itself, just dropped when found
                // before opening a batch.
                let known = if mine.is_empty() {
                    vec![first]
                } else {
                    mine[..n].to_vec()
                };
                let mut unlisted = unlisted.map(|bytes| (bytes, known));
                if count as usize > mine.len() {
                    let have = mine.len() as u64;
                    let dropped_now = u64::from(mine.is_empty());
                    let remaining = count - have - dropped_now;
                    let last = mine.last().copied().unwrap_or(first);
                    if remaining == 0 {
                        self.stored.push((first, last));
                    } else {
                        tp.count_skip = Some(CountSkip {
                            first,
                            last,
                            remaining,
                            unlisted: unlisted.take(),
                        });
                    }
                } else if n > 0 {
                    self.stored.push((first, mine[n - 1]));
                }
                if let Some((bytes, offsets)) = unlisted {
                    self.unlisted.push(Unlisted {
                        key: key.clone(),
                        bytes,
                        offsets,
                    });
                }
                Ok(n)
            }
        }
    }

    /// Closes and stores the open batch of `tpart`, adopting what another
    /// attempt stored at its key; the records that object lacks are stored
    /// next, as their own batch.
    pub(crate) async fn flush(&mut self, sh: &Shared, tpart: &str) -> Result<()> {
        loop {
            let Some(tp) = self.parts.get_mut(tpart) else {
                return Ok(());
            };
            let Some(batch) = tp.open.take() else {
                return Ok(());
            };
            let key = sh.key(tpart, &self.topic, self.partition, batch.first);
            let Batch {
                first,
                offsets,
                copied,
                data,
                ends,
                encoder,
                opened,
                ..
            } = batch;
            let bytes = Bytes::from(encoder.finish()?);
            let manifest = self.manifest(&bytes, &offsets);
            let stored = put_object(sh, &key, &bytes, &manifest).await?;
            let c = &sh.counters;
            if stored {
                self.stored
                    .push((first, *offsets.last().expect("batches are not empty")));
                self.dirty = true;
                c.objects.fetch_add(1, Ordering::Relaxed);
                c.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                if let Some(h) = &*c.after_upload.lock().expect("hook lock") {
                    h(key.as_ref());
                }
                return Ok(());
            }
            // The key is taken: by this very batch (a reply lost) or by
            // another attempt's batch from the same chain point.
            let held = Self::held(sh, &self.instance, &key, first)
                .await?
                .ok_or_else(|| {
                    foreign(
                        &key,
                        "the store said the key was taken, then that it is missing",
                    )
                })?;
            if let Held::Offsets { sha256, .. } = &held {
                if *sha256 == manifest.sha256 {
                    self.stored
                        .push((first, *offsets.last().expect("not empty")));
                    self.dirty = true;
                    return Ok(());
                }
            }
            c.collisions.fetch_add(1, Ordering::Relaxed);
            let n = self.adopt(sh, tpart, &key, first, held, &offsets)?;
            self.write_manifests(sh).await?;
            tracing::info!(key = %key, held = n, of = offsets.len(), "kafka source: another attempt stored a batch at this key first; its object stands, the rest of ours follows it");
            c.skipped.fetch_add(n as u64, Ordering::Relaxed);
            if n == offsets.len() {
                return Ok(());
            }
            // The rest, encoded again, from the next chain point.
            let mut rest = Batch::new(sh, offsets[n], opened);
            let mut refill = |records: &mut dyn Iterator<Item = &[u8]>| {
                offsets[n..]
                    .iter()
                    .zip(records.skip(n))
                    .try_for_each(|(o, r)| rest.push(*o, r))
            };
            if copied {
                refill(&mut records(&data, &ends))?;
            } else {
                // Uncompressed NDJSON: a record has no raw newline.
                refill(&mut bytes.split(|&b| b == b'\n'))?;
            }
            let tp = self.parts.get_mut(tpart).expect("present");
            tp.open = Some(rest);
        }
    }

    /// When the earliest open batch is due by time.
    pub(crate) fn deadline(&self, sh: &Shared) -> Option<Instant> {
        self.parts
            .values()
            .filter_map(|t| t.open.as_ref())
            .map(|b| b.opened + sh.flush_interval)
            .chain(self.stuck_since.map(|s| s + sh.flush_interval))
            .min()
    }

    /// Flushes the batches due by `now` (all of them when `now` is `None`).
    pub(crate) async fn flush_due(&mut self, sh: &Shared, now: Option<Instant>) -> Result<()> {
        let due: Vec<String> = self
            .parts
            .iter()
            .filter(|(_, t)| {
                t.open
                    .as_ref()
                    .is_some_and(|b| now.is_none_or(|n| b.opened + sh.flush_interval <= n))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for t in due {
            self.flush(sh, &t).await?;
        }
        // Batches of several time partitions that keep overlapping leave
        // no clean cut to commit at: after a flush interval of that, all
        // of them close together, which makes one.
        let Some(now) = now else { return Ok(()) };
        if self.committable() < self.uncut() {
            let since = *self.stuck_since.get_or_insert(now);
            if now.duration_since(since) >= sh.flush_interval {
                let open: Vec<String> = self
                    .parts
                    .iter()
                    .filter(|(_, t)| t.open.is_some())
                    .map(|(k, _)| k.clone())
                    .collect();
                sh.counters.forced_cuts.fetch_add(1, Ordering::Relaxed);
                for t in open {
                    self.flush(sh, &t).await?;
                }
                self.stuck_since = None;
            }
        } else {
            self.stuck_since = None;
        }
        Ok(())
    }

    /// The commit point if no stored object straddled it: the lowest
    /// offset not yet stored.
    fn uncut(&self) -> Option<i64> {
        let mut c = self.next?;
        for t in self.parts.values() {
            if let Some(b) = &t.open {
                c = c.min(b.first);
            }
            if let Some(cs) = &t.count_skip {
                c = c.min(cs.first);
            }
        }
        Some(c)
    }

    /// The offset it is safe to commit: every offset below it is stored
    /// (in an object or a failure report) and no stored object holds
    /// offsets on both sides of it. `None` before the first message.
    pub(crate) fn committable(&self) -> Option<i64> {
        let mut c = self.uncut()?;
        loop {
            let mut lowered = false;
            for &(f, l) in &self.stored {
                if f < c && c <= l {
                    c = f;
                    lowered = true;
                }
            }
            if !lowered {
                return Some(c);
            }
        }
    }

    /// Resumes after `c`, the offset found committed: offsets below it
    /// are not taken (a stale fetch).
    pub(crate) fn resume_at(&mut self, c: i64) {
        self.committed = Some(c);
        if self.next.is_none_or(|n| n < c) {
            self.next = Some(c);
        }
    }

    /// The offset a commit should carry now: the committable one, when
    /// something was stored since the last commit and it moved past it.
    pub(crate) fn to_commit(&self) -> Option<i64> {
        if !self.dirty {
            return None;
        }
        let c = self.committable()?;
        self.committed.is_none_or(|done| done < c).then_some(c)
    }

    /// Records that `c` was committed: spans wholly below it are dropped.
    /// Still dirty if more was stored since `c` was sent.
    pub(crate) fn set_committed(&mut self, c: i64) {
        self.committed = Some(c);
        self.stored.retain(|&(_, l)| l >= c);
        self.dirty = self.committable().is_some_and(|now| now > c);
    }
}

fn foreign(key: &Path, why: &str) -> Error {
    Error::Kafka {
        context: format!("the object `{key}` at a batch's key is not this partition's: {why}; not overwriting it"),
        source: None,
    }
}

async fn retry_wait(sh: &Shared, e: &object_store::Error, attempt: u32, what: &str) {
    let class = crate::upload::classify(e);
    let delay = sh.retry.delay_for(&class, attempt);
    if let Retry::Permanent(reason) = &class {
        tracing::error!(attempt, %reason, "kafka source: {what} failed; retrying in {delay:?}");
    } else {
        tracing::warn!(attempt, error = %e, "kafka source: {what} failed; retrying in {delay:?}");
    }
    sh.counters.store_retries.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(delay).await;
}

/// [`put_until_done`] of a data object: the encoding's content type and
/// the compression's content encoding.
async fn put_object(sh: &Shared, key: &Path, bytes: &Bytes, manifest: &Manifest) -> Result<bool> {
    let encoding = if sh.encoding.is_parquet() {
        None
    } else {
        sh.compression.content_encoding()
    };
    put_until_done(
        sh,
        key,
        bytes,
        manifest,
        sh.encoding.content_type(),
        encoding,
    )
    .await
}

/// Puts `bytes` create-only under `key`, retrying store failures until
/// done: `Ok(true)` when stored by this put, `Ok(false)` when the key was
/// taken. A store without create-only puts or object metadata is an error:
/// exactly once rests on both.
async fn put_until_done(
    sh: &Shared,
    key: &Path,
    bytes: &Bytes,
    manifest: &Manifest,
    content_type: &'static str,
    content_encoding: Option<&'static str>,
) -> Result<bool> {
    let put = crate::upload::Put {
        store: &*sh.store,
        content_type,
        content_encoding,
        // One put whatever the size: only a single put is create-only
        // (`max_bytes` is at most 5 GiB, S3's single-put limit).
        part_size: usize::MAX,
        attributes: true,
        create: true,
        manifest: Some(manifest),
    };
    let mut attempt = 0;
    loop {
        match put.put(key, bytes).await {
            Ok(()) => return Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => {
                // A failure report is fully determined by its message:
                // taken means done, whoever wrote it.
                return Ok(false);
            }
            Err(e @ object_store::Error::NotImplemented { .. }) => {
                return Err(Error::Kafka {
                    context: format!(
                        "the store {} cannot do create-only puts with object metadata, which the Kafka source needs for exactly once",
                        sh.store
                    ),
                    source: Some(Box::new(e)),
                })
            }
            Err(e) => {
                attempt += 1;
                retry_wait(sh, &e, attempt, &format!("uploading {key}")).await;
            }
        }
    }
}

#[cfg(test)]
mod tests;
