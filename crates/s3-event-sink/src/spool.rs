//! The sink's durable spool: an append-only log of every accepted event and
//! of the batch boundaries, from which a restarted sink re-uploads exactly
//! what had not been stored yet, under the same object keys.
//!
//! # Layout
//!
//! A [durable log](s3_event_core::log) (segments `<n>.spool`, a `LOCK`, the
//! log's frames and fsync rounds) plus an `instance-id` file and a `reserve`
//! file. Each frame's payload is `[kind: u8][body]`:
//!
//! - **event**: `seq: u64`, the shard, the partition, the record's JSON
//!   bytes. Every event gets the next sequence number; numbers are never
//!   reused (a segment's base carries the next number across restarts, and
//!   the newest segment is never deleted). A write that fails burns its
//!   numbers.
//! - **close**: `key_seq: u64` (the sequence number of the batch's first
//!   event), `last_seq: u64` (its last), the shard, encoding, compression,
//!   the partition and the object key. It closes every event of that shard
//!   and partition up to `last_seq` that no earlier close covers — a shard's
//!   batches of a partition are consecutive, so no event list is needed.
//!   (A shard is one of the sink's independently locked sets of open
//!   batches; events of a batch are written before its close frame, and
//!   events of the next batch may come before it too.) A second close frame
//!   for the same `key_seq` (rewritten after a failed fsync) is ignored.
//!   Written since the delivery numbers (kind 4), the body starts with
//!   `number: u64` and `records: u64`: the batch's records are the
//!   instance's delivery numbers `number .. number + records` (see below).
//! - **uploaded**: `key_seq: u64`, written once the object is stored.
//!
//! # Delivery numbers
//!
//! The manifest of every object (see [`crate::manifest`]) lists the numbers
//! of its records, and `s3-event verify` reports the holes between them.
//! Event sequence numbers would leave holes that lose nothing (a refused
//! write burns its numbers, batches of other partitions or shards take
//! numbers in between), so objects carry *delivery numbers* instead: one
//! counter per spool, from which each batch takes one consecutive run of
//! `records` numbers when its close frame is written, under the spool's lock,
//! so numbers are taken in the order the frames go into the log. A close
//! frame whose write fails gives its numbers back (nothing else took numbers
//! in between); one written again after a failed fsync keeps them. On open
//! the counter continues after the highest number in any close frame read,
//! or in the `numbers` file, which holds the end of the numbers of every
//! uploaded batch and is replaced (fsynced) before segments are deleted, so
//! that deleting the close frames never lets a number be given twice. A spool
//! that has never numbered a batch starts at its next event sequence number,
//! above any number an older version wrote into a manifest.
//!
//! So the numbers uploaded form one run without holes, across restarts and
//! kill -9: events that were not in a durable close frame at a crash are
//! numbered when they are closed on the next start, after the last durable
//! number. The one hole left is a double fault: a close frame whose fsync
//! failed, lost in a crash before it was written again, while a later frame
//! was durable; `verify` then reports its numbers missing although its
//! events are closed again (under new numbers) and uploaded.
//!
//! # Guarantees
//!
//! - An event is acknowledged only once its frame is written (and fsynced,
//!   per [`SpoolFsync`]); a write that fails is cut back by the log and its
//!   events are refused, never half-kept.
//! - A close frame is on disk before its object is uploaded: the uploader
//!   waits for the fsync round that covers it, and writes it again if that
//!   round failed. So a batch is never uploaded under a key that a restart
//!   could give to other events.
//! - On open the log cuts torn tails. Batches closed but not uploaded are
//!   re-encoded from their events and uploaded again under the key in their
//!   close frame; events of no closed batch are closed into new batches.
//!   They are streamed from disk a segment chunk at a time, so start-up
//!   memory is bounded by the open batches, not by the spool's size.
//! - Segments are deleted oldest first (never the newest), once every event
//!   in them is in an uploaded batch and the uploaded frames saying so are
//!   on disk, with a directory fsync after each deletion, so what a crash or
//!   a power cut leaves is always the newest segments.
//! - A second process (or sink) on the same directory is refused: the log
//!   holds an exclusive lock, and the error names the holder.
//! - A full disk: a write refused with ENOSPC makes the spool report itself
//!   full (pushes wait or get backpressure) until space comes back. A
//!   `reserve` file of [`RESERVE_BYTES`] is given up when a close or
//!   uploaded frame meets ENOSPC, so that batches can still be closed,
//!   uploaded and their segments deleted when the spool itself filled the
//!   disk; it is written again once there is room.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use s3_event_core::log::{self, Faults, FsyncPolicy, Legacy, Log, LogOptions, Token};

use crate::{Compression, Encoding};

const MAGIC: [u8; 8] = *b"S3ESPL02";
/// The spool's first format: this magic, no base, a CRC of the payload only.
const LEGACY_MAGIC: [u8; 8] = *b"S3ESPL01";
const KIND_EVENT: u8 = 1;
const KIND_CLOSE: u8 = 2;
const KIND_UPLOADED: u8 = 3;
/// A close frame with the batch's delivery numbers in front.
const KIND_CLOSE_NUMBERED: u8 = 4;
/// The side file holding the end of the numbers of every uploaded batch.
const NUMBERS_FILE: &str = "numbers";
/// The side file holding the record a Parquet schema was inferred from.
#[cfg(feature = "parquet")]
pub(crate) const SCHEMA_FILE: &str = "parquet-schema-record.json";
/// Room kept on the spool's disk for close and uploaded frames (256 KiB).
pub const RESERVE_BYTES: u64 = 256 * 1024;
const RESERVE_FILE: &str = "reserve";
/// After a write refused for lack of space, how long the spool reports
/// itself full before letting a write try again.
const FULL_RETRY: Duration = Duration::from_secs(1);

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
    /// Faults to inject into the spool's file operations (tests and soaks).
    pub faults: Option<Arc<Faults>>,
}

impl SpoolOptions {
    /// Options with the defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolOptions {
            dir: dir.into(),
            fsync: SpoolFsync::default(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            faults: None,
        }
    }

    /// Injects faults into the spool's file operations: short writes,
    /// failed fsyncs (for fault tests and soaks; see
    /// [`Faults`]).
    pub fn with_faults(mut self, faults: Arc<Faults>) -> Self {
        self.faults = Some(faults);
        self
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
#[derive(Clone, Debug)]
pub(crate) struct CloseFrame {
    /// The batch's first delivery number: `None` until its close frame is
    /// first written (see [`Spool::write_closes`]); `None` also in frames
    /// of spools written before numbering.
    pub number: Option<u64>,
    /// Its records (and events).
    pub records: u64,
    pub key_seq: u64,
    pub last_seq: u64,
    pub shard: u16,
    pub encoding: Encoding,
    pub compression: Compression,
    pub partition: String,
    pub key: String,
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
        #[cfg(feature = "parquet")]
        Encoding::Parquet(_) => 2,
    }
}

/// Parquet's options in a close frame: the page compression where the
/// object compression goes (that is `None` for Parquet), and after the key
/// (where a reader that predates them stops reading) the schema and the
/// row group size.
#[cfg(feature = "parquet")]
mod parquet_frame {
    use crate::{PageCompression, ParquetOptions, ParquetSchema};

    pub(super) fn compression(o: &ParquetOptions) -> [u8; 2] {
        match o.compression {
            PageCompression::None => [0, 0],
            PageCompression::Zstd { level } => [2, level.clamp(1, 22) as u8],
            PageCompression::Snappy => [3, 0],
        }
    }

    pub(super) fn tail(o: &ParquetOptions, b: &mut Vec<u8>) {
        b.push(match o.schema {
            ParquetSchema::CloudEvents => 0,
            ParquetSchema::S3Records => 1,
            ParquetSchema::Inferred => 2,
            ParquetSchema::S3Compact => 3,
        });
        b.extend_from_slice(&(o.row_group_size as u64).to_le_bytes());
    }

    pub(super) fn read(comp: (u8, u8), schema: u8, rows: u64) -> Option<ParquetOptions> {
        Some(ParquetOptions {
            compression: match comp {
                (0, _) => PageCompression::None,
                (2, level) => PageCompression::Zstd {
                    level: u32::from(level),
                },
                (3, _) => PageCompression::Snappy,
                _ => return None,
            },
            schema: match schema {
                0 => ParquetSchema::CloudEvents,
                1 => ParquetSchema::S3Records,
                2 => ParquetSchema::Inferred,
                3 => ParquetSchema::S3Compact,
                _ => return None,
            },
            row_group_size: usize::try_from(rows).ok()?.max(1),
        })
    }

    #[cfg(test)]
    #[test]
    fn every_schema_and_compression_reads_back() {
        let (s, p) = (ParquetSchema::CloudEvents, PageCompression::None);
        for schema in [
            s,
            ParquetSchema::S3Records,
            ParquetSchema::S3Compact,
            ParquetSchema::Inferred,
        ] {
            for compression in [
                p,
                PageCompression::Snappy,
                PageCompression::Zstd { level: 7 },
            ] {
                let o = ParquetOptions {
                    schema,
                    compression,
                    row_group_size: 77,
                };
                let mut b = Vec::new();
                tail(&o, &mut b);
                let n = u64::from_le_bytes(b[1..9].try_into().unwrap());
                let [c, l] = super::parquet_frame::compression(&o);
                assert_eq!(read((c, l), b[0], n), Some(o));
            }
        }
    }
}

fn compression_bytes(c: Compression) -> [u8; 2] {
    match c {
        Compression::None => [0, 0],
        Compression::Gzip { level } => [1, level.min(9) as u8],
        Compression::Zstd { level } => [2, level.clamp(1, 19) as u8],
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
    Close(CloseFrame),
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
        KIND_CLOSE => Frame::Close(parse_close(r, None)?),
        KIND_CLOSE_NUMBERED => {
            let number = (r.u64()?, r.u64()?);
            Frame::Close(parse_close(r, Some(number))?)
        }
        KIND_UPLOADED => Frame::Uploaded { key_seq: r.u64()? },
        _ => return None,
    };
    Some(frame)
}

/// A close frame's body (after the numbers `(first, records)`, in a
/// numbered one).
fn parse_close(mut r: Reader<'_>, number: Option<(u64, u64)>) -> Option<CloseFrame> {
    let (key_seq, last_seq, shard) = (r.u64()?, r.u64()?, r.u16()?);
    let close = |encoding, compression, partition: &str, key: &str| CloseFrame {
        number: number.map(|(first, _)| first),
        records: number.map_or(0, |(_, records)| records),
        key_seq,
        last_seq,
        shard,
        encoding,
        compression,
        partition: partition.to_owned(),
        key: key.to_owned(),
    };
    let encoding = match r.u8()? {
        0 => Encoding::Ndjson,
        1 => Encoding::JsonArray,
        #[cfg(feature = "parquet")]
        2 => {
            let comp = (r.u8()?, r.u8()?);
            let partition = r.str()?;
            let key = r.str()?;
            let opts = parquet_frame::read(comp, r.u8()?, r.u64()?)?;
            return Some(close(
                Encoding::Parquet(opts),
                Compression::None,
                partition,
                key,
            ));
        }
        _ => return None,
    };
    let compression = match (r.u8()?, r.u8()?) {
        (0, _) => Compression::None,
        (1, level) => Compression::Gzip {
            level: u32::from(level),
        },
        (2, level) => Compression::Zstd {
            level: u32::from(level),
        },
        _ => return None,
    };
    let partition = r.str()?;
    let key = r.str()?;
    Some(close(encoding, compression, partition, key))
}

/// A batch found on open that still has to be uploaded: closed (with its
/// key) or built from events no close frame covers (`key` is `None`).
#[derive(Clone, Debug)]
pub(crate) struct PendingBatch {
    pub key_seq: u64,
    pub last_seq: u64,
    pub shard: u16,
    pub partition: String,
    pub key: Option<String>,
    /// Its first delivery number, from its close frame (`None` for events
    /// of no close frame, and for frames written before numbering).
    pub number: Option<u64>,
    pub encoding: Encoding,
    pub compression: Compression,
    /// Its events.
    pub count: u64,
    /// `(segment, events)` runs of its events, for the live counts.
    segments: Vec<(u64, u64)>,
    /// The token that makes its close frame durable (0 when it was read
    /// from the log).
    pub durable_at: Token,
}

/// What [`Spool::open`] found: the batches to upload again.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Closed, not uploaded, by key sequence number.
    pub closed: Vec<PendingBatch>,
    /// Events of no closed batch, per shard and partition, in order.
    pub open: Vec<PendingBatch>,
    /// Bytes cut from a torn tail, or skipped after bad frames.
    pub torn_bytes: u64,
    /// The segments to replay them from.
    pub segments: Vec<u64>,
}

impl Recovered {
    pub fn is_empty(&self) -> bool {
        self.closed.is_empty() && self.open.is_empty()
    }
}

/// The spool itself; owned by the sink's state and used under its lock.
pub(crate) struct Spool {
    log: Arc<Log>,
    dir: PathBuf,
    fsync: SpoolFsync,
    max_bytes: u64,
    next_seq: u64,
    /// The next delivery number, and where it stood before the buffered
    /// close frames took theirs (given back if their write fails).
    next_number: u64,
    buf_number_start: Option<u64>,
    /// The end of the numbers of every uploaded batch (and of every close
    /// frame read on open), and the `numbers` file that keeps it.
    uploaded_numbers: u64,
    numbers_file: log::SideFile,
    /// First event sequence number of each segment holding events, to find
    /// an event's segment.
    seg_first: BTreeMap<u64, u64>,
    /// Events not yet in an uploaded batch, per segment.
    live: BTreeMap<u64, u64>,
    /// Frames not yet written: payloads back to back, and their ends.
    buf: Vec<u8>,
    ends: Vec<usize>,
    buf_events: u64,
    /// Set when a write met a full disk; cleared when segments are deleted
    /// (or, to probe, after [`FULL_RETRY`]).
    full_since: Option<Instant>,
    reserve: bool,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("fsync", &self.fsync)
            .field("segments", &self.live.len())
            .field("next_seq", &self.next_seq)
            .field("next_number", &self.next_number)
            .finish_non_exhaustive()
    }
}

impl From<SpoolFsync> for FsyncPolicy {
    fn from(f: SpoolFsync) -> Self {
        match f {
            SpoolFsync::Always => FsyncPolicy::Always,
            SpoolFsync::Interval(d) => FsyncPolicy::Every(d),
            SpoolFsync::Never => FsyncPolicy::Never,
        }
    }
}

/// Per shard and partition while reading the log: events no close covers
/// yet, as `(seq, segment)`.
type OpenEvents = HashMap<(u16, String), VecDeque<(u64, u64)>>;

fn runs(events: impl Iterator<Item = (u64, u64)>) -> (Vec<(u64, u64)>, u64, u64, u64) {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let (mut first, mut last, mut count) = (u64::MAX, 0, 0);
    for (seq, seg) in events {
        first = first.min(seq);
        last = last.max(seq);
        count += 1;
        match runs.last_mut() {
            Some((s, n)) if *s == seg => *n += 1,
            _ => runs.push((seg, 1)),
        }
    }
    (runs, first, last, count)
}

/// The spool's batch bookkeeping, read frame by frame on open.
#[derive(Default)]
struct Bookkeeping {
    next_seq: u64,
    /// The end of the delivery numbers of every numbered close frame.
    numbers_end: Option<u64>,
    /// Per shard and partition, events no close covers yet, in first-seen
    /// order of the pairs.
    open: OpenEvents,
    order: Vec<(u16, String)>,
    /// Closed batches not (yet) seen uploaded, by key sequence number.
    closed: BTreeMap<u64, PendingBatch>,
    /// First event sequence number per segment.
    seg_first: BTreeMap<u64, u64>,
    /// Segments with frames, in order.
    segments: Vec<u64>,
    unreadable: u64,
}

impl Bookkeeping {
    fn visit(&mut self, f: log::FrameRef<'_>) {
        if self.segments.last() != Some(&f.segment) {
            self.segments.push(f.segment);
        }
        let Some(frame) = f
            .payload
            .split_first()
            .and_then(|(k, b)| parse_frame(*k, b))
        else {
            self.unreadable += 1;
            return;
        };
        match frame {
            Frame::Event {
                seq,
                shard,
                partition,
                ..
            } => {
                self.next_seq = self.next_seq.max(seq + 1);
                self.seg_first.entry(f.segment).or_insert(seq);
                let k = (shard, partition.to_owned());
                let order = &mut self.order;
                self.open
                    .entry(k.clone())
                    .or_insert_with(|| {
                        order.push(k);
                        VecDeque::new()
                    })
                    .push_back((seq, f.segment));
            }
            Frame::Close(c) => {
                if let Some(first) = c.number {
                    let end = first + c.records;
                    self.numbers_end = Some(self.numbers_end.map_or(end, |e| e.max(end)));
                }
                self.close(c)
            }
            Frame::Uploaded { key_seq } => {
                self.closed.remove(&key_seq);
            }
        }
    }

    /// A close frame takes every open event of its shard and partition up
    /// to its last sequence number.
    fn close(&mut self, c: CloseFrame) {
        if self.closed.contains_key(&c.key_seq) {
            return; // written again after a failed fsync
        }
        let mut taken = Vec::new();
        if let Some(q) = self.open.get_mut(&(c.shard, c.partition.clone())) {
            while q.front().is_some_and(|(s, _)| *s <= c.last_seq) {
                taken.push(q.pop_front().expect("front"));
            }
        }
        let (segments, _, _, count) = runs(taken.into_iter());
        // None left: its events' segments were deleted, that is, it was
        // uploaded (its uploaded frame follows).
        if count > 0 {
            self.closed.insert(
                c.key_seq,
                PendingBatch {
                    key_seq: c.key_seq,
                    last_seq: c.last_seq,
                    shard: c.shard,
                    partition: c.partition,
                    key: Some(c.key),
                    number: c.number,
                    encoding: c.encoding,
                    compression: c.compression,
                    count,
                    segments,
                    durable_at: 0,
                },
            );
        }
    }

    /// The batches left to upload, and each segment's count of their events.
    fn finish(mut self, segments: &[log::SegmentInfo]) -> (Vec<PendingBatch>, BTreeMap<u64, u64>) {
        let mut live: BTreeMap<u64, u64> = segments.iter().map(|s| (s.segment, 0)).collect();
        let mut pending: Vec<PendingBatch> =
            std::mem::take(&mut self.closed).into_values().collect();
        for k in std::mem::take(&mut self.order) {
            let Some(q) = self.open.remove(&k).filter(|q| !q.is_empty()) else {
                continue;
            };
            let (segs, first, last, count) = runs(q.into_iter());
            pending.push(PendingBatch {
                key_seq: first,
                last_seq: last,
                shard: k.0,
                partition: k.1,
                key: None,
                number: None,
                encoding: Encoding::Ndjson,
                compression: Compression::None,
                count,
                segments: segs,
                durable_at: 0,
            });
        }
        for b in &pending {
            for &(seg, n) in &b.segments {
                *live.entry(seg).or_default() += n;
            }
        }
        (pending, live)
    }
}

impl Spool {
    /// Opens (or creates) the spool in `opts.dir`: takes its lock, cuts torn
    /// tails and reads the log's batch bookkeeping (not the records: see
    /// [`replay`]).
    pub fn open(opts: &SpoolOptions) -> log::Result<(Spool, Recovered)> {
        // A segment must be well under the bound, or a full spool could be
        // one active segment that is never deleted.
        let segment_bytes = opts.segment_bytes.min(opts.max_bytes / 4).max(4096);
        let log_opts = LogOptions::new("spool", MAGIC)
            .with_legacy(Legacy::MagicPayloadCrc(LEGACY_MAGIC))
            .with_segment_bytes(segment_bytes)
            .with_fsync(opts.fsync.into())
            .with_what("spool")
            .with_faults(opts.faults.clone());
        let mut book = Bookkeeping::default();
        let (log, found) = Log::open(&opts.dir, log_opts, |f| book.visit(f))?;
        if book.unreadable > 0 {
            tracing::error!(
                frames = book.unreadable,
                "spool: frames with a good checksum but an unknown body skipped"
            );
        }
        let segments = log.segments();
        // The newest segment's base is the next number when its events (or
        // all of them) were deleted.
        let next_seq = book.next_seq.max(segments.last().map_or(0, |s| s.base));
        let (numbers_file, saved) = log.side_file(NUMBERS_FILE)?;
        let saved = std::str::from_utf8(&saved)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        // Never numbered here: start above any event sequence number, which
        // older versions put into manifests.
        let next_number = match (saved, book.numbers_end) {
            (None, None) => next_seq,
            (a, b) => a.unwrap_or(0).max(b.unwrap_or(0)),
        };
        let seg_first = std::mem::take(&mut book.seg_first)
            .into_iter()
            .map(|(seg, seq)| (seq, seg))
            .collect();
        let replay_segments = std::mem::take(&mut book.segments);
        let (pending, live) = book.finish(&segments);
        let (closed, open) = pending.into_iter().partition(|b| b.key.is_some());
        let recovered = Recovered {
            closed,
            open,
            torn_bytes: found
                .truncated
                .iter()
                .chain(&found.corrupt)
                .map(|d| d.bytes)
                .sum(),
            segments: replay_segments,
        };
        if !recovered.is_empty() {
            // New frames go to a new segment while the old ones are replayed.
            log.seal();
        }
        let mut spool = Spool {
            log: Arc::new(log),
            dir: opts.dir.clone(),
            fsync: opts.fsync,
            max_bytes: opts.max_bytes,
            next_seq,
            next_number,
            buf_number_start: None,
            uploaded_numbers: next_number,
            numbers_file,
            seg_first,
            live,
            buf: Vec::new(),
            ends: Vec::new(),
            buf_events: 0,
            full_since: None,
            reserve: false,
        };
        spool.make_reserve();
        Ok((spool, recovered))
    }

    pub fn fsync(&self) -> SpoolFsync {
        self.fsync
    }

    /// The log, for fsync waits and replay outside the spool's lock.
    pub fn log(&self) -> Arc<Log> {
        Arc::clone(&self.log)
    }

    /// Bytes of all segments on disk.
    pub fn total_bytes(&self) -> u64 {
        self.log.disk_bytes()
    }

    /// Whether the spool is at or past its size bound, or its disk was
    /// found full (for [`FULL_RETRY`] after each refusal, or until a
    /// deletion frees room).
    pub fn is_full(&self) -> bool {
        if self.full_since.is_some_and(|t| t.elapsed() < FULL_RETRY) {
            return true;
        }
        self.total_bytes() >= self.max_bytes
    }

    /// The record an inferred Parquet schema was inferred from, if one was
    /// kept (see [`Spool::keep_schema_record`]).
    #[cfg(feature = "parquet")]
    pub fn kept_schema_record(&self) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(SCHEMA_FILE)) {
            Ok(b) if !b.is_empty() => Ok(Some(b)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Keeps the record an inferred Parquet schema is inferred from, so a
    /// restarted sink infers the same schema (for new events and for the
    /// spooled ones it uploads again). Returns the token that makes it
    /// durable; a write of an event after it waits for a later one.
    #[cfg(feature = "parquet")]
    pub fn keep_schema_record(&mut self, record: &[u8]) -> log::Result<Token> {
        let (mut file, _) = self.log.side_file(SCHEMA_FILE)?;
        file.replace(record)
    }

    fn frame(&mut self, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
        self.buf.push(kind);
        body(&mut self.buf);
        self.ends.push(self.buf.len());
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

    /// Writes close frames (see [`Spool::commit`]), giving each frame that
    /// has no delivery numbers yet the next `records` numbers, and the key
    /// `name` makes of the frame and its first number. If the write fails,
    /// the numbers are given back and taken out of the frames again.
    pub fn write_closes<'a>(
        &mut self,
        closes: impl IntoIterator<Item = &'a mut CloseFrame>,
        mut name: impl FnMut(&CloseFrame, u64) -> String,
    ) -> log::Result<Token> {
        let mut closes: Vec<&'a mut CloseFrame> = closes.into_iter().collect();
        let mut fresh = vec![false; closes.len()];
        for (c, fresh) in closes.iter_mut().zip(&mut fresh) {
            if c.number.is_none() {
                self.buf_number_start.get_or_insert(self.next_number);
                c.number = Some(self.next_number);
                c.key = name(c, self.next_number);
                self.next_number += c.records;
                *fresh = true;
            }
            self.append_close(c);
        }
        let res = self.commit();
        if res.is_err() {
            for (c, fresh) in closes.iter_mut().zip(fresh) {
                if fresh {
                    c.number = None;
                }
            }
        }
        res
    }

    /// Buffers a close frame (with its numbers, if it has them).
    pub fn append_close(&mut self, c: &CloseFrame) {
        let kind = match c.number {
            Some(_) => KIND_CLOSE_NUMBERED,
            None => KIND_CLOSE,
        };
        self.frame(kind, |b| {
            if let Some(n) = c.number {
                b.extend_from_slice(&n.to_le_bytes());
                b.extend_from_slice(&c.records.to_le_bytes());
            }
            b.extend_from_slice(&c.key_seq.to_le_bytes());
            b.extend_from_slice(&c.last_seq.to_le_bytes());
            b.extend_from_slice(&c.shard.to_le_bytes());
            b.push(encoding_byte(c.encoding));
            #[cfg(feature = "parquet")]
            if let Encoding::Parquet(o) = &c.encoding {
                b.extend_from_slice(&parquet_frame::compression(o));
                put_str(b, &c.partition);
                put_str(b, &c.key);
                parquet_frame::tail(o, b);
                return;
            }
            b.extend_from_slice(&compression_bytes(c.compression));
            put_str(b, &c.partition);
            put_str(b, &c.key);
        });
    }

    /// Writes the buffered frames with one write; returns the token that
    /// makes them durable. On failure the frames are dropped (their
    /// sequence numbers are never used again) and nothing of them is left
    /// in the log: the caller refuses the events, or writes its close and
    /// uploaded frames again later.
    pub fn commit(&mut self) -> log::Result<Token> {
        if self.ends.is_empty() {
            return Ok(self.log.written());
        }
        let events = std::mem::take(&mut self.buf_events);
        let first_seq = self.next_seq - events;
        let mut result = self.write();
        if let Err(e) = &result {
            if e.io_kind() == Some(io::ErrorKind::StorageFull) {
                self.full_since = Some(Instant::now());
                if events == 0 && self.give_up_reserve() {
                    // Close and uploaded frames get the reserve's room.
                    result = self.write();
                }
            }
        }
        self.buf.clear();
        self.ends.clear();
        let given_back = self.buf_number_start.take();
        let a = match result {
            Ok(a) => a,
            Err(e) => {
                if let Some(n) = given_back {
                    self.next_number = n;
                }
                return Err(e);
            }
        };
        if events > 0 {
            if self.seg_first.values().next_back() != Some(&a.segment) {
                self.seg_first.insert(first_seq, a.segment);
            }
            *self.live.entry(a.segment).or_default() += events;
        }
        self.live.entry(a.segment).or_default();
        Ok(a.token)
    }

    fn write(&self) -> log::Result<log::Appended> {
        let mut frames = Vec::with_capacity(self.ends.len());
        let mut start = 0;
        for &end in &self.ends {
            frames.push(&self.buf[start..end]);
            start = end;
        }
        self.log.append(&frames, self.next_seq)
    }

    /// Records that the batch `key_seq` (events `seqs`, delivery numbers
    /// ending before `numbers_end`) is stored: writes its uploaded frame and
    /// counts its events out of their segments. Returns the token that makes
    /// the frame durable. On failure nothing changed: call again later.
    pub fn uploaded(
        &mut self,
        key_seq: u64,
        seqs: &[u64],
        numbers_end: Option<u64>,
    ) -> log::Result<Token> {
        self.frame(KIND_UPLOADED, |b| {
            b.extend_from_slice(&key_seq.to_le_bytes())
        });
        let token = self.commit()?;
        if let Some(end) = numbers_end {
            self.uploaded_numbers = self.uploaded_numbers.max(end);
        }
        for &seq in seqs {
            if let Some((_, seg)) = self.seg_first.range(..=seq).next_back() {
                if let Some(n) = self.live.get_mut(seg) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        Ok(token)
    }

    /// The newest segment of the oldest run that holds no event left to
    /// upload (never the newest segment), and the token that must be
    /// durable before they go: it covers every uploaded frame so far, and
    /// the `numbers` file, replaced here with the end of the uploaded
    /// batches' numbers (the close frames that go with the segments hold
    /// no higher number). `Err` if that file could not be written: keep the
    /// segments.
    pub fn deletable(&mut self) -> log::Result<Option<(u64, Token)>> {
        let Some((through, token)) = self.deletable_segments() else {
            return Ok(None);
        };
        let saved = self
            .numbers_file
            .replace(format!("{}\n", self.uploaded_numbers).as_bytes())?;
        Ok(Some((through, token.max(saved))))
    }

    fn deletable_segments(&self) -> Option<(u64, Token)> {
        let segments = self.log.segments();
        let newest = segments.last()?.segment;
        let through = segments
            .iter()
            .take_while(|s| {
                s.segment != newest && self.live.get(&s.segment).copied().unwrap_or(0) == 0
            })
            .map(|s| s.segment)
            .last()?;
        Some((through, self.log.written()))
    }

    /// Takes the segments [`Log::remove_through`] removed out of the
    /// accounting, and makes room again.
    pub fn deleted(&mut self) {
        let on_disk: std::collections::BTreeSet<u64> =
            self.log.segments().iter().map(|s| s.segment).collect();
        self.live.retain(|s, _| on_disk.contains(s));
        self.seg_first.retain(|_, s| on_disk.contains(s));
        self.full_since = None;
        if !self.reserve {
            self.make_reserve();
        }
    }

    fn make_reserve(&mut self) {
        let path = self.dir.join(RESERVE_FILE);
        let made = (|| -> io::Result<()> {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            if f.metadata()?.len() < RESERVE_BYTES {
                f.write_all_at(&vec![0u8; RESERVE_BYTES as usize], 0)?;
                if self.fsync != SpoolFsync::Never {
                    f.sync_all()?;
                }
            }
            Ok(())
        })();
        self.reserve = match made {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "spool: no room for the reserve file; will try again after a deletion");
                let _ = std::fs::remove_file(&path);
                false
            }
        };
    }

    fn give_up_reserve(&mut self) -> bool {
        if !self.reserve {
            return false;
        }
        self.reserve = false;
        let gone = std::fs::remove_file(self.dir.join(RESERVE_FILE)).is_ok();
        if gone {
            tracing::warn!(
                "spool: the disk is full; using the reserve to close and upload batches"
            );
        }
        gone
    }
}

/// Streams the records of `batches` (what [`Spool::open`] found) from the
/// log, a bounded chunk at a time: calls `on(i, Some((seq, record)))` for
/// each event of batch `i`, in order, and `on(i, None)` once its last event
/// was given.
pub(crate) fn replay(
    log: &Log,
    segments: &[u64],
    batches: &[PendingBatch],
    mut on: impl FnMut(usize, Option<(u64, &[u8])>),
) -> log::Result<()> {
    // Per shard and partition: `(key_seq, last_seq, batch)`, sorted.
    type Ranges<'a> = HashMap<(u16, &'a str), Vec<(u64, u64, usize)>>;
    let mut ranges: Ranges<'_> = HashMap::new();
    for (i, b) in batches.iter().enumerate() {
        ranges
            .entry((b.shard, b.partition.as_str()))
            .or_default()
            .push((b.key_seq, b.last_seq, i));
    }
    for r in ranges.values_mut() {
        r.sort_unstable();
    }
    let mut left: Vec<u64> = batches.iter().map(|b| b.count).collect();
    for &segment in segments {
        log.scan(segment, |f| {
            let Some(Frame::Event {
                seq,
                shard,
                partition,
                record,
            }) = f
                .payload
                .split_first()
                .and_then(|(k, b)| parse_frame(*k, b))
            else {
                return;
            };
            let Some(r) = ranges.get(&(shard, partition)) else {
                return;
            };
            let at = r.partition_point(|(first, _, _)| *first <= seq);
            let Some(&(_, last, i)) = at.checked_sub(1).map(|k| &r[k]) else {
                return;
            };
            if seq > last || left[i] == 0 {
                return; // in an uploaded batch
            }
            on(i, Some((seq, record)));
            left[i] -= 1;
            if left[i] == 0 {
                on(i, None);
            }
        })?;
    }
    for (i, n) in left.iter().enumerate() {
        if *n > 0 {
            tracing::error!(
                batch = batches[i].key_seq,
                missing = n,
                "spool: events of a batch were not found again"
            );
            on(i, None);
        }
    }
    Ok(())
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

/// How many segment files `dir` holds (tests).
#[cfg(test)]
pub(crate) fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".spool")
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(key_seq: u64, last_seq: u64, shard: u16, partition: &str, key: &str) -> CloseFrame {
        CloseFrame {
            number: None,
            records: last_seq + 1 - key_seq,
            key_seq,
            last_seq,
            shard,
            encoding: Encoding::Ndjson,
            compression: Compression::gzip(),
            partition: partition.into(),
            key: key.into(),
        }
    }

    /// Keys as they were.
    fn keep(c: &CloseFrame, _: u64) -> String {
        c.key.clone()
    }

    fn opts(dir: &Path) -> SpoolOptions {
        SpoolOptions::new(dir).with_fsync(SpoolFsync::Never)
    }

    /// Opens the spool and replays what it found: each pending batch with
    /// its records.
    fn reopen(o: &SpoolOptions) -> (Spool, Recovered, Vec<Vec<Vec<u8>>>) {
        let (s, r) = Spool::open(o).unwrap();
        let batches: Vec<PendingBatch> = r.closed.iter().chain(&r.open).cloned().collect();
        let mut records = vec![Vec::new(); batches.len()];
        let mut done = vec![false; batches.len()];
        replay(&s.log(), &r.segments, &batches, |i, e| match e {
            Some((_, rec)) => records[i].push(rec.to_vec()),
            None => done[i] = true,
        })
        .unwrap();
        assert!(done.iter().all(|d| *d), "every batch completes");
        (s, r, records)
    }

    #[test]
    fn replays_open_and_closed_batches() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, r) = Spool::open(&opts(dir.path())).unwrap();
            assert!(r.is_empty());
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
        let (s, r, records) = reopen(&opts(dir.path()));
        assert_eq!(r.closed.len(), 1);
        let c = &r.closed[0];
        assert_eq!(c.key.as_deref(), Some("a/i-0.ndjson.gz"));
        assert_eq!(
            records[0],
            vec![b"{\"n\":0}".to_vec(), b"{\"n\":2}".to_vec()]
        );
        assert_eq!((c.key_seq, c.last_seq, c.count), (0, 2, 2));
        assert_eq!(c.compression, Compression::gzip());
        let open: Vec<_> = r
            .open
            .iter()
            .map(|b| (b.shard, b.partition.as_str(), b.key_seq, b.count))
            .collect();
        assert_eq!(
            open,
            vec![(0, "a/", 3, 1), (0, "b/", 1, 1), (1, "a/", 4, 1)]
        );
        assert_eq!(records[1], vec![b"{\"n\":3}".to_vec()]);
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
            assert!(s.log.segments().len() >= 3, "{:?}", s.log.segments());
            s.append_close(&close(seqs[0], seqs[9], 0, "p/", "k0"));
            s.commit().unwrap();
            let before = s.total_bytes();
            s.uploaded(seqs[0], &seqs, None).unwrap();
            let (through, _) = s.deletable().unwrap().unwrap();
            assert!(s.log.remove_through(through).unwrap() > 0);
            s.deleted();
            assert!(s.total_bytes() < before);
            assert!(s.deletable().unwrap().is_none());
            // One more event after the upload stays open.
            s.append_event(0, "p/", b"{}");
            s.commit().unwrap();
        }
        let (s, r, records) = reopen(&o);
        assert!(r.closed.is_empty(), "{:?}", r.closed);
        assert_eq!(r.open.len(), 1);
        assert_eq!((r.open[0].key_seq, r.open[0].count), (10, 1));
        assert_eq!(records, vec![vec![b"{}".to_vec()]]);
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
        let seg = dir.path().join(format!("{:020}.spool", 0));
        let len = std::fs::metadata(&seg).unwrap().len();
        // Cut the last frame in half, as a crash mid-write would.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 4).unwrap();
        drop(f);
        let (_, r, records) = reopen(&opts(dir.path()));
        assert_eq!(records, vec![vec![b"{\"ok\":1}".to_vec()]]);
        assert!(r.torn_bytes > 0);
        // A flipped byte fails the CRC the same way.
        let data = std::fs::read(&seg).unwrap();
        let mut bad = data.clone();
        let last = bad.len() - 2;
        bad[last] ^= 0xff;
        std::fs::write(&seg, &bad).unwrap();
        let (_, r, _) = reopen(&opts(dir.path()));
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
            s.uploaded(a, &[a, b], None).unwrap();
            // A later segment, then everything before it deleted.
            s.log.seal();
            s.uploaded(a, &[], None).unwrap();
            let (through, _) = s.deletable().unwrap().unwrap();
            s.log.remove_through(through).unwrap();
            s.deleted();
        }
        let (s, r, _) = reopen(&o);
        assert!(r.is_empty());
        assert_eq!(s.next_seq, 2);
        drop(s);
        let (s, _) = Spool::open(&o).unwrap();
        assert_eq!(s.next_seq, 2);
    }

    /// The spool's first format (magic `S3ESPL01`, CRC of the payload) is
    /// read on upgrade: its batches are replayed, new frames go to a segment
    /// of the current format.
    #[test]
    fn a_spool_of_the_first_format_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = LEGACY_MAGIC.to_vec();
        let mut frame = |kind: u8, body: &[u8]| {
            let mut payload = vec![kind];
            payload.extend_from_slice(body);
            data.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            data.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            data.extend_from_slice(&payload);
        };
        for (seq, rec) in [(0u64, &b"{\"a\":1}"[..]), (1, b"{\"a\":2}")] {
            let mut b = seq.to_le_bytes().to_vec();
            b.extend_from_slice(&0u16.to_le_bytes());
            put_str(&mut b, "p/");
            b.extend_from_slice(rec);
            frame(KIND_EVENT, &b);
        }
        std::fs::write(dir.path().join(format!("{:020}.spool", 0)), &data).unwrap();
        let (mut s, r, records) = reopen(&opts(dir.path()));
        assert_eq!(r.open.len(), 1);
        assert_eq!(
            records[0],
            vec![b"{\"a\":1}".to_vec(), b"{\"a\":2}".to_vec()]
        );
        assert_eq!(s.next_seq, 2);
        s.append_event(0, "p/", b"{\"a\":3}");
        s.commit().unwrap();
        assert_eq!(s.log.segments().len(), 2, "not appended to the old segment");
    }

    /// A close frame written twice (after a failed fsync) closes its batch
    /// once; the second copy does not swallow it.
    #[test]
    fn a_close_frame_written_twice_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Spool::open(&opts(dir.path())).unwrap();
            let a = s.append_event(0, "p/", b"1");
            let b = s.append_event(0, "p/", b"2");
            s.append_close(&close(a, b, 0, "p/", "k"));
            s.append_close(&close(a, b, 0, "p/", "k"));
            s.commit().unwrap();
        }
        let (_, r, records) = reopen(&opts(dir.path()));
        assert_eq!(r.closed.len(), 1);
        assert_eq!(records[0].len(), 2);
    }

    /// Delivery numbers: taken when a close frame is written, one run per
    /// batch; given back when the write fails; read back on open.
    #[test]
    fn close_frames_take_consecutive_delivery_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::new();
        let o = opts(dir.path()).with_faults(Arc::clone(&faults));
        {
            let (mut s, _) = Spool::open(&o).unwrap();
            let a = s.append_event(0, "p/", b"1");
            let b = s.append_event(0, "q/", b"2");
            let c = s.append_event(0, "p/", b"3");
            s.commit().unwrap();
            let mut p = close(a, c, 0, "p/", "kp");
            p.records = 2;
            let mut q = close(b, b, 0, "q/", "kq");
            faults.fail_writes(1, 0, io::ErrorKind::Other);
            assert!(s.write_closes([&mut p, &mut q], keep).is_err());
            assert_eq!((p.number, q.number, s.next_number), (None, None, 0));
            s.write_closes([&mut p, &mut q], keep).unwrap();
            assert_eq!((p.number, q.number, s.next_number), (Some(0), Some(2), 3));
            // Written again (after a failed fsync): the same numbers.
            s.write_closes([&mut q], keep).unwrap();
            assert_eq!((q.number, s.next_number), (Some(2), 3));
        }
        let (s, r, _) = reopen(&o);
        let mut got: Vec<_> = r.closed.iter().map(|b| (b.key_seq, b.number)).collect();
        got.sort_unstable();
        assert_eq!(got, [(0, Some(0)), (1, Some(2))]);
        assert_eq!(s.next_number, 3);
    }

    /// The numbers file keeps the counter when every close frame is
    /// deleted; without it the spool would start at its next event
    /// sequence number, which is higher here (an event is still open).
    #[test]
    fn delivery_numbers_continue_after_their_close_frames_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        {
            let (mut s, _) = Spool::open(&o).unwrap();
            let a = s.append_event(0, "p/", b"1");
            let b = s.append_event(0, "p/", b"2");
            s.commit().unwrap();
            let mut c = close(a, b, 0, "p/", "k");
            s.write_closes([&mut c], keep).unwrap();
            s.uploaded(a, &[a, b], Some(2)).unwrap();
            s.log.seal();
            s.append_event(0, "q/", b"3");
            s.commit().unwrap();
            let (through, _) = s.deletable().unwrap().unwrap();
            s.log.remove_through(through).unwrap();
            s.deleted();
        }
        let (s, r, _) = reopen(&o);
        assert_eq!((r.closed.len(), r.open.len()), (0, 1));
        assert_eq!((s.next_seq, s.next_number), (3, 2));
        drop(s);
        std::fs::remove_file(dir.path().join(NUMBERS_FILE)).unwrap();
        let (s, _) = Spool::open(&o).unwrap();
        assert_eq!(s.next_number, 3, "the fallback, not what was kept");
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
