//! A durable FIFO of opaque byte entries in a local directory: the store
//! behind a target's `queue_dir`.
//!
//! ```
//! use s3_event_targets::{FsyncPolicy, QueueStore, QueueStoreOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let options = QueueStoreOptions {
//!     fsync: FsyncPolicy::Always,
//!     ..QueueStoreOptions::default()
//! };
//! let store = QueueStore::open(dir.path(), options.clone())?;
//! let first = store.append(b"event 1")?; // on disk and fsynced: `Always`
//! store.append_batch(&[b"event 2", b"event 3"])?;
//!
//! let batch = store.peek(2)?; // oldest first, not removed
//! assert_eq!(batch[0], (first, b"event 1".to_vec()));
//! store.ack(batch[1].0)?; // delivered: everything up to "event 2"
//! drop(store);
//!
//! let store = QueueStore::open(dir.path(), options)?; // a restart
//! assert_eq!(store.peek(10)?, vec![(first + 2, b"event 3".to_vec())]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # On disk
//!
//! The entries are the frames of a [durable log](s3_event_core::log)
//! (`<segment>.log` files, one exclusive lock on the directory, checksummed
//! frames, grouped fsyncs): an entry's sequence number is its segment's base
//! plus its index in the segment. Beside it:
//!
//! - `acks` — the ack cursor, an append-only log of 12-byte records
//!   `[seq: u64 LE][crc32 of those 8 bytes: u32 LE]`; the last valid record
//!   wins. An ack costs one small write and rides on the log's next fsync
//!   round. Once it reaches 64 KiB it is replaced by a single record
//!   (temporary file, fsync, rename).
//!
//! A segment whose entries are all acknowledged is deleted, except the newest
//! one (its base keeps the sequence numbers going). In memory the store keeps
//! 32 bytes per unacknowledged entry (its position), not the payloads.
//! Segments of the first format (no header) are read, never appended to.
//!
//! # Durability
//!
//! Every `append` writes its frames with one `write` before it returns, so
//! they survive the process being killed. A write that fails part-way is cut
//! back and its sequence numbers are never used again. Surviving power loss
//! needs an fsync, which [`FsyncPolicy`] groups:
//!
//! - `Always`: `append`, `append_batch` and `ack` return once fsynced.
//! - `Every(d)`: fsync rounds start at most once per `d` when a caller
//!   waits: [`QueueStore::sync`], [`QueueStore::append_durable`] (blocking)
//!   or [`QueueStore::append_batch_synced`] (async). Callers that wait
//!   together share a round (group commit). What nobody waits for (acks)
//!   is fsynced in the background 100 ms (or `d`, if longer) after the last
//!   round.
//! - `Never`: no fsync; `sync` returns at once.
//!
//! A failed fsync is reported to every caller whose writes it covered, also
//! if a later one succeeds, and appends move to a new segment.
//!
//! # Recovery
//!
//! [`QueueStore::open`] reads every segment in order and checks each frame.
//! The first bad frame of the *newest* segment is a torn write: the file is
//! cut there and the cut reported in [`Recovery::truncated`]. A bad frame in
//! an *older* segment (left by a failed write that could not be cut back,
//! or by damage) is reported in [`Recovery::corrupt`] as an
//! [`Error::Corrupt`] naming the file and offset, and the rest of that
//! segment is skipped. Recovery never delivers an entry that failed its
//! checksum; [`QueueStore::peek`] checks them again when it reads.
//!
//! Only one `QueueStore` may have a directory open at a time, in one process
//! or across processes: a second [`QueueStore::open`] fails naming the
//! holder.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use s3_event_core::log::FsyncPolicy;
use s3_event_core::log::{self, Legacy, Log, LogOptions, SideFile};

use crate::error::{Error, Result};

/// Sequence number of an entry: assigned by [`QueueStore::append`],
/// increasing by one per entry, starting at 1, never reused in a directory.
pub type Seq = u64;

/// The largest entry a frame can hold.
pub const MAX_ENTRY_BYTES: usize = log::MAX_PAYLOAD;

const HEADER: u64 = 8;
const SEGMENT_SUFFIX: &str = "log";
const MAGIC: [u8; 8] = *b"S3EQUE02";
const ACK_LOG: &str = "acks";
#[cfg(test)]
const ACK_LOG_TMP: &str = "acks.tmp";
const ACK_RECORD: usize = 12;
const ACK_LOG_COMPACT_BYTES: u64 = 64 * 1024;
/// Most dropped entry numbers kept for [`QueueStore::take_dropped`].
const MAX_DROPPED: usize = 4096;
/// Most bytes `peek` reads at once (unless one entry is larger).
const READ_CHUNK: u64 = 1 << 20;

/// How long after the last fsync round what nobody waits for (acks, and
/// [`QueueStore::append`] without a sync) is fsynced by the log's thread.
/// Appenders that must not lose an entry wait for its round; a lost ack
/// only delivers again. Longer than the default interval on purpose: a
/// background round in a burst of appends made the sync that followed
/// wait for it and then run its own, and contended with the appender
/// (`benches/queue_store.rs`, `segment_log/256`).
const BACKGROUND_FSYNC: std::time::Duration = std::time::Duration::from_millis(100);

/// Options of [`QueueStore::open`].
#[derive(Clone, Debug)]
pub struct QueueStoreOptions {
    /// Most unacknowledged entries the queue holds; appends beyond it fail
    /// with [`Error::QueueFull`]. Default 100000, as MinIO's `queue_limit`.
    pub queue_limit: usize,
    /// When appends are fsynced. Default [`FsyncPolicy::Every`] 1 ms.
    pub fsync: FsyncPolicy,
    /// Size at which a new segment file is started. Default 16 MiB.
    pub segment_bytes: u64,
    /// Faults to inject into the log's file operations (tests).
    pub faults: Option<std::sync::Arc<log::Faults>>,
}

impl PartialEq for QueueStoreOptions {
    fn eq(&self, other: &Self) -> bool {
        self.queue_limit == other.queue_limit
            && self.fsync == other.fsync
            && self.segment_bytes == other.segment_bytes
    }
}

impl Eq for QueueStoreOptions {}

impl Default for QueueStoreOptions {
    fn default() -> Self {
        QueueStoreOptions {
            queue_limit: 100_000,
            fsync: FsyncPolicy::Every(std::time::Duration::from_millis(1)),
            segment_bytes: 16 << 20,
            faults: None,
        }
    }
}

impl QueueStoreOptions {
    /// Checks every option; the error names the option and the rule.
    pub fn validate(&self) -> Result<()> {
        if self.queue_limit == 0 {
            return Err(Error::InvalidOption {
                option: "queue_limit",
                rule: "`queue_limit` must be > 0",
            });
        }
        if self.segment_bytes == 0 {
            return Err(Error::InvalidOption {
                option: "segment_bytes",
                rule: "`segment_bytes` must be > 0",
            });
        }
        Ok(())
    }
}

/// What [`QueueStore::open`] found and repaired.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Recovery {
    /// Segment files found.
    pub segments: usize,
    /// Unacknowledged entries restored.
    pub entries: usize,
    /// The ack cursor read back: every entry up to it was acknowledged.
    pub acked: Seq,
    /// The torn tail cut from the newest segment, if any.
    pub truncated: Option<TruncatedTail>,
    /// Bad frames in older segments, as [`Error::Corrupt`]; the rest of each
    /// such segment was skipped.
    pub corrupt: Vec<Error>,
}

/// A torn or corrupt tail cut from the newest segment during recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TruncatedTail {
    /// The segment file.
    pub path: PathBuf,
    /// Where the file was cut: the end of its last good frame.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    /// Why the frame at `offset` was rejected.
    pub reason: &'static str,
}

/// Counters of a [`QueueStore`], for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Unacknowledged entries.
    pub entries: usize,
    /// Segment files on disk.
    pub segments: usize,
    /// Bytes in segment files.
    pub disk_bytes: u64,
    /// Completed fsync rounds (one round syncs every dirty file).
    pub fsyncs: u64,
    /// Appends that wrote entries, one write each (an append of several
    /// entries is one).
    pub writes: u64,
    /// Entries dropped because [`QueueStore::peek`] found them corrupt.
    pub corrupt_dropped: u64,
}

/// A durable FIFO of byte entries in a directory. See the [module docs](self).
///
/// All methods take `&self`; the store is `Send + Sync` and meant to be
/// shared in an `Arc`. Calls are serialised by a mutex, except fsyncs, which
/// run outside it so that appends go on while one is in flight.
#[derive(Debug)]
pub struct QueueStore {
    dir: PathBuf,
    options: QueueStoreOptions,
    log: Log,
    state: Mutex<State>,
    recovery: Recovery,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    seq: Seq,
    segment: u64,
    offset: u64,
    len: u32,
}

#[derive(Debug)]
struct State {
    /// Unacknowledged entries, oldest first.
    index: VecDeque<Slot>,
    /// Unacknowledged entries per segment (every segment on disk is listed).
    live: BTreeMap<u64, usize>,
    next_seq: Seq,
    acked: Seq,
    acks: SideFile,
    read_buf: Vec<u8>,
    corrupt_dropped: u64,
    /// Numbers of the entries `peek` dropped, not yet taken.
    dropped: VecDeque<Seq>,
}

impl Recovery {
    /// What the log found on opening, with the ack cursor read.
    fn found(found: log::Recovery, acked: Seq) -> Recovery {
        Recovery {
            segments: found.segments,
            acked,
            truncated: found.truncated.map(|d| TruncatedTail {
                path: d.path,
                offset: d.offset,
                bytes: d.bytes,
                reason: d.reason,
            }),
            corrupt: found
                .corrupt
                .into_iter()
                .map(|d| Error::Corrupt {
                    path: d.path,
                    offset: d.offset,
                    reason: d.reason,
                })
                .collect(),
            ..Recovery::default()
        }
    }
}

impl QueueStore {
    /// Opens the queue in `dir` (created if missing) and recovers it: see
    /// [Recovery](self#recovery). What was found is in [`Self::recovery`].
    /// Fails with [`Error::Log`] naming the holder if another store has the
    /// directory open.
    pub fn open(dir: impl AsRef<Path>, options: QueueStoreOptions) -> Result<Self> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let log_options = LogOptions::new(SEGMENT_SUFFIX, MAGIC)
            .with_background(BACKGROUND_FSYNC)
            // Only acknowledged segments are removed, and acknowledged
            // entries are skipped on open: a removal a power cut undoes
            // (or a hole where an older one was undone) brings back only
            // entries this store skips or has delivered. The directory
            // fsync after each removal cost one more fsync per segment,
            // inside `ack`, under the store's lock.
            .with_sync_removals(false)
            .with_legacy(Legacy::Headerless)
            .with_segment_bytes(options.segment_bytes)
            .with_fsync(options.fsync)
            .with_what("queue store")
            .with_faults(options.faults.clone());
        let mut frames = Vec::new();
        let (log, found) = Log::open(&dir, log_options, |f| {
            frames.push(Slot {
                seq: f.base + f.index,
                segment: f.segment,
                offset: f.offset,
                len: f.payload.len() as u32,
            })
        })?;
        let (acks, acked) = open_acks(&log)?;

        let mut recovery = Recovery::found(found, acked);
        let segments = log.segments();
        let mut live: BTreeMap<u64, usize> = segments.iter().map(|s| (s.segment, 0)).collect();
        let mut index = VecDeque::new();
        for slot in frames {
            // Entries must come in increasing order; anything else (an
            // overlapping segment) is not delivered twice.
            if slot.seq > acked && index.back().is_none_or(|s: &Slot| slot.seq > s.seq) {
                index.push_back(slot);
                *live.entry(slot.segment).or_default() += 1;
            }
        }
        recovery.entries = index.len();
        let end = segments.last().map_or(1, |s| s.base + s.frames);
        let next_seq = end.max(acked + 1).max(1);
        if next_seq != end {
            // The ack cursor is ahead of the data (fsyncs off and the
            // machine crashed): new entries start a segment at `next_seq`.
            log.seal();
        }
        let store = QueueStore {
            state: Mutex::new(State {
                index,
                live,
                next_seq,
                acked,
                acks,
                read_buf: Vec::new(),
                corrupt_dropped: 0,
                dropped: VecDeque::new(),
            }),
            dir,
            options,
            log,
            recovery,
        };
        store.reclaim(&mut store.state());
        tracing::debug!(
            dir = %store.dir.display(), entries = store.recovery.entries, acked,
            "queue store opened"
        );
        Ok(store)
    }

    /// The directory of this queue.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &QueueStoreOptions {
        &self.options
    }

    /// What [`Self::open`] found: entries restored, tails cut, corruption.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Appends one entry and returns its sequence number.
    ///
    /// The entry is written to its file before this returns (it survives a
    /// crash of the process); with [`FsyncPolicy::Always`] it is also
    /// fsynced, otherwise call [`Self::sync`]. Fails with
    /// [`Error::QueueFull`] when [`Self::len`] `>= queue_limit`.
    pub fn append(&self, entry: &[u8]) -> Result<Seq> {
        Ok(self.append_batch(&[entry])?.start)
    }

    /// Appends one entry and returns once it is durable: fsynced, unless the
    /// policy is [`FsyncPolicy::Never`]. Concurrent callers share fsyncs
    /// (see [`Self::sync`]); this waits only for the fsync that covers this
    /// entry, not for appends made after it.
    pub fn append_durable(&self, entry: &[u8]) -> Result<Seq> {
        Ok(self.append_batch_durable(&[entry])?.start)
    }

    /// Appends entries in order, with one write, and returns their sequence
    /// numbers. All or nothing: fails with [`Error::QueueFull`] if they do
    /// not all fit under `queue_limit`. Durability as for [`Self::append`].
    pub fn append_batch<E: AsRef<[u8]>>(&self, entries: &[E]) -> Result<Range<Seq>> {
        let (seqs, token) = self.write_entries(entries)?;
        if self.options.fsync == FsyncPolicy::Always {
            self.log.sync_to(token)?;
        }
        Ok(seqs)
    }

    /// [`Self::append_batch`], returning once the entries are durable as
    /// for [`Self::append_durable`].
    pub fn append_batch_durable<E: AsRef<[u8]>>(&self, entries: &[E]) -> Result<Range<Seq>> {
        let (seqs, token) = self.write_entries(entries)?;
        self.log.sync_to(token)?;
        Ok(seqs)
    }

    /// [`Self::append_batch_durable`] for async callers: waits for the fsync
    /// without blocking a thread (the log's fsync thread runs it), so that
    /// concurrent requests on a few runtime threads share fsync rounds.
    pub async fn append_batch_synced<E: AsRef<[u8]>>(&self, entries: &[E]) -> Result<Range<Seq>> {
        let (seqs, durable) = self.append_batch_then(entries, |_| {})?;
        durable.await?;
        Ok(seqs)
    }

    /// [`Self::append_batch_synced`] in two steps: writes the entries,
    /// calls `written` with their numbers while no reader can see them yet
    /// (before [`Self::peek_after`] can return them), and returns the
    /// numbers with a future that resolves once they are durable. Lets a
    /// caller hand what it wrote to a reader in memory, keyed by number,
    /// before the reader could look for it in the store; `written` must
    /// not call into this store.
    pub fn append_batch_then<E: AsRef<[u8]>>(
        &self,
        entries: &[E],
        written: impl FnOnce(Range<Seq>),
    ) -> Result<(Range<Seq>, Durable)> {
        let (seqs, token) = self.write_entries_then(entries, written)?;
        Ok((
            seqs,
            Durable {
                synced: self.log.synced(token),
            },
        ))
    }

    /// Writes the frames of `entries`; returns their numbers and the token
    /// a sync must reach to cover them.
    fn write_entries<E: AsRef<[u8]>>(&self, entries: &[E]) -> Result<(Range<Seq>, log::Token)> {
        self.write_entries_then(entries, |_| {})
    }

    /// [`Self::write_entries`], calling `written` before the state lock is
    /// released.
    fn write_entries_then<E: AsRef<[u8]>>(
        &self,
        entries: &[E],
        written: impl FnOnce(Range<Seq>),
    ) -> Result<(Range<Seq>, log::Token)> {
        let mut st = self.state();
        let start = st.next_seq;
        if entries.is_empty() {
            return Ok((start..start, 0));
        }
        if st.index.len() + entries.len() > self.options.queue_limit {
            return Err(Error::QueueFull {
                dir: self.dir.clone(),
                limit: self.options.queue_limit,
            });
        }
        for e in entries {
            let len = e.as_ref().len();
            if len > MAX_ENTRY_BYTES {
                return Err(Error::EntryTooLarge {
                    len,
                    max: MAX_ENTRY_BYTES,
                });
            }
        }
        let n = entries.len() as u64;
        let a = match self.log.append(entries, start) {
            Ok(a) => a,
            Err(e) => {
                // Frames of a failed write may survive in a segment that
                // could not be cut back: never give their numbers again.
                st.next_seq += n;
                return Err(e.into());
            }
        };
        let first = a.base + a.index;
        debug_assert_eq!(
            first, start,
            "a segment's frames are numbered from its base"
        );
        let mut offset = a.offset;
        for (i, e) in entries.iter().enumerate() {
            let len = e.as_ref().len() as u32;
            st.index.push_back(Slot {
                seq: first + i as u64,
                segment: a.segment,
                offset,
                len,
            });
            offset += HEADER + u64::from(len);
        }
        let started = !st.live.contains_key(&a.segment);
        *st.live.entry(a.segment).or_default() += entries.len();
        st.next_seq = first + n;
        if started {
            // The previous newest segment may now go.
            self.reclaim(&mut st);
        }
        written(first..first + n);
        Ok((first..first + n, a.token))
    }

    /// Makes every append and ack that returned before this call durable:
    /// fsyncs the files written since the last fsync, unless another caller's
    /// fsync already covers them (group commit). With
    /// [`FsyncPolicy::Every`]`(d)` it waits until `d` has passed since the
    /// previous fsync started; with [`FsyncPolicy::Never`] it returns at once.
    ///
    /// If an fsync fails, every caller whose writes it covered gets the error
    /// (their data may be lost, even if a later fsync succeeds), and appends
    /// move to a new segment.
    pub fn sync(&self) -> Result<()> {
        Ok(self.log.sync()?)
    }

    /// Syncs and closes the store, reporting an fsync error that dropping
    /// it would only log.
    pub fn close(self) -> Result<()> {
        self.sync()
    }

    /// Syncs and releases the directory (its lock) while the store may still
    /// be shared: another store may open the directory at once. Appends
    /// afterwards fail; reads of what is in memory go on.
    pub fn release(&self) -> Result<()> {
        Ok(self.log.close()?)
    }

    /// Up to `max` of the oldest unacknowledged entries, in order, without
    /// removing them.
    ///
    /// Each entry's checksum is verified. If one fails (the disk changed
    /// under us), that entry is dropped from the queue, counted in
    /// [`QueueStats::corrupt_dropped`] and reported as [`Error::Corrupt`];
    /// the next call returns the entries around it. The dropped entry's
    /// number is kept for [`Self::take_dropped`].
    pub fn peek(&self, max: usize) -> Result<Vec<(Seq, Vec<u8>)>> {
        self.peek_after(0, max)
    }

    /// [`Self::peek`] of the unacknowledged entries numbered above `after`:
    /// reads a queue through, a chunk at a time, without acknowledging it.
    pub fn peek_after(&self, after: Seq, max: usize) -> Result<Vec<(Seq, Vec<u8>)>> {
        let mut st = self.state();
        let mut i = st.index.partition_point(|s| s.seq <= after);
        let mut out = Vec::with_capacity(max.min(st.index.len() - i));
        let mut chunk = std::mem::take(&mut st.read_buf);
        while out.len() < max && i < st.index.len() {
            // One read per run of entries in the same segment, of at most
            // READ_CHUNK bytes unless one entry is larger.
            let first = st.index[i];
            let mut j = i + 1;
            while j < st.index.len()
                && j - i < max - out.len()
                && st.index[j].segment == first.segment
                && st.index[j].offset + HEADER + u64::from(st.index[j].len) - first.offset
                    <= READ_CHUNK
            {
                j += 1;
            }
            let last = st.index[j - 1];
            let end = last.offset + HEADER + u64::from(last.len);
            chunk.resize((end - first.offset) as usize, 0);
            self.log.read_at(first.segment, first.offset, &mut chunk)?;
            for k in i..j {
                let slot = st.index[k];
                let at = (slot.offset - first.offset) as usize;
                let frame = &chunk[at..at + (HEADER as usize) + slot.len as usize];
                match log::decode_frame(frame) {
                    Some(payload) if payload.len() == slot.len as usize => {
                        out.push((slot.seq, payload.to_vec()));
                    }
                    _ => {
                        let path = self.segment_path(slot.segment);
                        tracing::error!(
                            path = %path.display(), offset = slot.offset, seq = slot.seq,
                            "queue store: entry failed its checksum, dropping it"
                        );
                        st.index.remove(k);
                        if let Some(n) = st.live.get_mut(&slot.segment) {
                            *n -= 1;
                        }
                        st.corrupt_dropped += 1;
                        if st.dropped.len() == MAX_DROPPED {
                            st.dropped.pop_front();
                        }
                        st.dropped.push_back(slot.seq);
                        return Err(Error::Corrupt {
                            path,
                            offset: slot.offset,
                            reason: "checksum mismatch",
                        });
                    }
                }
            }
            i = j;
        }
        if chunk.capacity() <= READ_CHUNK as usize {
            st.read_buf = chunk;
        }
        Ok(out)
    }

    /// The sequence numbers of the entries [`Self::peek`] dropped as
    /// corrupt since the last call, oldest first (the last
    /// 4096 are kept), so that a caller waiting for one of them can be told.
    pub fn take_dropped(&self) -> Vec<Seq> {
        self.state().dropped.drain(..).collect()
    }

    /// Acknowledges every entry with a sequence number `<= up_to` (numbers not
    /// yet assigned are ignored, so a later append is never pre-acknowledged).
    /// Segments left with no unacknowledged entry are deleted. The cursor is
    /// persisted with the fsync policy; after a crash before that, entries
    /// are delivered again (at least once).
    pub fn ack(&self, up_to: Seq) -> Result<()> {
        if let Some(token) = self.record_ack(up_to)? {
            if self.options.fsync == FsyncPolicy::Always {
                self.log.sync_to(token)?;
            }
        }
        Ok(())
    }

    /// [`Self::ack`] for async callers: waits for the fsync (with
    /// [`FsyncPolicy::Always`]) without blocking a thread, in the same
    /// rounds as the appends.
    pub async fn ack_synced(&self, up_to: Seq) -> Result<()> {
        if let Some(token) = self.record_ack(up_to)? {
            if self.options.fsync == FsyncPolicy::Always {
                self.log.synced(token).await?;
            }
        }
        Ok(())
    }

    /// Writes the ack cursor and forgets the entries up to `up_to`; returns
    /// the token a sync must reach, `None` when nothing was new.
    fn record_ack(&self, up_to: Seq) -> Result<Option<log::Token>> {
        let mut st = self.state();
        let up_to = up_to.min(st.next_seq - 1);
        if up_to <= st.acked {
            return Ok(None);
        }
        let token = write_ack(&mut st.acks, up_to)?;
        st.acked = up_to;
        while let Some(&slot) = st.index.front() {
            if slot.seq > up_to {
                break;
            }
            st.index.pop_front();
            if let Some(n) = st.live.get_mut(&slot.segment) {
                *n -= 1;
            }
        }
        self.reclaim(&mut st);
        Ok(Some(token))
    }

    /// Number of unacknowledged entries.
    pub fn len(&self) -> usize {
        self.state().index.len()
    }

    /// Whether every entry is acknowledged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters for metrics.
    pub fn stats(&self) -> QueueStats {
        let entries = self.state().index.len();
        let log = self.log.stats();
        QueueStats {
            entries,
            segments: log.segments,
            disk_bytes: log.disk_bytes,
            fsyncs: log.fsyncs,
            writes: log.writes,
            corrupt_dropped: self.state().corrupt_dropped,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is updated only after the I/O it describes succeeded, so
        // it stays consistent if a thread panicked while holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn segment_path(&self, segment: u64) -> PathBuf {
        self.dir.join(format!("{segment:020}.{SEGMENT_SUFFIX}"))
    }

    /// Deletes the oldest segments that hold no unacknowledged entry (never
    /// the newest); a failure is logged and retried after the next ack.
    fn reclaim(&self, st: &mut State) {
        let through = st
            .live
            .iter()
            .take_while(|(_, n)| **n == 0)
            .map(|(s, _)| *s)
            .last();
        let Some(through) = through else { return };
        if let Err(e) = self.log.remove_through(through) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "queue store: cannot delete an acknowledged segment");
        }
        let on_disk: std::collections::BTreeSet<u64> =
            self.log.segments().iter().map(|s| s.segment).collect();
        st.live.retain(|s, _| on_disk.contains(s));
    }
}

/// The future of [`QueueStore::append_batch_then`]: resolves once the
/// entries are durable (fsynced by the log's thread, shared with other
/// appenders' rounds), or with the error of the round that should have
/// covered them. A clone waits for the same entries.
#[derive(Debug, Clone)]
#[must_use = "the entries are not known to be durable until this resolves"]
pub struct Durable {
    synced: log::Synced,
}

impl std::future::Future for Durable {
    type Output = Result<()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<()>> {
        std::pin::Pin::new(&mut self.synced)
            .poll(cx)
            .map_err(Error::from)
    }
}

impl Drop for QueueStore {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::error!(dir = %self.dir.display(), error = %e, "queue store: sync on drop failed");
        }
    }
}

/// Opens the ack log and returns it with the cursor it holds, cutting a
/// torn tail.
fn open_acks(log: &Log) -> Result<(SideFile, Seq)> {
    let (mut file, bytes) = log.side_file(ACK_LOG)?;
    let mut acked = 0;
    let mut valid = 0;
    for record in bytes.chunks_exact(ACK_RECORD) {
        let (seq, crc) = record.split_at(8);
        if crc32fast::hash(seq).to_le_bytes() != crc {
            break;
        }
        acked = u64::from_le_bytes(seq.try_into().expect("8 bytes")).max(acked);
        valid += ACK_RECORD;
    }
    if valid < bytes.len() {
        tracing::warn!(
            dir = %log.dir().display(), bytes = bytes.len() - valid,
            "queue store: cutting torn tail of the ack log"
        );
        file.truncate(valid as u64)?;
    }
    Ok((file, acked))
}

/// Records `seq` in the ack log (replacing it by one record once it is
/// large); returns the token that makes it durable.
fn write_ack(acks: &mut SideFile, seq: Seq) -> Result<log::Token> {
    let record = ack_record(seq);
    if acks.len() + ACK_RECORD as u64 > ACK_LOG_COMPACT_BYTES {
        return Ok(acks.replace(&record)?);
    }
    Ok(acks.append(&record)?)
}

fn ack_record(seq: Seq) -> [u8; ACK_RECORD] {
    let seq = seq.to_le_bytes();
    let mut record = [0u8; ACK_RECORD];
    record[..8].copy_from_slice(&seq);
    record[8..].copy_from_slice(&crc32fast::hash(&seq).to_le_bytes());
    record
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::*;

    fn options(segment_bytes: u64) -> QueueStoreOptions {
        QueueStoreOptions {
            fsync: FsyncPolicy::Never,
            segment_bytes,
            ..QueueStoreOptions::default()
        }
    }

    fn entry(i: usize) -> Vec<u8> {
        format!("entry-{i:04}-{}", "x".repeat(i % 7)).into_bytes()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        files.sort();
        files
    }

    fn payloads(entries: Vec<(Seq, Vec<u8>)>) -> Vec<Vec<u8>> {
        entries.into_iter().map(|(_, p)| p).collect()
    }

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<QueueStore>();
        check::<Error>();
    }

    #[test]
    fn fifo_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let store = QueueStore::open(dir.path(), options(100)).unwrap();
        let mut expected = Vec::new();
        for i in 0..40 {
            let seq = store.append(&entry(i)).unwrap();
            assert_eq!(seq, i as u64 + 1);
            expected.push((seq, entry(i)));
        }
        let batch: Vec<Vec<u8>> = (40..50).map(entry).collect();
        assert_eq!(store.append_batch(&batch).unwrap(), 41..51);
        expected.extend((40..50).map(|i| (i as u64 + 1, entry(i))));
        assert!(segment_files(dir.path()).len() > 5, "small segments rotate");
        assert_eq!(store.len(), 50);
        assert_eq!(store.peek(100).unwrap(), expected);
        assert_eq!(store.peek(7).unwrap(), expected[..7]);
        assert!(store.peek(0).unwrap().is_empty());
    }

    #[test]
    fn ack_reclaims_segment_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = QueueStore::open(dir.path(), options(100)).unwrap();
        for i in 0..40 {
            store.append(&entry(i)).unwrap();
        }
        let before = segment_files(dir.path());
        store.ack(20).unwrap();
        let after = segment_files(dir.path());
        assert!(after.len() < before.len(), "{before:?} -> {after:?}");
        assert_eq!(after.last(), before.last());
        assert_eq!(store.peek(1).unwrap()[0].0, 21);
        store.ack(40).unwrap();
        assert!(store.is_empty());
        assert_eq!(segment_files(dir.path()), [before.last().unwrap().clone()]);
        assert_eq!(store.stats().segments, 1);
        // An entry that does not fit starts the next segment, and the last
        // acked one goes too.
        store.append(&[b'x'; 100]).unwrap();
        assert!(!segment_files(dir.path()).contains(before.last().unwrap()));
        assert_eq!(segment_files(dir.path()).len(), 1);
    }

    /// Removals are not followed by a directory fsync: a power cut may undo
    /// any of them, also an older one while a newer one stays. Whatever
    /// comes back holds only acknowledged entries, which open skips.
    #[test]
    fn removals_a_power_cut_undoes_bring_back_nothing_delivered() {
        for restore in [&[0usize, 1, 2][..], &[0], &[1], &[0, 2]] {
            let dir = tempfile::tempdir().unwrap();
            let store = QueueStore::open(dir.path(), options(100)).unwrap();
            for i in 0..40 {
                store.append(&entry(i)).unwrap();
            }
            let saved: Vec<(PathBuf, Vec<u8>)> = segment_files(dir.path())
                .into_iter()
                .map(|p| {
                    let b = fs::read(&p).unwrap();
                    (p, b)
                })
                .collect();
            store.ack(30).unwrap();
            let removed: Vec<&(PathBuf, Vec<u8>)> =
                saved.iter().filter(|(p, _)| !p.exists()).collect();
            assert!(removed.len() >= 3, "{} removed", removed.len());
            store.close().unwrap();
            // The power cut: these removals did not reach the disk.
            for &i in restore {
                fs::write(&removed[i].0, &removed[i].1).unwrap();
            }
            let store = QueueStore::open(dir.path(), options(100)).unwrap();
            let left: Vec<Seq> = store.peek(100).unwrap().iter().map(|e| e.0).collect();
            assert_eq!(
                left,
                (31..=40).collect::<Vec<Seq>>(),
                "restored {restore:?}"
            );
        }
    }

    #[test]
    fn reopen_after_clean_close_restores_unacked_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = QueueStore::open(dir.path(), options(200)).unwrap();
        for i in 0..30 {
            store.append(&entry(i)).unwrap();
        }
        store.ack(12).unwrap();
        store.close().unwrap();

        let store = QueueStore::open(dir.path(), options(200)).unwrap();
        assert_eq!(store.len(), 18);
        assert_eq!(store.recovery().entries, 18);
        assert_eq!(store.recovery().acked, 12);
        assert!(store.recovery().truncated.is_none());
        let got = store.peek(100).unwrap();
        assert_eq!(got.first().unwrap().0, 13);
        assert_eq!(payloads(got), (12..30).map(entry).collect::<Vec<_>>());
        assert_eq!(store.append(b"next").unwrap(), 31, "numbers go on");
    }

    #[test]
    fn ack_cursor_survives_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = QueueStore::open(dir.path(), options(4096)).unwrap();
        // More acks than fit before the ack log is compacted.
        let n = 2 * ACK_LOG_COMPACT_BYTES as usize / ACK_RECORD + 10;
        for i in 0..n {
            let seq = store.append(&entry(i)).unwrap();
            store.ack(seq).unwrap();
        }
        store.append(b"last").unwrap();
        assert!(fs::metadata(dir.path().join(ACK_LOG)).unwrap().len() <= ACK_LOG_COMPACT_BYTES);
        drop(store);
        let store = QueueStore::open(dir.path(), options(4096)).unwrap();
        assert_eq!(store.recovery().acked, n as u64);
        assert_eq!(
            store.peek(10).unwrap(),
            vec![(n as u64 + 1, b"last".to_vec())]
        );
        assert!(!dir.path().join(ACK_LOG_TMP).exists());
    }

    #[test]
    fn torn_ack_log_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = QueueStore::open(dir.path(), options(4096)).unwrap();
        for i in 0..5 {
            store.append(&entry(i)).unwrap();
        }
        store.ack(2).unwrap();
        drop(store);
        let mut log = OpenOptions::new()
            .append(true)
            .open(dir.path().join(ACK_LOG))
            .unwrap();
        log.write_all(&ack_record(4)[..7]).unwrap();
        drop(log);
        let store = QueueStore::open(dir.path(), options(4096)).unwrap();
        assert_eq!(store.recovery().acked, 2);
        assert_eq!(store.len(), 3);
    }

    fn five_entries(dir: &Path) -> PathBuf {
        let store = QueueStore::open(dir, options(1 << 20)).unwrap();
        for i in 0..5 {
            store.append(&entry(i)).unwrap();
        }
        drop(store);
        segment_files(dir).pop().unwrap()
    }

    fn assert_cut_to_four(dir: &Path, segment: &Path, good_len: u64, cut: u64, reason: &str) {
        let store = QueueStore::open(dir, options(1 << 20)).unwrap();
        let tail = store.recovery().truncated.clone().expect("tail cut");
        assert_eq!(tail.path, segment);
        assert_eq!(tail.offset, good_len);
        assert_eq!(tail.bytes, cut);
        assert_eq!(tail.reason, reason);
        assert_eq!(fs::metadata(segment).unwrap().len(), good_len);
        assert_eq!(
            payloads(store.peek(10).unwrap()),
            (0..4).map(entry).collect::<Vec<_>>()
        );
        // Appends go on after the good prefix and survive the next reopen.
        assert_eq!(store.append(b"after").unwrap(), 5);
        drop(store);
        let store = QueueStore::open(dir, options(1 << 20)).unwrap();
        assert!(store.recovery().truncated.is_none());
        let got = store.peek(10).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], (5, b"after".to_vec()));
    }

    /// The segment header, as the log writes it.
    const SEGMENT_HEADER: u64 = 20;

    fn good_len_of_four() -> u64 {
        SEGMENT_HEADER + (0..4).map(|i| HEADER + entry(i).len() as u64).sum::<u64>()
    }

    #[test]
    fn torn_tail_mid_frame_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let segment = five_entries(dir.path());
        let len = fs::metadata(&segment).unwrap().len();
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        file.set_len(len - 3).unwrap();
        drop(file);
        let good = good_len_of_four();
        let reason = "frame runs past the end of the file";
        assert_cut_to_four(dir.path(), &segment, good, len - 3 - good, reason);
    }

    #[test]
    fn torn_tail_mid_header_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let segment = five_entries(dir.path());
        let good = good_len_of_four();
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        file.set_len(good + 5).unwrap();
        drop(file);
        assert_cut_to_four(dir.path(), &segment, good, 5, "incomplete frame header");
    }

    #[test]
    fn flipped_byte_in_last_frame_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let segment = five_entries(dir.path());
        let mut bytes = fs::read(&segment).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x40;
        fs::write(&segment, &bytes).unwrap();
        let good = good_len_of_four();
        let cut = bytes.len() as u64 - good;
        assert_cut_to_four(dir.path(), &segment, good, cut, "checksum mismatch");
    }

    #[test]
    fn zero_filled_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let segment = five_entries(dir.path());
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len + 4096).unwrap(); // zeros, as after a crash
        drop(file);
        let store = QueueStore::open(dir.path(), options(1 << 20)).unwrap();
        let tail = store.recovery().truncated.clone().unwrap();
        assert_eq!((tail.offset, tail.bytes), (len, 4096));
        assert_eq!(store.len(), 5);
    }

    #[test]
    fn corrupt_frame_in_older_segment_skips_rest_of_that_segment() {
        let dir = tempfile::tempdir().unwrap();
        let store = QueueStore::open(dir.path(), options(100)).unwrap();
        for i in 0..20 {
            store.append(&entry(i)).unwrap();
        }
        drop(store);
        let files = segment_files(dir.path());
        assert!(files.len() >= 3);
        // Second frame of the first segment.
        let first = &files[0];
        let mut bytes = fs::read(first).unwrap();
        let second = SEGMENT_HEADER as usize + HEADER as usize + entry(0).len();
        bytes[second + HEADER as usize] ^= 1;
        fs::write(first, &bytes).unwrap();
        let in_first = {
            let mut n = 0;
            let mut at = SEGMENT_HEADER as usize;
            while at < bytes.len() {
                at += HEADER as usize + entry(n).len();
                n += 1;
            }
            n
        };

        let store = QueueStore::open(dir.path(), options(100)).unwrap();
        let recovery = store.recovery();
        assert!(recovery.truncated.is_none());
        match recovery.corrupt.as_slice() {
            [Error::Corrupt {
                path,
                offset,
                reason,
            }] => {
                assert_eq!(path, first);
                assert_eq!(*offset, second as u64);
                assert_eq!(*reason, "checksum mismatch");
            }
            other => panic!("{other:?}"),
        }
        let got = store.peek(100).unwrap();
        let seqs: Vec<Seq> = got.iter().map(|(s, _)| *s).collect();
        let expected: Vec<Seq> = std::iter::once(1).chain(in_first as u64 + 1..=20).collect();
        assert_eq!(seqs, expected);
        for (seq, payload) in got {
            assert_eq!(payload, entry(seq as usize - 1));
        }
        // Acking past it reclaims the damaged segment.
        store.ack(in_first as u64 + 1).unwrap();
        assert!(!first.exists());
    }

    #[test]
    fn peek_drops_entry_corrupted_after_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = QueueStore::open(dir.path(), options(1 << 20)).unwrap();
        for i in 0..3 {
            store.append(&entry(i)).unwrap();
        }
        let segment = segment_files(dir.path()).pop().unwrap();
        let mut bytes = fs::read(&segment).unwrap();
        let second = SEGMENT_HEADER as usize + HEADER as usize + entry(0).len();
        bytes[second + HEADER as usize + 1] ^= 1;
        fs::write(&segment, &bytes).unwrap();
        let err = store.peek(10).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { offset, .. } if offset == second as u64),
            "{err}"
        );
        assert_eq!(store.stats().corrupt_dropped, 1);
        assert_eq!(store.take_dropped(), [2]);
        assert!(store.take_dropped().is_empty());
        assert_eq!(store.peek_after(1, 10).unwrap(), vec![(3, entry(2))]);
        assert!(store.peek_after(3, 10).unwrap().is_empty());
        let got = store.peek(10).unwrap();
        assert_eq!(got, vec![(1, entry(0)), (3, entry(2))]);
    }

    #[test]
    fn queue_limit_is_enforced_and_freed_by_ack() {
        let dir = tempfile::tempdir().unwrap();
        let options = QueueStoreOptions {
            queue_limit: 3,
            ..options(1 << 20)
        };
        let store = QueueStore::open(dir.path(), options).unwrap();
        store.append_batch(&[b"a", b"b"]).unwrap();
        let err = store.append_batch(&[b"c", b"d"]).unwrap_err();
        assert!(matches!(err, Error::QueueFull { limit: 3, .. }), "{err}");
        store.append(b"c").unwrap();
        let err = store.append(b"d").unwrap_err();
        match &err {
            Error::QueueFull { dir: d, limit } => {
                assert_eq!((d.as_path(), *limit), (dir.path(), 3));
            }
            other => panic!("{other}"),
        }
        assert!(err
            .to_string()
            .contains("is full (3 unacknowledged entries)"));
        assert_eq!(store.len(), 3);
        store.ack(1).unwrap();
        assert_eq!(store.append(b"d").unwrap(), 4);
        assert_eq!(payloads(store.peek(10).unwrap()), [b"b", b"c", b"d"]);
    }

    #[test]
    fn ack_ignores_numbers_not_yet_assigned() {
        let dir = tempfile::tempdir().unwrap();
        let store = QueueStore::open(dir.path(), options(1 << 20)).unwrap();
        store.ack(100).unwrap(); // nothing appended yet
        store.append(b"a").unwrap();
        store.ack(Seq::MAX).unwrap();
        assert!(store.is_empty());
        assert_eq!(store.append(b"b").unwrap(), 2);
        assert_eq!(store.peek(10).unwrap(), vec![(2, b"b".to_vec())]);
        store.ack(1).unwrap(); // already acked: no-op
        assert_eq!(store.len(), 1);
        drop(store);
        let store = QueueStore::open(dir.path(), options(1 << 20)).unwrap();
        assert_eq!(store.peek(10).unwrap(), vec![(2, b"b".to_vec())]);
    }

    #[test]
    fn numbers_stay_above_the_cursor_when_segments_are_lost() {
        // What `FsyncPolicy::Never` and a power loss can leave: an ack cursor
        // ahead of the data on disk.
        let dir = tempfile::tempdir().unwrap();
        let store = QueueStore::open(dir.path(), options(1 << 20)).unwrap();
        for i in 0..5 {
            store.append(&entry(i)).unwrap();
        }
        store.ack(3).unwrap();
        drop(store);
        for file in segment_files(dir.path()) {
            fs::remove_file(file).unwrap();
        }
        let store = QueueStore::open(dir.path(), options(1 << 20)).unwrap();
        assert!(store.is_empty());
        assert_eq!(store.append(b"new").unwrap(), 4);
        drop(store);
        let store = QueueStore::open(dir.path(), options(1 << 20)).unwrap();
        assert_eq!(store.peek(10).unwrap(), vec![(4, b"new".to_vec())]);
    }

    #[test]
    fn empty_and_oversized_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = QueueStore::open(dir.path(), options(64)).unwrap();
        assert_eq!(store.append_batch::<&[u8]>(&[]).unwrap(), 1..1);
        store.append(b"").unwrap();
        let big = vec![7u8; 1000];
        store.append(&big).unwrap();
        store.append(b"after").unwrap();
        assert_eq!(
            store.peek(10).unwrap(),
            vec![(1, vec![]), (2, big.clone()), (3, b"after".to_vec())]
        );
        drop(store);
        let store = QueueStore::open(dir.path(), options(64)).unwrap();
        assert_eq!(
            payloads(store.peek(10).unwrap()),
            [vec![], big, b"after".to_vec()]
        );
    }

    #[test]
    fn invalid_options_name_the_option() {
        let dir = tempfile::tempdir().unwrap();
        for (options, name) in [
            (
                QueueStoreOptions {
                    queue_limit: 0,
                    ..QueueStoreOptions::default()
                },
                "queue_limit",
            ),
            (
                QueueStoreOptions {
                    segment_bytes: 0,
                    ..QueueStoreOptions::default()
                },
                "segment_bytes",
            ),
        ] {
            let err = QueueStore::open(dir.path(), options).unwrap_err();
            assert!(matches!(err, Error::InvalidOption { option, .. } if option == name));
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn stray_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), "hello").unwrap();
        fs::write(dir.path().join("x.log"), "junk").unwrap();
        let store = QueueStore::open(dir.path(), options(1 << 20)).unwrap();
        assert!(store.is_empty());
        assert_eq!(store.append(b"a").unwrap(), 1);
    }

    #[test]
    fn always_fsyncs_every_append() {
        let dir = tempfile::tempdir().unwrap();
        let options = QueueStoreOptions {
            fsync: FsyncPolicy::Always,
            ..QueueStoreOptions::default()
        };
        let store = QueueStore::open(dir.path(), options).unwrap();
        let before = store.stats().fsyncs;
        store.append(b"a").unwrap();
        store.append_batch(&[b"b", b"c"]).unwrap();
        assert_eq!(store.stats().fsyncs, before + 2);
        store.sync().unwrap(); // nothing new: no fsync
        assert_eq!(store.stats().fsyncs, before + 2);
    }

    #[test]
    fn every_interval_allows_one_fsync_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let interval = Duration::from_millis(60);
        let options = QueueStoreOptions {
            fsync: FsyncPolicy::Every(interval),
            ..QueueStoreOptions::default()
        };
        let store = QueueStore::open(dir.path(), options).unwrap();
        store.append(b"a").unwrap();
        assert_eq!(store.stats().fsyncs, 0, "append alone does not fsync");
        let start = Instant::now();
        store.sync().unwrap();
        store.sync().unwrap(); // nothing unsynced: returns at once
        assert!(start.elapsed() < interval, "{:?}", start.elapsed());
        store.append_durable(b"b").unwrap(); // waits for the interval
        assert!(start.elapsed() >= interval, "{:?}", start.elapsed());
        assert_eq!(store.stats().fsyncs, 2);
    }

    #[test]
    fn concurrent_producers_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let options = QueueStoreOptions {
            fsync: FsyncPolicy::Every(Duration::from_millis(1)),
            segment_bytes: 4096,
            ..QueueStoreOptions::default()
        };
        let store = Arc::new(QueueStore::open(dir.path(), options.clone()).unwrap());
        let (threads, per_thread) = (8, 25);
        let start = Arc::new(std::sync::Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = Arc::clone(&store);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    (0..per_thread)
                        .map(|i| {
                            let seq = store.append_durable(&entry(t * 1000 + i)).unwrap();
                            (seq, entry(t * 1000 + i))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(Seq, Vec<u8>)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        // Each append waited for its own fsync, but they shared them: the
        // 1 ms interval alone makes every round collect the other threads.
        let fsyncs = store.stats().fsyncs;
        assert!(
            fsyncs * 2 <= (threads * per_thread) as u64,
            "{fsyncs} fsyncs"
        );
        assert_eq!(store.peek(1000).unwrap(), all);
        drop(store);
        let store = QueueStore::open(dir.path(), options).unwrap();
        assert_eq!(store.peek(1000).unwrap(), all);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Append(Vec<u8>),
        AppendBatch(Vec<Vec<u8>>),
        /// Ack up to the n-th queued entry (modulo the queue length).
        Ack(usize),
        Peek(usize),
        Reopen,
        /// Close, append these bytes to the newest segment (a torn write),
        /// reopen: recovery must cut them.
        TearTail(Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        let bytes = proptest::collection::vec(any::<u8>(), 0..40);
        prop_oneof![
            4 => bytes.clone().prop_map(Op::Append),
            2 => proptest::collection::vec(bytes, 0..6).prop_map(Op::AppendBatch),
            2 => (0usize..8).prop_map(Op::Ack),
            2 => (0usize..12).prop_map(Op::Peek),
            1 => Just(Op::Reopen),
            1 => proptest::collection::vec(any::<u8>(), 1..30).prop_map(Op::TearTail),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn matches_a_vecdeque_model(
            ops in proptest::collection::vec(op(), 1..60),
            segment_bytes in 32u64..300,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let options = QueueStoreOptions { queue_limit: 40, ..options(segment_bytes) };
            let mut store = QueueStore::open(dir.path(), options.clone()).unwrap();
            let mut model: VecDeque<(Seq, Vec<u8>)> = VecDeque::new();
            let mut next: Seq = 1;
            for op in ops {
                match op {
                    Op::Append(bytes) => match store.append(&bytes) {
                        Ok(seq) => {
                            prop_assert!(model.len() < 40);
                            prop_assert_eq!(seq, next);
                            model.push_back((seq, bytes));
                            next += 1;
                        }
                        Err(Error::QueueFull { .. }) => prop_assert_eq!(model.len(), 40),
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    },
                    Op::AppendBatch(batch) => match store.append_batch(&batch) {
                        Ok(range) => {
                            prop_assert_eq!(range.clone(), next..next + batch.len() as u64);
                            for (seq, bytes) in range.zip(batch) {
                                model.push_back((seq, bytes));
                            }
                            next = model.back().map_or(next, |(s, _)| s + 1);
                        }
                        Err(Error::QueueFull { .. }) => {
                            prop_assert!(model.len() + batch.len() > 40);
                        }
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    },
                    Op::Ack(n) => {
                        if let Some(&(seq, _)) = model.get(n % model.len().max(1)) {
                            store.ack(seq).unwrap();
                            model.retain(|(s, _)| *s > seq);
                        }
                    }
                    Op::Peek(max) => {
                        let want: Vec<_> = model.iter().take(max).cloned().collect();
                        prop_assert_eq!(store.peek(max).unwrap(), want);
                    }
                    Op::Reopen => {
                        drop(store);
                        store = QueueStore::open(dir.path(), options.clone()).unwrap();
                        prop_assert!(store.recovery().truncated.is_none());
                        prop_assert!(store.recovery().corrupt.is_empty());
                    }
                    Op::TearTail(garbage) => {
                        drop(store);
                        // Segments start with the first append.
                        let Some(newest) = segment_files(dir.path()).pop() else {
                            store = QueueStore::open(dir.path(), options.clone()).unwrap();
                            continue;
                        };
                        let len = fs::metadata(&newest).unwrap().len();
                        let mut file = OpenOptions::new().append(true).open(&newest).unwrap();
                        file.write_all(&garbage).unwrap();
                        drop(file);
                        store = QueueStore::open(dir.path(), options.clone()).unwrap();
                        let tail = store.recovery().truncated.clone();
                        prop_assert_eq!(tail.map(|t| (t.offset, t.bytes)), Some((len, garbage.len() as u64)));
                        prop_assert_eq!(fs::metadata(&newest).unwrap().len(), len);
                    }
                }
                prop_assert_eq!(store.len(), model.len());
                prop_assert_eq!(store.is_empty(), model.is_empty());
            }
            let all: Vec<_> = model.iter().cloned().collect();
            prop_assert_eq!(store.peek(usize::MAX).unwrap(), all);
            // What the store tracks is what is on disk, and acked segments
            // are gone: every segment but the newest holds a live entry.
            let files = segment_files(dir.path());
            prop_assert_eq!(files.len(), store.stats().segments);
            let live = store.state().live.values().filter(|n| **n > 0).count();
            prop_assert!(live + 1 >= files.len(), "{} live of {:?}", live, files);
        }
    }
}
