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
//! - `<seq>.log` — segments, named after the sequence number of their first
//!   entry (20 digits, so they sort). Entries are appended to the newest one;
//!   a new segment is started once the next write would take it past
//!   [`QueueStoreOptions::segment_bytes`] (a single entry or batch is never
//!   split, so a segment may exceed it by one write).
//! - Each entry is one frame: `[len: u32 LE][crc32: u32 LE][payload]`, where
//!   the CRC-32 covers the four length bytes and the payload, so a run of
//!   zeros (what some file systems leave after a crash) never passes as an
//!   empty entry.
//! - `acks` — the ack cursor, an append-only log of 12-byte records
//!   `[seq: u64 LE][crc32 of those 8 bytes: u32 LE]`; the last valid record
//!   wins. An ack costs one small write and rides on the next grouped fsync
//!   instead of paying a write-temp + fsync + rename of its own. Once the log
//!   reaches 64 KiB it is rewritten to a single record through `acks.tmp`,
//!   fsync and rename.
//!
//! A segment whose entries are all acknowledged is deleted, except the newest
//! one (it keeps the sequence numbers going); so at most one segment of
//! acknowledged entries stays on disk. In memory the store keeps 32 bytes per
//! unacknowledged entry (its position), not the payloads.
//!
//! # Durability
//!
//! Every `append` writes its frames with one `write` before it returns, so
//! they survive the process being killed. Surviving power loss needs an
//! fsync, which [`FsyncPolicy`] groups:
//!
//! - `Always`: `append`, `append_batch` and `ack` return once fsynced.
//! - `Every(d)`: [`QueueStore::sync`] returns once everything written before
//!   the call is fsynced. Callers that sync concurrently share one fsync
//!   (group commit), and fsyncs start at most once per `d`, so one fsync
//!   covers every append of its interval. A producer that must not return
//!   before its entry is durable calls [`QueueStore::append_durable`].
//! - `Never`: no fsync; `sync` returns at once.
//!
//! # Recovery
//!
//! [`QueueStore::open`] reads every segment in order and checks each frame.
//! The first frame of the *newest* segment whose checksum fails, or whose
//! length runs past the end of the file, is a torn write: the file is cut
//! there and the cut is logged and reported in [`Recovery::truncated`]. A bad
//! frame in an *older* segment (which was complete when it was closed) is
//! reported in [`Recovery::corrupt`] as an [`Error::Corrupt`] naming the file
//! and offset, and the rest of that segment is skipped. Recovery never
//! delivers an entry that failed its checksum; [`QueueStore::peek`] checks
//! them again when it reads.
//!
//! Only one `QueueStore` may have a directory open at a time (in one process
//! or across processes); the store does not lock the directory.
//!
//! # Why a hand-written segment log
//!
//! The queue only appends at the tail, reads from the head and drops acked
//! prefixes. An embedded B-tree store (redb, sled) is built for random
//! access by key: each enqueue rewrites tree pages, each ack becomes deletes
//! whose space is freed later, and each commit is its own transaction, so
//! sharing fsyncs across callers would still be ours to write. A segment log
//! is one `write` per append, one shared fsync per interval, reclaim by
//! deleting a file, and recovery by a sequential scan that truncates a torn
//! tail.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
#[cfg(not(unix))]
use std::io::{Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Sequence number of an entry: assigned by [`QueueStore::append`],
/// increasing by one per entry, starting at 1, never reused in a directory.
pub type Seq = u64;

/// The largest entry a frame can hold.
pub const MAX_ENTRY_BYTES: usize = u32::MAX as usize;

const HEADER: u64 = 8;
const SEGMENT_SUFFIX: &str = ".log";
const ACK_LOG: &str = "acks";
const ACK_LOG_TMP: &str = "acks.tmp";
const ACK_RECORD: usize = 12;
const ACK_LOG_COMPACT_BYTES: u64 = 64 * 1024;
/// Most bytes `peek` reads at once (unless one entry is larger).
const READ_CHUNK: u64 = 1 << 20;

/// When appended entries are fsynced to disk. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every `append`, `append_batch` and `ack` is fsynced before it returns
    /// (concurrent callers still share fsyncs).
    Always,
    /// Grouped: [`QueueStore::sync`] fsyncs everything written before it,
    /// starting at most one fsync per interval; concurrent callers share it.
    Every(Duration),
    /// Never fsync: entries survive a crash of the process, not of the machine.
    Never,
}

impl Default for FsyncPolicy {
    /// `Every(1 ms)`: a lone caller rarely waits (an fsync takes about as
    /// long), while many callers share ≤ 1000 fsyncs/s.
    fn default() -> Self {
        FsyncPolicy::Every(Duration::from_millis(1))
    }
}

/// Options of [`QueueStore::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStoreOptions {
    /// Most unacknowledged entries the queue holds; appends beyond it fail
    /// with [`Error::QueueFull`]. Default 100000, as MinIO's `queue_limit`.
    pub queue_limit: usize,
    /// When appends are fsynced. Default [`FsyncPolicy::Every`] 1 ms.
    pub fsync: FsyncPolicy,
    /// Size at which a new segment file is started. Default 16 MiB.
    pub segment_bytes: u64,
}

impl Default for QueueStoreOptions {
    fn default() -> Self {
        QueueStoreOptions {
            queue_limit: 100_000,
            fsync: FsyncPolicy::default(),
            segment_bytes: 16 << 20,
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
    state: Mutex<State>,
    /// Group commit state.
    sync: Mutex<SyncState>,
    /// Signalled when an fsync round ends.
    synced_cv: Condvar,
    recovery: Recovery,
}

#[derive(Debug)]
struct Segment {
    base: Seq,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes of valid frames; the next frame goes here.
    len: u64,
    /// Frames in the file (valid ones, counted from `base`).
    entries: u64,
    /// Unacknowledged entries of the index that live in this file.
    live: usize,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    seq: Seq,
    segment: Seq,
    offset: u64,
    len: u32,
}

#[derive(Debug)]
struct AckLog {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    dirty: bool,
}

#[derive(Debug)]
struct State {
    /// Oldest first, never empty; the back one is written to.
    segments: VecDeque<Segment>,
    /// Unacknowledged entries, oldest first.
    index: VecDeque<Slot>,
    next_seq: Seq,
    acked: Seq,
    acks: AckLog,
    buf: Vec<u8>,
    read_buf: Vec<u8>,
    /// A failed write may have left bytes past the active segment's `len`.
    needs_trim: bool,
    /// An fsync failed: do not write to the same file again.
    rotate_next: bool,
    /// Write generation: bumped by every write a sync must cover.
    gen: u64,
    dirty_active: bool,
    closed_unsynced: Vec<(PathBuf, Arc<File>)>,
    dir_dirty: bool,
    corrupt_dropped: u64,
}

/// Group commit bookkeeping, under its own lock: one thread at a time runs
/// an fsync round while the others wait on `synced_cv`.
#[derive(Debug, Default)]
struct SyncState {
    /// A thread is running an fsync round.
    running: bool,
    /// When the last round started.
    last_start: Option<Instant>,
    /// Write generation taken by the last round.
    taken: u64,
    /// Every write generation up to this one is fsynced.
    synced: u64,
    /// Generations `(from, to]` of rounds that failed (the latest 64).
    failed: VecDeque<(u64, u64)>,
    fsyncs: u64,
}

/// Files to fsync, taken from the state under the lock, synced outside it.
struct SyncWork {
    gen: u64,
    files: Vec<(PathBuf, Arc<File>)>,
    dir: bool,
}

impl QueueStore {
    /// Opens the queue in `dir` (created if missing) and recovers it: see
    /// [Recovery](self#recovery). What was found is in [`Self::recovery`].
    pub fn open(dir: impl AsRef<Path>, options: QueueStoreOptions) -> Result<Self> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let fsync = options.fsync != FsyncPolicy::Never;
        let mut recovery = Recovery::default();
        let (acks, acked) = AckLog::open(&dir, fsync)?;
        recovery.acked = acked;

        let bases = list_segments(&dir)?;
        recovery.segments = bases.len();
        let mut segments = VecDeque::with_capacity(bases.len() + 1);
        let mut index = VecDeque::new();
        let mut dir_dirty = false;
        for (i, &base) in bases.iter().enumerate() {
            let newest = i + 1 == bases.len();
            let path = segment_path(&dir, base);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            let scan = scan_segment(&file, &path)?;
            if let Some((offset, reason)) = scan.bad {
                if newest {
                    let bytes = scan.file_len - offset;
                    tracing::warn!(
                        path = %path.display(), offset, bytes, reason,
                        "queue store: cutting torn tail"
                    );
                    file.set_len(offset).map_err(io_err(&path))?;
                    if fsync {
                        file.sync_all().map_err(io_err(&path))?;
                    }
                    recovery.truncated = Some(TruncatedTail {
                        path: path.clone(),
                        offset,
                        bytes,
                        reason,
                    });
                } else {
                    tracing::error!(
                        path = %path.display(), offset, reason,
                        "queue store: corrupt frame, skipping the rest of the segment"
                    );
                    recovery.corrupt.push(Error::Corrupt {
                        path: path.clone(),
                        offset,
                        reason,
                    });
                }
            }
            let mut segment = Segment {
                base,
                path,
                file: Arc::new(file),
                len: scan.valid_len,
                entries: scan.frames.len() as u64,
                live: 0,
            };
            for (k, &(offset, len)) in scan.frames.iter().enumerate() {
                let seq = base + k as u64;
                // Entries must come in increasing order; anything else (an
                // overlapping segment) is not delivered twice.
                if seq > acked && index.back().is_none_or(|s: &Slot| seq > s.seq) {
                    index.push_back(Slot {
                        seq,
                        segment: base,
                        offset,
                        len,
                    });
                    segment.live += 1;
                }
            }
            segments.push_back(segment);
        }
        recovery.entries = index.len();

        let mut next_seq = segments.back().map_or(1, |s| s.base + s.entries);
        next_seq = next_seq.max(acked + 1).max(1);
        if segments
            .back()
            .is_none_or(|s| s.base + s.entries != next_seq)
        {
            // Empty directory, or the ack cursor is ahead of the data (fsyncs
            // off and the machine crashed): start a segment at `next_seq`.
            segments.push_back(Segment::create(&dir, next_seq)?);
            dir_dirty = true;
        }

        let mut state = State {
            segments,
            index,
            next_seq,
            acked,
            acks,
            buf: Vec::new(),
            read_buf: Vec::new(),
            needs_trim: false,
            rotate_next: false,
            gen: 0,
            dirty_active: false,
            closed_unsynced: Vec::new(),
            dir_dirty,
            corrupt_dropped: 0,
        };
        state.reclaim();
        if state.dir_dirty && fsync {
            state.gen += 1;
        }
        tracing::debug!(
            dir = %dir.display(), entries = recovery.entries, acked,
            "queue store opened"
        );
        Ok(QueueStore {
            dir,
            options,
            state: Mutex::new(state),
            sync: Mutex::new(SyncState::default()),
            synced_cv: Condvar::new(),
            recovery,
        })
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
        let (seqs, gen) = self.write_entries(entries)?;
        if self.options.fsync == FsyncPolicy::Always {
            self.sync_to(gen)?;
        }
        Ok(seqs)
    }

    /// [`Self::append_batch`], returning once the entries are durable as
    /// for [`Self::append_durable`].
    pub fn append_batch_durable<E: AsRef<[u8]>>(&self, entries: &[E]) -> Result<Range<Seq>> {
        let (seqs, gen) = self.write_entries(entries)?;
        if self.options.fsync != FsyncPolicy::Never {
            self.sync_to(gen)?;
        }
        Ok(seqs)
    }

    /// Writes the frames of `entries`; returns their numbers and the write
    /// generation an fsync must reach to cover them.
    fn write_entries<E: AsRef<[u8]>>(&self, entries: &[E]) -> Result<(Range<Seq>, u64)> {
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
        let mut total = 0u64;
        for e in entries {
            let len = e.as_ref().len();
            if len > MAX_ENTRY_BYTES {
                return Err(Error::EntryTooLarge {
                    len,
                    max: MAX_ENTRY_BYTES,
                });
            }
            total += HEADER + len as u64;
        }
        if st.needs_trim {
            let active = st.active();
            active
                .file
                .set_len(active.len)
                .map_err(io_err(&active.path))?;
            st.needs_trim = false;
        }
        let active = st.active();
        if active.len > 0 && (st.rotate_next || active.len + total > self.options.segment_bytes) {
            st.rotate(&self.dir, self.options.fsync)?;
        }

        let mut buf = std::mem::take(&mut st.buf);
        buf.clear();
        buf.reserve(total as usize);
        for e in entries {
            encode_frame(&mut buf, e.as_ref());
        }
        let active = st.active();
        let written = write_at(&active.file, &buf, active.len);
        if let Err(source) = written {
            let path = active.path.clone();
            // Cut what may have been written, so the next frame follows the
            // last good one; if that fails too, retry before the next write.
            st.needs_trim = active.file.set_len(active.len).is_err();
            st.buf = buf;
            return Err(Error::Io { path, source });
        }
        st.buf = buf;

        let base = st.active().base;
        let mut offset = st.active().len;
        for (i, e) in entries.iter().enumerate() {
            let len = e.as_ref().len() as u32;
            st.index.push_back(Slot {
                seq: start + i as u64,
                segment: base,
                offset,
                len,
            });
            offset += HEADER + u64::from(len);
        }
        let n = entries.len() as u64;
        let active = st.active_mut();
        active.len = offset;
        active.entries += n;
        active.live += entries.len();
        st.next_seq += n;
        st.dirty_active = true;
        st.gen += 1;
        Ok((start..start + n, st.gen))
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
        if self.options.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        let gen = self.state().gen;
        self.sync_to(gen)
    }

    /// Syncs and closes the store, reporting an fsync error that dropping
    /// it would only log.
    pub fn close(self) -> Result<()> {
        self.sync()
    }

    /// Up to `max` of the oldest unacknowledged entries, in order, without
    /// removing them.
    ///
    /// Each entry's checksum is verified. If one fails (the disk changed
    /// under us), that entry is dropped from the queue, counted in
    /// [`QueueStats::corrupt_dropped`] and reported as [`Error::Corrupt`];
    /// the next call returns the entries around it.
    pub fn peek(&self, max: usize) -> Result<Vec<(Seq, Vec<u8>)>> {
        let mut st = self.state();
        let mut out = Vec::with_capacity(max.min(st.index.len()));
        let mut i = 0;
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
            let seg = st.segment(first.segment);
            chunk.resize((end - first.offset) as usize, 0);
            read_at(&seg.file, &mut chunk, first.offset).map_err(io_err(&seg.path))?;
            for k in i..j {
                let slot = st.index[k];
                let at = (slot.offset - first.offset) as usize;
                let frame = &chunk[at..at + (HEADER as usize) + slot.len as usize];
                match decode_frame(frame) {
                    Some(payload) if payload.len() == slot.len as usize => {
                        out.push((slot.seq, payload.to_vec()));
                    }
                    _ => {
                        let path = st.segment(slot.segment).path.clone();
                        tracing::error!(
                            path = %path.display(), offset = slot.offset, seq = slot.seq,
                            "queue store: entry failed its checksum, dropping it"
                        );
                        st.index.remove(k);
                        st.segment_mut(slot.segment).live -= 1;
                        st.corrupt_dropped += 1;
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

    /// Acknowledges every entry with a sequence number `<= up_to` (numbers not
    /// yet assigned are ignored, so a later append is never pre-acknowledged).
    /// Segments left with no unacknowledged entry are deleted. The cursor is
    /// persisted with the fsync policy; after a crash before that, entries
    /// are delivered again (at least once).
    pub fn ack(&self, up_to: Seq) -> Result<()> {
        let mut st = self.state();
        let up_to = up_to.min(st.next_seq - 1);
        if up_to <= st.acked {
            return Ok(());
        }
        let compacted = st
            .acks
            .append(up_to, self.options.fsync != FsyncPolicy::Never)?;
        st.dir_dirty |= compacted;
        st.acked = up_to;
        while let Some(&slot) = st.index.front() {
            if slot.seq > up_to {
                break;
            }
            st.index.pop_front();
            st.segment_mut(slot.segment).live -= 1;
        }
        st.reclaim();
        st.gen += 1;
        let gen = st.gen;
        drop(st);
        if self.options.fsync == FsyncPolicy::Always {
            self.sync_to(gen)?;
        }
        Ok(())
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
        let st = self.state();
        QueueStats {
            entries: st.index.len(),
            segments: st.segments.len(),
            disk_bytes: st.segments.iter().map(|s| s.len).sum(),
            fsyncs: self.sync_state().fsyncs,
            corrupt_dropped: st.corrupt_dropped,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is updated only after the I/O it describes succeeded, so
        // it stays consistent if a thread panicked while holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sync_state(&self) -> MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Group commit: returns once write generation `target` is fsynced.
    /// The first caller that finds no round running leads one; the others
    /// wait for it and return if it covered them.
    fn sync_to(&self, target: u64) -> Result<()> {
        let mut sync = self.sync_state();
        let last_start = loop {
            if sync
                .failed
                .iter()
                .any(|&(from, to)| from < target && target <= to)
            {
                return Err(Error::Io {
                    path: self.dir.clone(),
                    source: io::Error::other("the fsync that covered these writes failed"),
                });
            }
            if sync.synced >= target {
                return Ok(());
            }
            if !sync.running {
                sync.running = true;
                break sync.last_start;
            }
            sync = self
                .synced_cv
                .wait(sync)
                .unwrap_or_else(PoisonError::into_inner);
        };
        drop(sync);

        // Wait for the interval without holding a lock: writers covered by
        // the last round return and append again, and join this one.
        if let (FsyncPolicy::Every(interval), Some(last)) = (self.options.fsync, last_start) {
            let due = last + interval;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let work = self.state().take_sync_work();
        let start = Instant::now();
        let result = work.run(&self.dir);
        if result.is_err() {
            self.state().rotate_next = true;
        }

        let mut sync = self.sync_state();
        sync.running = false;
        sync.last_start = Some(start);
        let from = std::mem::replace(&mut sync.taken, work.gen);
        match &result {
            Ok(()) => {
                sync.synced = sync.synced.max(work.gen);
                sync.fsyncs += 1;
            }
            Err(e) => {
                tracing::error!(error = %e, "queue store: fsync failed");
                if sync.failed.len() == 64 {
                    sync.failed.pop_front();
                }
                sync.failed.push_back((from, work.gen));
            }
        }
        drop(sync);
        self.synced_cv.notify_all();
        result
    }
}

impl Drop for QueueStore {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::error!(dir = %self.dir.display(), error = %e, "queue store: sync on drop failed");
        }
    }
}

impl State {
    fn active(&self) -> &Segment {
        self.segments
            .back()
            .expect("a queue store always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .back_mut()
            .expect("a queue store always has a segment")
    }

    fn position(&self, base: Seq) -> usize {
        self.segments
            .binary_search_by_key(&base, |s| s.base)
            .expect("index entries point at open segments")
    }

    fn segment(&self, base: Seq) -> &Segment {
        &self.segments[self.position(base)]
    }

    fn segment_mut(&mut self, base: Seq) -> &mut Segment {
        let i = self.position(base);
        &mut self.segments[i]
    }

    /// Starts a new segment at `next_seq`; the old one is fsynced with the
    /// next sync.
    fn rotate(&mut self, dir: &Path, policy: FsyncPolicy) -> Result<()> {
        let segment = Segment::create(dir, self.next_seq)?;
        let old = self.active();
        if self.dirty_active && policy != FsyncPolicy::Never {
            let entry = (old.path.clone(), Arc::clone(&old.file));
            self.closed_unsynced.push(entry);
        }
        self.dirty_active = false;
        self.rotate_next = false;
        self.dir_dirty |= policy != FsyncPolicy::Never;
        self.segments.push_back(segment);
        self.reclaim();
        Ok(())
    }

    /// Deletes the oldest segments that hold no unacknowledged entry.
    fn reclaim(&mut self) {
        while self.segments.len() > 1 && self.segments[0].live == 0 {
            let path = &self.segments[0].path;
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Try again after the next ack.
                    tracing::warn!(
                        path = %path.display(), error = %e,
                        "queue store: cannot delete an acknowledged segment"
                    );
                    return;
                }
            }
            self.segments.pop_front();
        }
    }

    fn take_sync_work(&mut self) -> SyncWork {
        let mut files = std::mem::take(&mut self.closed_unsynced);
        if std::mem::take(&mut self.dirty_active) {
            let active = self.active();
            files.push((active.path.clone(), Arc::clone(&active.file)));
        }
        if std::mem::take(&mut self.acks.dirty) {
            files.push((self.acks.path.clone(), Arc::clone(&self.acks.file)));
        }
        SyncWork {
            gen: self.gen,
            files,
            dir: std::mem::take(&mut self.dir_dirty),
        }
    }
}

impl SyncWork {
    fn run(&self, dir: &Path) -> Result<()> {
        for (path, file) in &self.files {
            file.sync_data().map_err(io_err(path))?;
        }
        if self.dir {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

impl Segment {
    fn create(dir: &Path, base: Seq) -> Result<Segment> {
        let path = segment_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Segment {
            base,
            path,
            file: Arc::new(file),
            len: 0,
            entries: 0,
            live: 0,
        })
    }
}

impl AckLog {
    /// Opens (or creates) the ack log and returns the cursor it holds.
    fn open(dir: &Path, fsync: bool) -> Result<(AckLog, Seq)> {
        let tmp = dir.join(ACK_LOG_TMP);
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&tmp)(e)),
            _ => {}
        }
        let path = dir.join(ACK_LOG);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err(&path))?;
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
                path = %path.display(), bytes = bytes.len() - valid,
                "queue store: cutting torn tail of the ack log"
            );
            file.set_len(valid as u64).map_err(io_err(&path))?;
            if fsync {
                file.sync_all().map_err(io_err(&path))?;
            }
        }
        let log = AckLog {
            path,
            file: Arc::new(file),
            len: valid as u64,
            dirty: false,
        };
        Ok((log, acked))
    }

    /// Records `seq`; returns whether the log was compacted (renamed).
    fn append(&mut self, seq: Seq, fsync: bool) -> Result<bool> {
        let record = ack_record(seq);
        if self.len + ACK_RECORD as u64 > ACK_LOG_COMPACT_BYTES {
            self.compact(&record, fsync)?;
            return Ok(true);
        }
        write_at(&self.file, &record, self.len).map_err(io_err(&self.path))?;
        self.len += ACK_RECORD as u64;
        self.dirty = true;
        Ok(false)
    }

    /// Replaces the log by one holding only `record`: temp file, fsync,
    /// rename. The caller fsyncs the directory with the next sync.
    fn compact(&mut self, record: &[u8], fsync: bool) -> Result<()> {
        let tmp = self.path.with_file_name(ACK_LOG_TMP);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        file.write_all(record).map_err(io_err(&tmp))?;
        if fsync {
            file.sync_data().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        self.file = Arc::new(file);
        self.len = record.len() as u64;
        self.dirty = false;
        Ok(())
    }
}

/// Frames of one segment file, as found by [`scan_segment`].
struct Scan {
    /// `(offset, payload length)` of each valid frame, in order.
    frames: Vec<(u64, u32)>,
    valid_len: u64,
    file_len: u64,
    /// The first bad frame: offset and reason.
    bad: Option<(u64, &'static str)>,
}

fn scan_segment(file: &File, path: &Path) -> Result<Scan> {
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut reader = BufReader::with_capacity(256 << 10, file);
    let mut frames = Vec::new();
    let mut offset = 0u64;
    let mut payload = Vec::new();
    let bad = loop {
        let left = file_len - offset;
        if left == 0 {
            break None;
        }
        if left < HEADER {
            break Some((offset, "truncated frame header"));
        }
        let mut header = [0u8; HEADER as usize];
        reader.read_exact(&mut header).map_err(io_err(path))?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if u64::from(len) > left - HEADER {
            break Some((offset, "frame runs past the end of the file"));
        }
        payload.resize(len as usize, 0);
        reader.read_exact(&mut payload).map_err(io_err(path))?;
        if frame_crc(&header[..4], &payload) != crc {
            break Some((offset, "checksum mismatch"));
        }
        frames.push((offset, len));
        offset += HEADER + u64::from(len);
    };
    Ok(Scan {
        frames,
        valid_len: offset,
        file_len,
        bad,
    })
}

fn list_segments(dir: &Path) -> Result<Vec<Seq>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        if !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(base) = stem.parse() {
                bases.push(base);
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn segment_path(dir: &Path, base: Seq) -> PathBuf {
    dir.join(format!("{base:020}{SEGMENT_SUFFIX}"))
}

fn frame_crc(len: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(payload);
    hasher.finalize()
}

fn encode_frame(buf: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&frame_crc(&len, payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The payload of a whole frame, if its length and checksum hold.
fn decode_frame(frame: &[u8]) -> Option<&[u8]> {
    let (header, payload) = frame.split_at_checked(HEADER as usize)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?);
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    (len as usize == payload.len() && frame_crc(&header[..4], payload) == crc).then_some(payload)
}

fn ack_record(seq: Seq) -> [u8; ACK_RECORD] {
    let seq = seq.to_le_bytes();
    let mut record = [0u8; ACK_RECORD];
    record[..8].copy_from_slice(&seq);
    record[8..].copy_from_slice(&crc32fast::hash(&seq).to_le_bytes());
    record
}

// Positioned I/O. Every caller holds the state lock, so the seek-based
// fallback cannot race with another read or write.
#[cfg(unix)]
fn write_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(buf)
}

#[cfg(not(unix))]
fn read_at(mut file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(()) // directories cannot be opened for fsync here
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::fs::{self, OpenOptions};
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
        // The next segment takes over and the last acked one goes too.
        for i in 40..80 {
            store.append(&entry(i)).unwrap();
        }
        assert!(!segment_files(dir.path()).contains(before.last().unwrap()));
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

    fn good_len_of_four() -> u64 {
        (0..4).map(|i| HEADER + entry(i).len() as u64).sum()
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
        assert_cut_to_four(dir.path(), &segment, good, 5, "truncated frame header");
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
        let second = HEADER as usize + entry(0).len();
        bytes[second + HEADER as usize] ^= 1;
        fs::write(first, &bytes).unwrap();
        let in_first = {
            let mut n = 0;
            let mut at = 0;
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
        let second = HEADER as usize + entry(0).len();
        bytes[second + HEADER as usize + 1] ^= 1;
        fs::write(&segment, &bytes).unwrap();
        let err = store.peek(10).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { offset, .. } if offset == second as u64),
            "{err}"
        );
        assert_eq!(store.stats().corrupt_dropped, 1);
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
                        let newest = segment_files(dir.path()).pop().unwrap();
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
            let live = store.state().segments.iter().filter(|s| s.live > 0).count();
            prop_assert!(live + 1 >= files.len(), "{} live of {:?}", live, files);
        }
    }
}
