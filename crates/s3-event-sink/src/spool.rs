//! The sink's durable spool: an append-only log of every accepted event and
//! of the batch boundaries, from which a restarted sink re-uploads exactly
//! what had not been stored yet, under the same object keys.
//!
//! # Layout
//!
//! A directory of segment files `{first_seq:020}.spool` and an `instance-id`
//! file. A segment starts with an 8-byte magic and holds frames
//! `[len: u32 LE][crc32: u32 LE][kind: u8][body]`, where `len` counts the kind
//! and body and the CRC covers them. Kinds:
//!
//! - **event**: `seq: u64`, the shard, the partition, the record's JSON
//!   bytes. Every
//!   event gets the next sequence number; numbers are never reused (a segment
//!   file's name carries the next number across restarts, and the newest
//!   segment is never deleted).
//! - **close**: `key_seq: u64` (the sequence number of the batch's first
//!   event), `last_seq: u64` (its last), the shard, encoding, compression,
//!   the partition and the object key. It closes every event of that shard
//!   and partition up to `last_seq` that no earlier close covers — a shard's
//!   batches of a partition are consecutive, so no event list is needed.
//!   (A shard is one of the sink's independently locked sets of open
//!   batches; events of a batch are written before its close frame, and
//!   events of the next batch may come before it too.)
//! - **uploaded**: `key_seq: u64`, written once the object is stored.
//!
//! # Guarantees
//!
//! - A close frame is on disk before its object is uploaded (the uploader
//!   waits for it, with group commit), so a batch is never uploaded under a
//!   key that a restart could give to other events.
//! - On open, a frame that is incomplete or fails its CRC ends its segment:
//!   the file is cut there (a torn tail from a crash) and never uploaded.
//!   Batches closed but not marked uploaded are re-encoded from their events
//!   and uploaded again under the key in their close frame, overwriting an
//!   object a crash may have left already stored: exactly once in the bucket.
//!   Events not in any closed batch are closed into new batches and uploaded
//!   before new work.
//! - Segments are deleted oldest first, once every event in them is in an
//!   uploaded batch and the uploaded frames saying so are on disk; a
//!   segment file is removed only after every older one is (one deleter at
//!   a time), so what a crash leaves is always the newest segments.
//!
//! A hand-written log rather than a crate: the guarantees above (batch
//! boundaries replayed, deterministic keys, deletion order) are the sink's
//! own; the framing is the same as the targets crate's queue store.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::{Compression, Encoding};

const MAGIC: &[u8; 8] = b"S3ESPL01";
const HEADER: usize = 9; // len + crc + kind
const KIND_EVENT: u8 = 1;
const KIND_CLOSE: u8 = 2;
const KIND_UPLOADED: u8 = 3;
/// A frame longer than this is treated as corrupt (records are bounded by the
/// sink's `max_bytes`, far below it).
const MAX_FRAME: usize = 1 << 30;

/// Default size at which the spool starts a new segment file (64 MiB).
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Default bound on the spool's size on disk (1 GiB); past it, `push` waits.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// When the spool calls `fsync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpoolFsync {
    /// `push` returns only after its events are fsynced. Concurrent pushes
    /// share one fsync (group commit).
    Always,
    /// A background task fsyncs at this interval; `push` returns once its
    /// events are written (they survive a process crash, and at most one
    /// interval is lost on power loss). Close frames are still fsynced before
    /// their upload.
    Interval(Duration),
    /// Never fsync: events survive a process crash, not a power loss.
    Never,
}

impl Default for SpoolFsync {
    /// Every 10 ms.
    fn default() -> Self {
        SpoolFsync::Interval(Duration::from_millis(10))
    }
}

impl std::str::FromStr for SpoolFsync {
    type Err = crate::Error;

    /// `always`, `never`, or an interval in milliseconds (`10ms`, `10`).
    fn from_str(s: &str) -> crate::Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "always" => Ok(SpoolFsync::Always),
            "never" => Ok(SpoolFsync::Never),
            _ => t
                .strip_suffix("ms")
                .unwrap_or(&t)
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms > 0)
                .map(|ms| SpoolFsync::Interval(Duration::from_millis(ms)))
                .ok_or_else(|| crate::Error::InvalidConfig {
                    what: "fsync",
                    value: s.to_owned(),
                    expected: "`always`, `never` or an interval in milliseconds such as `10ms`",
                }),
        }
    }
}

/// Where and how the sink spools; see [`SinkBuilder::with_spool`](crate::SinkBuilder::with_spool).
#[derive(Clone, Debug)]
pub struct SpoolOptions {
    /// The spool directory (created if missing).
    pub dir: PathBuf,
    /// When to fsync (default: every 10 ms).
    pub fsync: SpoolFsync,
    /// Size at which a new segment file is started.
    pub segment_bytes: u64,
    /// Bound on the spool's size on disk; past it, `push` waits for uploads.
    pub max_bytes: u64,
}

impl SpoolOptions {
    /// Options with the defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolOptions {
            dir: dir.into(),
            fsync: SpoolFsync::default(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_bytes: DEFAULT_SPOOL_MAX_BYTES,
        }
    }

    /// Sets the fsync policy.
    pub fn with_fsync(mut self, fsync: SpoolFsync) -> Self {
        self.fsync = fsync;
        self
    }

    /// Sets the segment size (at least 4 KiB).
    pub fn with_segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes.max(4096);
        self
    }

    /// Sets the bound on the spool's size on disk.
    pub fn with_max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes.max(1);
        self
    }
}

/// What a close frame records about a batch.
#[derive(Debug)]
pub(crate) struct CloseFrame {
    pub key_seq: u64,
    pub last_seq: u64,
    pub shard: u16,
    pub encoding: Encoding,
    pub compression: Compression,
    pub partition: String,
    pub key: String,
}

/// A batch found closed but not uploaded, or built from unclosed events, on open.
#[derive(Debug)]
pub(crate) struct RecoveredBatch {
    pub key_seq: u64,
    pub shard: u16,
    pub key: Option<String>,
    pub partition: String,
    pub encoding: Encoding,
    pub compression: Compression,
    pub records: Vec<Vec<u8>>,
    pub seqs: Vec<u64>,
}

/// What [`Spool::open`] found.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Closed, not uploaded, in close order.
    pub closed: Vec<RecoveredBatch>,
    /// Events of no closed batch, per partition, in order (`key` is `None`).
    pub open: Vec<RecoveredBatch>,
    /// Bytes cut from torn or corrupt segment tails.
    pub torn_bytes: u64,
}

#[derive(Debug)]
struct Segment {
    bytes: u64,
    live: u64,
}

/// Group commit: who has written how far, and how far is on disk.
pub(crate) struct Durability {
    /// The active file and the logical write position.
    current: Mutex<(Arc<File>, u64)>,
    synced: watch::Sender<u64>,
    syncing: AtomicBool,
}

impl Durability {
    /// Returns once everything written up to logical position `pos` is fsynced.
    pub async fn sync_to(&self, pos: u64) -> io::Result<()> {
        let mut rx = self.synced.subscribe();
        loop {
            if *rx.borrow_and_update() >= pos {
                return Ok(());
            }
            if self
                .syncing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let result = self.sync_now().await;
                self.syncing.store(false, Ordering::Release);
                // Wake the waiters even on failure, so one of them retries.
                self.synced.send_modify(|_| {});
                result?;
                continue;
            }
            if rx.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// Fsyncs the active file; everything written before the call is durable after it.
    async fn sync_now(&self) -> io::Result<()> {
        let (file, target) = {
            let g = self.current.lock().unwrap_or_else(|e| e.into_inner());
            (Arc::clone(&g.0), g.1)
        };
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(io::Error::other)??;
        self.synced.send_modify(|s| *s = (*s).max(target));
        Ok(())
    }

    /// Fsyncs if anything was written since the last sync (the interval task).
    pub async fn sync_if_dirty(&self) -> io::Result<()> {
        let written = self.current.lock().unwrap_or_else(|e| e.into_inner()).1;
        self.sync_to(written).await
    }
}

/// The spool itself; owned by the sink's state and used under its lock.
pub(crate) struct Spool {
    dir: PathBuf,
    fsync: SpoolFsync,
    segment_bytes: u64,
    max_bytes: u64,
    active: Arc<File>,
    active_id: u64,
    active_len: u64,
    next_seq: u64,
    segments: BTreeMap<u64, Segment>,
    total_bytes: u64,
    /// Frames not yet written, and the number of events among them.
    buf: Vec<u8>,
    buf_events: u64,
    written: u64,
    durability: Arc<Durability>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("fsync", &self.fsync)
            .field("segments", &self.segments.len())
            .field("total_bytes", &self.total_bytes)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.spool"))
}

fn create_segment(dir: &Path, id: u64, fsync: SpoolFsync) -> io::Result<File> {
    let path = segment_path(dir, id);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    f.write_all(MAGIC)?;
    if fsync != SpoolFsync::Never {
        f.sync_data()?;
        // The new name must survive too.
        File::open(dir)?.sync_all()?;
    }
    Ok(f)
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

fn encoding_byte(e: Encoding) -> u8 {
    match e {
        Encoding::Ndjson => 0,
        Encoding::JsonArray => 1,
    }
}

fn compression_bytes(c: Compression) -> [u8; 2] {
    match c {
        Compression::None => [0, 0],
        Compression::Gzip { level } => [1, level.min(9) as u8],
    }
}

/// A cursor over a frame body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .map(|b| u16::from_le_bytes(b.try_into().expect("2 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn str(&mut self) -> Option<&'a str> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
        std::str::from_utf8(self.take(usize::from(len))?).ok()
    }
}

enum Frame<'a> {
    Event {
        seq: u64,
        shard: u16,
        partition: &'a str,
        record: &'a [u8],
    },
    Close {
        key_seq: u64,
        last_seq: u64,
        shard: u16,
        encoding: Encoding,
        compression: Compression,
        partition: &'a str,
        key: &'a str,
    },
    Uploaded {
        key_seq: u64,
    },
}

fn parse_frame(kind: u8, body: &[u8]) -> Option<Frame<'_>> {
    let mut r = Reader(body);
    let frame = match kind {
        KIND_EVENT => {
            let seq = r.u64()?;
            let shard = r.u16()?;
            let partition = r.str()?;
            Frame::Event {
                seq,
                shard,
                partition,
                record: r.0,
            }
        }
        KIND_CLOSE => {
            let key_seq = r.u64()?;
            let last_seq = r.u64()?;
            let shard = r.u16()?;
            let encoding = match r.u8()? {
                0 => Encoding::Ndjson,
                1 => Encoding::JsonArray,
                _ => return None,
            };
            let compression = match (r.u8()?, r.u8()?) {
                (0, _) => Compression::None,
                (1, level) => Compression::Gzip {
                    level: u32::from(level),
                },
                _ => return None,
            };
            let partition = r.str()?;
            let key = r.str()?;
            Frame::Close {
                key_seq,
                last_seq,
                shard,
                encoding,
                compression,
                partition,
                key,
            }
        }
        KIND_UPLOADED => Frame::Uploaded { key_seq: r.u64()? },
        _ => return None,
    };
    Some(frame)
}

/// Reads a segment's valid frames; returns them and the length of the valid prefix.
fn scan(data: &[u8]) -> (Vec<(u8, &[u8])>, usize) {
    let mut frames = Vec::new();
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return (frames, 0);
    }
    let mut pos = MAGIC.len();
    while data.len() - pos >= HEADER {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if len == 0 || len > MAX_FRAME || data.len() - pos - 8 < len {
            break;
        }
        let payload = &data[pos + 8..pos + 8 + len];
        if crc32fast::hash(payload) != crc || parse_frame(payload[0], &payload[1..]).is_none() {
            break;
        }
        frames.push((payload[0], &payload[1..]));
        pos += 8 + len;
    }
    (frames, pos)
}

impl Spool {
    /// Opens (or creates) the spool in `opts.dir`, cutting torn tails and
    /// replaying the log. Starts a new segment for new work.
    pub fn open(opts: &SpoolOptions) -> io::Result<(Spool, Recovered)> {
        std::fs::create_dir_all(&opts.dir)?;
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&opts.dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(".spool").and_then(|s| s.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();

        let mut recovered = Recovered::default();
        let mut segments = BTreeMap::new();
        let mut next_seq = ids.last().copied().unwrap_or(0);
        let mut total_bytes = 0;
        // Per shard and partition: the events of no close yet.
        type Key = (u16, String);
        let mut open: HashMap<Key, (Vec<u64>, Vec<Vec<u8>>)> = HashMap::new();
        let mut partition_order: Vec<Key> = Vec::new();
        let mut closed: BTreeMap<u64, RecoveredBatch> = BTreeMap::new();
        for &id in &ids {
            let path = segment_path(&opts.dir, id);
            let data = std::fs::read(&path)?;
            let (frames, valid) = scan(&data);
            if valid == 0 {
                // Not even the magic: a segment created at the moment of a
                // crash (empty or torn header). Nothing in it was ever
                // acknowledged; it must not be reused without its header.
                recovered.torn_bytes += data.len() as u64;
                std::fs::remove_file(&path)?;
                continue;
            }
            if valid < data.len() {
                recovered.torn_bytes += (data.len() - valid) as u64;
                tracing::warn!(
                    segment = %path.display(),
                    offset = valid,
                    cut = data.len() - valid,
                    "spool: cutting a torn or corrupt tail"
                );
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(valid as u64)?;
                f.sync_all()?;
            }
            segments.insert(
                id,
                Segment {
                    bytes: valid as u64,
                    live: 0,
                },
            );
            total_bytes += valid as u64;
            for (kind, body) in frames {
                match parse_frame(kind, body).expect("checked by scan") {
                    Frame::Event {
                        seq,
                        shard,
                        partition,
                        record,
                    } => {
                        next_seq = next_seq.max(seq + 1);
                        let k = (shard, partition.to_owned());
                        let e = open.entry(k.clone()).or_insert_with(|| {
                            partition_order.push(k);
                            Default::default()
                        });
                        e.0.push(seq);
                        e.1.push(record.to_vec());
                    }
                    Frame::Close {
                        key_seq,
                        last_seq,
                        shard,
                        encoding,
                        compression,
                        partition,
                        key,
                    } => {
                        let k = (shard, partition.to_owned());
                        let (mut seqs, mut records) = open.remove(&k).unwrap_or_default();
                        // Events after `last_seq` belong to the next batch.
                        let n = seqs.partition_point(|s| *s <= last_seq);
                        let rest = (seqs.split_off(n), records.split_off(n));
                        if rest.0.is_empty() {
                            partition_order.retain(|p| *p != k);
                        } else {
                            open.insert(k, rest);
                        }
                        // Empty when its events' segments were deleted, that
                        // is, when it was uploaded: its uploaded frame follows.
                        closed.insert(
                            key_seq,
                            RecoveredBatch {
                                key_seq,
                                shard,
                                key: Some(key.to_owned()),
                                partition: partition.to_owned(),
                                encoding,
                                compression,
                                records,
                                seqs,
                            },
                        );
                    }
                    Frame::Uploaded { key_seq } => {
                        closed.remove(&key_seq);
                    }
                }
            }
        }
        let live_seq = |segments: &mut BTreeMap<u64, Segment>, seq: u64| {
            if let Some((_, s)) = segments.range_mut(..=seq).next_back() {
                s.live += 1;
            }
        };
        for b in closed.into_values() {
            if b.records.is_empty() {
                continue;
            }
            for &s in &b.seqs {
                live_seq(&mut segments, s);
            }
            recovered.closed.push(b);
        }
        for k in partition_order {
            let (seqs, records) = open.remove(&k).expect("ordered partitions are open");
            for &s in &seqs {
                live_seq(&mut segments, s);
            }
            recovered.open.push(RecoveredBatch {
                key_seq: seqs[0],
                shard: k.0,
                key: None,
                partition: k.1,
                encoding: Encoding::Ndjson,
                compression: Compression::None,
                records,
                seqs,
            });
        }

        let active_id = next_seq;
        // A segment must be well under the bound, or a full spool could be
        // one active segment that is never deleted.
        let segment_bytes = opts.segment_bytes.min(opts.max_bytes / 4).max(4096);
        // A last segment named after the next sequence number holds no event
        // but may hold close and uploaded frames: it is appended to, never
        // truncated (losing those frames would re-batch uploaded events
        // under new keys). Otherwise a new segment starts.
        let (active, active_len) = match segments.get(&active_id) {
            Some(seg) => {
                let f = OpenOptions::new()
                    .append(true)
                    .open(segment_path(&opts.dir, active_id))?;
                (Arc::new(f), seg.bytes)
            }
            None => {
                let f = create_segment(&opts.dir, active_id, opts.fsync)?;
                let header = MAGIC.len() as u64;
                segments.insert(
                    active_id,
                    Segment {
                        bytes: header,
                        live: 0,
                    },
                );
                total_bytes += header;
                (Arc::new(f), header)
            }
        };
        let (synced, _) = watch::channel(0);
        let spool = Spool {
            dir: opts.dir.clone(),
            fsync: opts.fsync,
            segment_bytes,
            max_bytes: opts.max_bytes,
            durability: Arc::new(Durability {
                current: Mutex::new((Arc::clone(&active), 0)),
                synced,
                syncing: AtomicBool::new(false),
            }),
            active,
            active_id,
            active_len,
            next_seq,
            segments,
            total_bytes,
            buf: Vec::new(),
            buf_events: 0,
            written: 0,
        };
        Ok((spool, recovered))
    }

    pub fn fsync(&self) -> SpoolFsync {
        self.fsync
    }

    pub fn durability(&self) -> Arc<Durability> {
        Arc::clone(&self.durability)
    }

    /// Bytes of all segments on disk.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Whether the spool is at or past its size bound.
    pub fn is_full(&self) -> bool {
        self.total_bytes >= self.max_bytes
    }

    fn frame(&mut self, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 8]);
        self.buf.push(kind);
        body(&mut self.buf);
        let len = (self.buf.len() - start - 8) as u32;
        let crc = crc32fast::hash(&self.buf[start + 8..]);
        self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Buffers an event; returns its sequence number. Written by [`Spool::commit`].
    pub fn append_event(&mut self, shard: u16, partition: &str, record: &[u8]) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.buf_events += 1;
        self.frame(KIND_EVENT, |b| {
            b.extend_from_slice(&seq.to_le_bytes());
            b.extend_from_slice(&shard.to_le_bytes());
            put_str(b, partition);
            b.extend_from_slice(record);
        });
        seq
    }

    /// Buffers a close frame.
    pub fn append_close(&mut self, c: &CloseFrame) -> u64 {
        self.frame(KIND_CLOSE, |b| {
            b.extend_from_slice(&c.key_seq.to_le_bytes());
            b.extend_from_slice(&c.last_seq.to_le_bytes());
            b.extend_from_slice(&c.shard.to_le_bytes());
            b.push(encoding_byte(c.encoding));
            b.extend_from_slice(&compression_bytes(c.compression));
            put_str(b, &c.partition);
            put_str(b, &c.key);
        });
        self.written + self.buf.len() as u64
    }
    /// Writes the buffered frames (starting a new segment first if the active
    /// one is full); returns the logical position after them, for
    /// [`Durability::sync_to`].
    pub fn commit(&mut self) -> io::Result<u64> {
        if self.buf.is_empty() {
            return Ok(self.written);
        }
        // A new segment is named after its first event. When the active
        // segment holds no event yet (only close and uploaded frames) that
        // name is its own: keep writing to it rather than recreate (and
        // truncate) it, which would lose those frames.
        let id = self.next_seq - self.buf_events;
        if self.active_len + self.buf.len() as u64 > self.segment_bytes
            && self.active_len > MAGIC.len() as u64
            && id > self.active_id
        {
            self.roll(id)?;
        }
        (&*self.active).write_all(&self.buf)?;
        let n = self.buf.len() as u64;
        self.buf.clear();
        self.active_len += n;
        self.total_bytes += n;
        self.written += n;
        let seg = self
            .segments
            .get_mut(&self.active_id)
            .expect("the active segment is listed");
        seg.bytes += n;
        seg.live += self.buf_events;
        self.buf_events = 0;
        self.durability
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1 = self.written;
        Ok(self.written)
    }

    fn roll(&mut self, id: u64) -> io::Result<()> {
        if self.fsync != SpoolFsync::Never {
            self.active.sync_data()?;
        }
        let file = Arc::new(create_segment(&self.dir, id, self.fsync)?);
        self.segments.insert(
            id,
            Segment {
                bytes: MAGIC.len() as u64,
                live: 0,
            },
        );
        self.total_bytes += MAGIC.len() as u64;
        self.active = Arc::clone(&file);
        self.active_id = id;
        self.active_len = MAGIC.len() as u64;
        // Everything in the old file is synced (or the policy is `Never`).
        let mut cur = self
            .durability
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cur.0 = file;
        drop(cur);
        if self.fsync != SpoolFsync::Never {
            let written = self.written;
            self.durability
                .synced
                .send_modify(|s| *s = (*s).max(written));
        }
        Ok(())
    }

    /// Records that the batch `key_seq` (events `seqs`) is stored: writes its
    /// uploaded frame and counts its events out of their segments. Returns
    /// the logical position after the frame. The segments this empties are
    /// deleted by [`Spool::deletable`], [`delete`] and [`Spool::deleted`].
    pub fn uploaded(&mut self, key_seq: u64, seqs: &[u64]) -> io::Result<u64> {
        self.frame(KIND_UPLOADED, |b| {
            b.extend_from_slice(&key_seq.to_le_bytes())
        });
        let pos = self.commit()?;
        for &seq in seqs {
            if let Some((_, s)) = self.segments.range_mut(..=seq).next_back() {
                s.live = s.live.saturating_sub(1);
            }
        }
        Ok(pos)
    }

    /// The oldest segments, in order, that hold no event left to upload (never
    /// the active one), as `(id, bytes)`, and the logical position that must
    /// be durable before their files go (it covers every uploaded frame
    /// written so far). They stay listed until [`Spool::deleted`]; the caller
    /// deletes them oldest first and one caller at a time, so a segment file
    /// is never removed while an older one is still on disk (a crash in
    /// between would replay the older one's events without the close and
    /// uploaded frames that were in the newer one).
    pub fn deletable(&self) -> (Vec<(u64, u64)>, u64) {
        let gone = self
            .segments
            .iter()
            .take_while(|(&id, seg)| id != self.active_id && seg.live == 0)
            .map(|(&id, seg)| (id, seg.bytes))
            .collect();
        (gone, self.written)
    }

    /// Takes segments whose files [`delete`] removed out of the accounting.
    pub fn deleted(&mut self, gone: &[(u64, u64)]) {
        for &(id, bytes) in gone {
            if self.segments.remove(&id).is_some() {
                self.total_bytes = self.total_bytes.saturating_sub(bytes);
            }
        }
    }

    /// The directory of the spool.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Deletes the segment files `gone` (from [`Spool::deletable`]) oldest
/// first; stops at the first that cannot be removed, so that no newer one
/// goes while it stays. Returns how many are gone (a file already missing
/// counts).
pub(crate) fn delete(dir: &Path, gone: &[(u64, u64)]) -> usize {
    for (i, &(id, _)) in gone.iter().enumerate() {
        match std::fs::remove_file(segment_path(dir, id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                // Kept, with every newer one, until a later upload retries.
                tracing::warn!(segment = id, error = %e, "spool: could not delete a segment");
                return i;
            }
        }
    }
    gone.len()
}

/// Reads the instance id stored in `dir`, or stores `fallback` there.
pub(crate) fn instance_id(dir: &Path, fallback: impl FnOnce() -> String) -> io::Result<String> {
    let path = dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Ok(_) | Err(_) => {
            let id = fallback();
            let tmp = dir.join("instance-id.tmp");
            let mut f = File::create(&tmp)?;
            f.write_all(id.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()?;
            Ok(id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(key_seq: u64, last_seq: u64, shard: u16, partition: &str, key: &str) -> CloseFrame {
        CloseFrame {
            key_seq,
            last_seq,
            shard,
            encoding: Encoding::Ndjson,
            compression: Compression::gzip(),
            partition: partition.into(),
            key: key.into(),
        }
    }

    fn opts(dir: &Path) -> SpoolOptions {
        SpoolOptions::new(dir).with_fsync(SpoolFsync::Never)
    }

    #[test]
    fn replays_open_and_closed_batches() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, r) = Spool::open(&opts(dir.path())).unwrap();
            assert!(r.closed.is_empty() && r.open.is_empty());
            let a0 = s.append_event(0, "a/", b"{\"n\":0}");
            s.append_event(0, "b/", b"{\"n\":1}");
            let a2 = s.append_event(0, "a/", b"{\"n\":2}");
            // The next batch's first event, written before the close frame.
            s.append_event(0, "a/", b"{\"n\":3}");
            // Another shard's batch of the same partition stays open.
            s.append_event(1, "a/", b"{\"n\":4}");
            s.append_close(&close(a0, a2, 0, "a/", "a/i-0.ndjson.gz"));
            s.commit().unwrap();
            assert_eq!((a0, a2), (0, 2));
        }
        let (s, r) = Spool::open(&opts(dir.path())).unwrap();
        assert_eq!(r.closed.len(), 1);
        let c = &r.closed[0];
        assert_eq!(c.key.as_deref(), Some("a/i-0.ndjson.gz"));
        assert_eq!(
            c.records,
            vec![b"{\"n\":0}".to_vec(), b"{\"n\":2}".to_vec()]
        );
        assert_eq!(c.seqs, vec![0, 2]);
        assert_eq!(c.compression, Compression::gzip());
        let open: Vec<_> = r
            .open
            .iter()
            .map(|b| (b.shard, b.partition.as_str(), b.seqs.clone()))
            .collect();
        assert_eq!(
            open,
            vec![(0, "a/", vec![3]), (0, "b/", vec![1]), (1, "a/", vec![4])]
        );
        assert_eq!(s.next_seq, 5);
    }

    #[test]
    fn uploaded_batches_are_not_replayed_and_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path()).with_segment_bytes(4096);
        {
            let (mut s, _) = Spool::open(&o).unwrap();
            let rec = vec![b'x'; 1000];
            let mut seqs = Vec::new();
            for _ in 0..10 {
                seqs.push(s.append_event(0, "p/", &rec));
                s.commit().unwrap();
            }
            assert!(s.segments.len() >= 3, "{:?}", s.segments);
            s.append_close(&close(seqs[0], seqs[9], 0, "p/", "k0"));
            s.commit().unwrap();
            let before = s.total_bytes();
            s.uploaded(seqs[0], &seqs).unwrap();
            let (gone, _) = s.deletable();
            assert!(!gone.is_empty());
            assert_eq!(delete(dir.path(), &gone), gone.len());
            s.deleted(&gone);
            assert!(s.total_bytes() < before);
            assert!(s.deletable().0.is_empty());
            // One more event after the upload stays open.
            s.append_event(0, "p/", b"{}");
            s.commit().unwrap();
        }
        let (s, r) = Spool::open(&o).unwrap();
        assert!(r.closed.is_empty(), "{:?}", r.closed);
        assert_eq!(r.open.len(), 1);
        assert_eq!(r.open[0].seqs, vec![10]);
        assert_eq!(s.next_seq, 11);
    }

    #[test]
    fn torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Spool::open(&opts(dir.path())).unwrap();
            s.append_event(0, "p/", b"{\"ok\":1}");
            s.append_event(0, "p/", b"{\"ok\":2}");
            s.commit().unwrap();
        }
        let seg = segment_path(dir.path(), 0);
        let len = std::fs::metadata(&seg).unwrap().len();
        // Cut the last frame in half, as a crash mid-write would.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 4).unwrap();
        drop(f);
        let (_, r) = Spool::open(&opts(dir.path())).unwrap();
        assert_eq!(r.open.len(), 1);
        assert_eq!(r.open[0].records, vec![b"{\"ok\":1}".to_vec()]);
        assert!(r.torn_bytes > 0);
        // A flipped byte fails the CRC the same way.
        let data = std::fs::read(&seg).unwrap();
        let mut bad = data.clone();
        let last = bad.len() - 2;
        bad[last] ^= 0xff;
        std::fs::write(&seg, &bad).unwrap();
        let (_, r) = Spool::open(&opts(dir.path())).unwrap();
        assert!(r.open.is_empty(), "{:?}", r.open);
    }

    #[test]
    fn sequence_numbers_survive_deletion_of_every_segment() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        {
            let (mut s, _) = Spool::open(&o).unwrap();
            let a = s.append_event(0, "p/", b"1");
            let b = s.append_event(0, "p/", b"2");
            s.append_close(&close(a, b, 0, "p/", "k"));
            s.commit().unwrap();
            s.uploaded(a, &[a, b]).unwrap();
        }
        // Reopen twice: the old active segment becomes deletable, the new
        // one is named after the next sequence number.
        let (s, r) = Spool::open(&o).unwrap();
        assert!(r.closed.is_empty() && r.open.is_empty());
        assert_eq!(s.next_seq, 2);
        drop(s);
        let (s, _) = Spool::open(&o).unwrap();
        assert_eq!(s.next_seq, 2);
    }

    /// Frames in a last segment without events (close and uploaded frames
    /// written after a restart) survive the next restart.
    #[test]
    fn frames_in_an_event_less_last_segment_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        {
            let (mut s, _) = Spool::open(&o).unwrap();
            s.append_event(0, "p/", b"1");
            s.append_event(0, "p/", b"2");
            s.commit().unwrap();
        }
        {
            // The restart's new segment gets only the close and uploaded frames.
            let (mut s, r) = Spool::open(&o).unwrap();
            assert_eq!(r.open.len(), 1);
            s.append_close(&close(0, 1, 0, "p/", "k"));
            s.commit().unwrap();
            s.uploaded(0, &[0, 1]).unwrap();
        }
        for _ in 0..2 {
            let (s, r) = Spool::open(&o).unwrap();
            assert!(r.open.is_empty() && r.closed.is_empty(), "{r:?}");
            assert_eq!(s.next_seq, 2);
        }
    }

    /// Events committed after enough frames to fill the segment do not
    /// recreate the segment (named after the same sequence number) and so
    /// keep those frames.
    #[test]
    fn a_full_event_less_segment_is_not_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path()).with_segment_bytes(4096);
        {
            let (mut s, _) = Spool::open(&o).unwrap();
            let a = s.append_event(0, "p/", b"1");
            s.commit().unwrap();
            s.append_close(&close(a, a, 0, "p/", "k"));
            s.commit().unwrap();
        }
        {
            // After a restart: enough frames to fill the new segment, then
            // events.
            let (mut s, r) = Spool::open(&o).unwrap();
            assert_eq!(r.closed.len(), 1);
            s.uploaded(0, &[0]).unwrap();
            for _ in 0..100 {
                s.append_close(&close(7, 7, 1, "q/", &"x".repeat(60)));
            }
            s.commit().unwrap();
            s.append_event(0, "p/", b"2");
            s.commit().unwrap();
        }
        let (_, r) = Spool::open(&o).unwrap();
        assert!(
            r.closed.is_empty(),
            "the uploaded frame was lost: {:?}",
            r.closed
        );
        assert_eq!(r.open.len(), 1);
        assert_eq!(r.open[0].records, vec![b"2".to_vec()]);
    }

    /// A segment file left empty by a crash right after its creation is
    /// removed, not reused without its header (which lost everything later
    /// written to it).
    #[test]
    fn an_empty_segment_file_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        {
            let (mut s, _) = Spool::open(&o).unwrap();
            s.append_event(0, "p/", b"1");
            s.commit().unwrap();
        }
        // The crash: the next segment (named after the next sequence
        // number) exists but is empty.
        std::fs::write(segment_path(dir.path(), 1), b"").unwrap();
        {
            let (mut s, r) = Spool::open(&o).unwrap();
            assert_eq!(r.open.len(), 1);
            s.append_event(0, "p/", b"2");
            s.commit().unwrap();
        }
        let (_, r) = Spool::open(&o).unwrap();
        let records: Vec<_> = r.open.iter().flat_map(|b| b.records.clone()).collect();
        assert_eq!(records, vec![b"1".to_vec(), b"2".to_vec()]);
    }

    #[test]
    fn fsync_parses() {
        assert_eq!("always".parse::<SpoolFsync>().unwrap(), SpoolFsync::Always);
        assert_eq!("never".parse::<SpoolFsync>().unwrap(), SpoolFsync::Never);
        assert_eq!(
            "10ms".parse::<SpoolFsync>().unwrap(),
            SpoolFsync::Interval(Duration::from_millis(10))
        );
        let e = "sometimes".parse::<SpoolFsync>().unwrap_err().to_string();
        assert!(e.contains("fsync") && e.contains("sometimes"), "{e}");
    }
}
