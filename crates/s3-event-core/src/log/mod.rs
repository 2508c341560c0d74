//! One durable log on local disk, under the sink's spool and the notifier's
//! queue store: checksummed frames in segment files, torn tails cut on open,
//! fsyncs grouped across callers, a failed write cut back, a failed fsync
//! never reported as success, and an exclusive lock on the directory.
//!
//! ```
//! use s3_event_core::log::{FsyncPolicy, Log, LogOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let opts = LogOptions::new("log", *b"S3EDOC01").with_fsync(FsyncPolicy::Always);
//! let (log, _) = Log::open(dir.path(), opts.clone(), |_| {})?;
//! let a = log.append(&[b"one", b"two"], 0)?;
//! log.sync_to(a.token)?; // both frames are on disk
//! // A second opener of the same directory is refused.
//! assert!(Log::open(dir.path(), opts.clone(), |_| {}).is_err());
//! drop(log);
//!
//! let mut seen = Vec::new();
//! Log::open(dir.path(), opts, |f| seen.push(f.payload.to_vec()))?;
//! assert_eq!(seen, [b"one".to_vec(), b"two".to_vec()]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # On disk
//!
//! - `LOCK`: held with `flock` while the log is open; holds the holder's pid.
//! - `<segment:020>.<suffix>`: segments, numbered in the order they were
//!   started. A segment starts with a 20-byte header: the user's 8-byte
//!   magic, the segment's *base* (a number the user gives when the segment
//!   is started, such as the sequence number of its first entry) and a
//!   CRC-32 of both. Frames follow: `[len: u32 LE][crc32: u32 LE][payload]`,
//!   the CRC over the length bytes and the payload, so a run of zeros never
//!   passes as a frame.
//! - Side files (such as the queue store's ack cursor), written through
//!   [`SideFile`] so that their fsyncs join the log's.
//!
//! Segments written by the formats before this one are read too
//! ([`Legacy`]): the log never appends to them, and they go once their
//! contents are consumed, so an upgrade needs no migration step.
//!
//! # Guarantees
//!
//! - **Appends** write all their frames with one positioned write. If it
//!   fails part-way (ENOSPC, EIO), the file is cut back to where the write
//!   started, and the segment is sealed: the next append starts a new one.
//!   So nothing is ever appended after a partial frame.
//! - **Fsyncs** run in rounds: one round fsyncs every file written since the
//!   last one (and the directory when a segment was created or a side file
//!   replaced). Concurrent callers share rounds (group commit). A caller
//!   waits with [`Log::sync_to`] (blocking) or [`Log::synced`] (a future,
//!   for async code: a thread of the log runs the round).
//! - **A failed fsync** is reported to every caller whose writes it covered,
//!   also when a later round succeeds (the kernel may have dropped those
//!   pages and marked them clean), and seals the segment.
//! - **Open** checks every frame. A bad frame in the newest segment is a
//!   torn write: the file is cut there. A bad frame in an older segment
//!   (left by a write that failed and could not be cut back) ends that
//!   segment's frames; it is reported in [`Recovery::corrupt`].
//! - **Removal** ([`Log::remove_through`]) deletes the oldest segments,
//!   never the newest, one at a time, each followed by a directory fsync,
//!   so after a power cut the segments left are always a suffix of the log.
//! - **One opener**: a second [`Log::open`] of the directory, from this
//!   process or another, fails with [`Error::Locked`] naming the holder.
//!
//! All file operations go through an optional [`Faults`], which tests use to
//! inject short writes, failed fsyncs and failed truncations.
//!
//! A hand-written log rather than a crate: embedded stores (sled, redb) are
//! B-trees built for random access by key, whose commits rewrite pages and
//! do not group fsyncs across callers; what both users need is appends at
//! the tail, whole segments dropped at the head and a sequential scan on
//! open.

mod faults;
mod frame;
mod lock;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use faults::{Faults, Op};
pub use frame::{decode as decode_frame, frame_len, MAX_PAYLOAD};
pub use lock::{lock_path, LOCK_FILE};

use faults::Io;
use frame::{Crc, FRAME_HEADER, SEGMENT_HEADER};

/// A write generation: every write gets the next one; a round of fsyncs
/// covers every generation up to the one it started at.
pub type Token = u64;

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The directory is locked by another opener.
    #[error(
        "{what} directory {} is in use by {holder} (lock file {}); \
         two processes must not share it: give each its own directory",
        dir.display(),
        lock.display()
    )]
    Locked {
        /// What the directory is for (`spool`, `queue store`).
        what: &'static str,
        /// The directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// Who holds it, as far as the lock file says.
        holder: String,
    },
    /// An fsync that covered these writes failed: they may not be on disk,
    /// whatever later fsyncs report.
    #[error("an fsync in {} failed; the writes it covered may be lost", dir.display())]
    SyncFailed {
        /// The log's directory.
        dir: PathBuf,
    },
    /// The log was closed ([`Log::close`]).
    #[error("the log in {} is closed", dir.display())]
    Closed {
        /// The log's directory.
        dir: PathBuf,
    },
    /// A payload is larger than a frame can hold.
    #[error("an entry of {len} bytes is larger than the {max} a frame holds")]
    TooLarge {
        /// Its length.
        len: usize,
        /// [`MAX_PAYLOAD`].
        max: usize,
    },
}

impl Error {
    /// The underlying I/O error kind, if this is one (`StorageFull` for a
    /// full disk).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// Results of the log.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// When written frames are fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Rounds start as soon as someone waits ([`Log::sync_to`]); callers
    /// that wait together share a round.
    Always,
    /// Rounds start at most once per interval: when someone waits, and in
    /// the background whenever something was written, so at most about one
    /// interval of writes is not on disk (or [`LogOptions::background`], if
    /// set, for writes nobody waits for).
    Every(Duration),
    /// Never fsync: writes survive a crash of the process, not of the machine.
    Never,
}

/// A format of segments written before the current one, read on open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Legacy {
    /// No header; frames as now. The file name is the base.
    Headerless,
    /// This 8-byte magic and no base; frames checked by a CRC of the payload
    /// alone. The file name is the base.
    MagicPayloadCrc([u8; 8]),
}

/// Options of [`Log::open`].
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// File name suffix of segments, without the dot.
    pub suffix: &'static str,
    /// The first 8 bytes of every segment this log writes.
    pub magic: [u8; 8],
    /// An older segment format to read (never appended to).
    pub legacy: Option<Legacy>,
    /// Size past which the next append starts a new segment (an append is
    /// never split, so a segment may exceed it by one append).
    pub segment_bytes: u64,
    /// When to fsync.
    pub fsync: FsyncPolicy,
    /// With [`FsyncPolicy::Every`], how long after the last round the fsync
    /// thread syncs writes that nobody waits for (`None`: the interval; a
    /// shorter one is raised to the interval).
    ///
    /// A log whose writers wait for their own fsyncs sets it longer than
    /// the interval: a background round in the middle of a burst of appends
    /// adds an fsync, and contention with the appender, to the round the
    /// burst's waiter asks for next.
    pub background: Option<Duration>,
    /// Whether [`Log::remove_through`] fsyncs the directory after each
    /// removal (default), so that a power cut leaves a suffix of the log.
    /// A log whose reader skips what it removed anyway (the queue store:
    /// it removes only acknowledged segments, and skips acknowledged
    /// entries on open) turns it off: a removal lost to a power cut, or
    /// a hole where an older one was lost, brings back only entries it
    /// skips or has delivered.
    pub sync_removals: bool,
    /// What the log is for, in messages (`spool`, `queue store`).
    pub what: &'static str,
    /// Faults to inject into file operations (tests).
    pub faults: Option<Arc<Faults>>,
}

impl LogOptions {
    /// Defaults: 64 MiB segments, fsync every 10 ms.
    pub fn new(suffix: &'static str, magic: [u8; 8]) -> Self {
        LogOptions {
            suffix,
            magic,
            legacy: None,
            segment_bytes: 64 << 20,
            fsync: FsyncPolicy::Every(Duration::from_millis(10)),
            background: None,
            sync_removals: true,
            what: "log",
            faults: None,
        }
    }

    /// Sets the fsync policy.
    pub fn with_fsync(mut self, fsync: FsyncPolicy) -> Self {
        self.fsync = fsync;
        self
    }

    /// Sets [`LogOptions::background`].
    pub fn with_background(mut self, every: Duration) -> Self {
        self.background = Some(every);
        self
    }

    /// Sets the segment size.
    pub fn with_segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes.max(1);
        self
    }

    /// Reads segments of an older format too.
    pub fn with_legacy(mut self, legacy: Legacy) -> Self {
        self.legacy = Some(legacy);
        self
    }

    /// Sets [`LogOptions::sync_removals`].
    pub fn with_sync_removals(mut self, on: bool) -> Self {
        self.sync_removals = on;
        self
    }

    /// Names the log in messages.
    pub fn with_what(mut self, what: &'static str) -> Self {
        self.what = what;
        self
    }

    /// Injects faults into file operations.
    pub fn with_faults(mut self, faults: Option<Arc<Faults>>) -> Self {
        self.faults = faults;
        self
    }
}

/// A frame read on open or by [`Log::scan`].
#[derive(Clone, Copy, Debug)]
pub struct FrameRef<'a> {
    /// The segment's number.
    pub segment: u64,
    /// The segment's base.
    pub base: u64,
    /// Where the frame starts in the segment file.
    pub offset: u64,
    /// Its index among the segment's frames.
    pub index: u64,
    /// The payload.
    pub payload: &'a [u8],
}

/// A segment on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its number (the file name).
    pub segment: u64,
    /// Its base.
    pub base: u64,
    /// Bytes of valid frames (and header).
    pub len: u64,
    /// Frames in it.
    pub frames: u64,
}

/// A bad frame found on open.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Damage {
    /// The segment file.
    pub path: PathBuf,
    /// Where the bad frame starts (the end of the last good one).
    pub offset: u64,
    /// Bytes from there to the end of the file.
    pub bytes: u64,
    /// Why the frame was rejected.
    pub reason: &'static str,
}

/// What [`Log::open`] found and repaired.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Recovery {
    /// Segment files read.
    pub segments: usize,
    /// Frames read.
    pub frames: u64,
    /// The torn tail cut from the newest segment.
    pub truncated: Option<Damage>,
    /// Bad frames ending older segments (the rest of each was skipped).
    pub corrupt: Vec<Damage>,
    /// Segment files removed because not even their header was complete
    /// (a crash while one was being started).
    pub removed_headless: usize,
}

/// Where an append went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The segment written to.
    pub segment: u64,
    /// That segment's base.
    pub base: u64,
    /// Where the first frame starts.
    pub offset: u64,
    /// The index of the first frame in the segment.
    pub index: u64,
    /// What [`Log::sync_to`] must reach for these frames to be on disk.
    pub token: Token,
}

/// Counters of a log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogStats {
    /// Segment files.
    pub segments: usize,
    /// Bytes in them.
    pub disk_bytes: u64,
    /// Completed fsync rounds.
    pub fsyncs: u64,
    /// Failed fsync rounds.
    pub failed_fsyncs: u64,
    /// Failed writes (cut back).
    pub failed_writes: u64,
    /// Appends that wrote frames (one write each).
    pub writes: u64,
}

#[derive(Debug)]
struct Segment {
    segment: u64,
    base: u64,
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    frames: u64,
    crc: Crc,
    /// Where frames start (after the header, if any).
    start: u64,
}

#[derive(Debug)]
struct State {
    /// Oldest first; the back one is appended to unless `sealed`.
    segments: VecDeque<Segment>,
    sealed: bool,
    next_segment: u64,
    gen: Token,
    dirty_active: bool,
    /// Other files written since the last round (closed segments, side files).
    dirty_other: Vec<(PathBuf, Arc<File>)>,
    dir_dirty: bool,
    /// A segment was removed and the directory fsync after it failed.
    removal_unsynced: bool,
    /// [`Log::close`] was called: no more writes.
    closed: bool,
    buf: Vec<u8>,
    failed_writes: u64,
    writes: u64,
}

#[derive(Debug, Default)]
struct SyncState {
    running: bool,
    stop: bool,
    last_start: Option<Instant>,
    /// The generation the last round (good or bad) covered.
    taken: Token,
    /// Every generation up to this one is on disk.
    synced: Token,
    /// The highest generation an async waiter asked for.
    requested: Token,
    /// The highest generation someone asked for without waiting for the
    /// interval ([`Log::synced_now`]).
    hurried: Token,
    /// Generations `(from, to]` whose round failed, merged, oldest first.
    failed: VecDeque<(Token, Token)>,
    wakers: Vec<Waker>,
    /// Threads blocked in [`Shared::sync_to`] until a round ends.
    blocked: usize,
    fsyncs: u64,
    failed_fsyncs: u64,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    opts: LogOptions,
    io: Io,
    state: Mutex<State>,
    sync: Mutex<SyncState>,
    /// Signalled when a round ends.
    done: Condvar,
    /// Signalled when the syncer thread has work.
    work: Condvar,
    /// Held until the log is closed or dropped.
    lock: Mutex<Option<lock::DirLock>>,
}

/// A durable log in a directory; see the [module docs](self).
///
/// All methods take `&self`; share it in an `Arc`.
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    syncer: Mutex<Option<JoinHandle<()>>>,
}

fn segment_path(dir: &Path, suffix: &str, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.{suffix}"))
}

/// The bytes `payloads` take as frames; an error if one is too large.
fn encoded_len<P: AsRef<[u8]>>(payloads: &[P]) -> Result<u64> {
    let mut total = 0u64;
    for p in payloads {
        let len = p.as_ref().len();
        if len > MAX_PAYLOAD {
            return Err(Error::TooLarge {
                len,
                max: MAX_PAYLOAD,
            });
        }
        total += frame_len(len);
    }
    Ok(total)
}

/// The numbers of the segments in `dir` (files `<digits>.<suffix>`),
/// oldest first.
fn segment_numbers(dir: &Path, suffix: &str) -> Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_suffix(suffix)
            .and_then(|s| s.strip_suffix('.'))
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// How a segment found on disk is read, from its first bytes.
struct Layout {
    /// Frame number of its first frame.
    base: u64,
    /// Where its frames start.
    start: usize,
    crc: Crc,
    /// Written in the current format (so it may be appended to).
    current: bool,
}

impl Layout {
    /// The layout of segment `number` holding `data`; `None` when it is too
    /// short to hold a header (it was being started when the process died).
    /// A segment with an unknown header is recorded as corrupt and skipped
    /// whole.
    fn of(
        data: &[u8],
        number: u64,
        opts: &LogOptions,
        path: &Path,
        recovery: &mut Recovery,
    ) -> Option<Layout> {
        let legacy = |start, crc| Layout {
            base: number,
            start,
            crc,
            current: false,
        };
        if let Some(base) = frame::read_header(data, &opts.magic) {
            return Some(Layout {
                base,
                start: SEGMENT_HEADER,
                crc: Crc::LenAndPayload,
                current: true,
            });
        }
        match opts.legacy {
            Some(Legacy::MagicPayloadCrc(m)) if data.starts_with(&m) => {
                Some(legacy(m.len(), Crc::PayloadOnly))
            }
            Some(Legacy::Headerless) if !data.starts_with(&opts.magic) => {
                Some(legacy(0, Crc::LenAndPayload))
            }
            _ if data.len() < SEGMENT_HEADER => None,
            _ => {
                tracing::error!(
                    path = %path.display(),
                    "{}: segment with an unknown header, skipped", opts.what
                );
                recovery.corrupt.push(Damage {
                    path: path.to_owned(),
                    offset: 0,
                    bytes: data.len() as u64,
                    reason: "unknown segment header",
                });
                Some(legacy(data.len(), Crc::LenAndPayload))
            }
        }
    }
}

impl Recovery {
    /// Records a bad frame found on open. With `cut` (the newest segment,
    /// written in the current format: a write the process died in) the file
    /// is cut back to its last good frame and the cut made durable;
    /// otherwise the rest of the segment is skipped.
    fn bad_frame(
        &mut self,
        damage: Damage,
        cut: Option<(&Io, &File)>,
        opts: &LogOptions,
    ) -> Result<()> {
        let path = &damage.path;
        let Some((io, file)) = cut else {
            tracing::warn!(
                path = %path.display(), offset = damage.offset, bytes = damage.bytes,
                reason = damage.reason,
                "{}: a bad frame ends this segment; the rest of it is skipped", opts.what
            );
            self.corrupt.push(damage);
            return Ok(());
        };
        tracing::warn!(
            path = %path.display(), offset = damage.offset, bytes = damage.bytes,
            reason = damage.reason, "{}: cutting a torn tail", opts.what
        );
        io.set_len(file, path, damage.offset)
            .map_err(io_err("truncate", path))?;
        if opts.fsync != FsyncPolicy::Never {
            io.sync(file, path).map_err(io_err("fsync", path))?;
        }
        self.truncated = Some(damage);
        Ok(())
    }
}

/// Calls `visit` for each good frame of a segment, in order, up to the
/// first bad one; returns the length of the good part, the number of good
/// frames and why the rest is bad (if there is a rest).
fn read_frames(
    data: &[u8],
    segment: u64,
    layout: &Layout,
    visit: &mut impl FnMut(FrameRef<'_>),
) -> (usize, u64, Option<&'static str>) {
    let mut pos = layout.start;
    let mut index = 0u64;
    while pos < data.len() {
        match frame::check(&data[pos..], layout.crc) {
            Ok(len) => {
                visit(FrameRef {
                    segment,
                    base: layout.base,
                    offset: pos as u64,
                    index,
                    payload: &data[pos + FRAME_HEADER..pos + FRAME_HEADER + len],
                });
                index += 1;
                pos += FRAME_HEADER + len;
            }
            Err(reason) => return (pos, index, Some(reason)),
        }
    }
    (pos, index, None)
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { op, path, source }
}

impl Log {
    /// Opens (or creates) the log in `dir`: takes the directory's lock,
    /// reads every segment in order, calls `visit` for every good frame, and
    /// repairs what a crash left (see the [module docs](self)).
    pub fn open(
        dir: impl AsRef<Path>,
        opts: LogOptions,
        mut visit: impl FnMut(FrameRef<'_>),
    ) -> Result<(Log, Recovery)> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let lock = lock::DirLock::acquire(&dir, opts.what)?;
        let io = Io {
            faults: opts.faults.clone(),
        };
        let numbers = segment_numbers(&dir, opts.suffix)?;
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::with_capacity(numbers.len() + 1);
        let mut sealed = false;
        let mut dir_dirty = false;
        for (i, &number) in numbers.iter().enumerate() {
            let newest = i + 1 == numbers.len();
            let path = segment_path(&dir, opts.suffix, number);
            let data = std::fs::read(&path).map_err(io_err("read", &path))?;
            let Some(layout) = Layout::of(&data, number, &opts, &path, &mut recovery) else {
                // A segment being started when the process died: nothing
                // can have been written after its header.
                io.remove(&path).map_err(io_err("remove", &path))?;
                recovery.removed_headless += 1;
                dir_dirty = true;
                continue;
            };
            recovery.segments += 1;
            let (len, frames, bad) = read_frames(&data, number, &layout, &mut visit);
            recovery.frames += frames;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err("open", &path))?;
            if let Some(reason) = bad {
                let damage = Damage {
                    path: path.clone(),
                    offset: len as u64,
                    bytes: (data.len() - len) as u64,
                    reason,
                };
                let cut = (newest && layout.current).then_some((&io, &file));
                recovery.bad_frame(damage, cut, &opts)?;
            }
            sealed |= newest && !layout.current;
            segments.push_back(Segment {
                segment: number,
                base: layout.base,
                path,
                file: Arc::new(file),
                len: len as u64,
                frames,
                crc: layout.crc,
                start: layout.start as u64,
            });
        }
        let state = State {
            segments,
            sealed,
            next_segment: numbers.last().map_or(0, |n| n + 1),
            gen: u64::from(dir_dirty),
            dirty_active: false,
            dirty_other: Vec::new(),
            dir_dirty,
            removal_unsynced: false,
            closed: false,
            buf: Vec::new(),
            failed_writes: 0,
            writes: 0,
        };
        Ok((Log::start(dir, opts, io, state, lock)?, recovery))
    }

    /// Shares an opened log's state and starts its fsync thread (none when
    /// the policy is never to fsync).
    fn start(
        dir: PathBuf,
        opts: LogOptions,
        io: Io,
        state: State,
        lock: lock::DirLock,
    ) -> Result<Log> {
        let shared = Arc::new(Shared {
            dir,
            io,
            state: Mutex::new(state),
            sync: Mutex::new(SyncState::default()),
            done: Condvar::new(),
            work: Condvar::new(),
            lock: Mutex::new(Some(lock)),
            opts,
        });
        let syncer = if shared.opts.fsync == FsyncPolicy::Never {
            None
        } else {
            let s = Arc::clone(&shared);
            let name = format!("{}-fsync", shared.opts.what.replace(' ', "-"));
            Some(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || s.syncer())
                    .map_err(io_err("start the fsync thread", &shared.dir))?,
            )
        };
        Ok(Log {
            shared,
            syncer: Mutex::new(syncer),
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The options it was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.shared.opts
    }

    /// Appends one frame per payload, with one write, to the active segment
    /// (starting a new one with base `base` first if there is none, it is
    /// full or sealed). On failure nothing was appended: the file is cut
    /// back (if it can be), the segment sealed, and the error returned.
    pub fn append<P: AsRef<[u8]>>(&self, payloads: &[P], base: u64) -> Result<Appended> {
        let sh = &*self.shared;
        let total = encoded_len(payloads)?;
        let mut st = sh.state();
        if st.closed {
            return Err(Error::Closed {
                dir: sh.dir.clone(),
            });
        }
        let rotate = match st.segments.back() {
            None => true,
            Some(a) => st.sealed || (a.len > a.start && a.len + total > sh.opts.segment_bytes),
        };
        if rotate {
            st.rotate(sh, base)?;
        }
        if payloads.is_empty() {
            let a = st.segments.back().expect("an active segment");
            return Ok(Appended {
                segment: a.segment,
                base: a.base,
                offset: a.len,
                index: a.frames,
                token: st.gen,
            });
        }
        let mut buf = std::mem::take(&mut st.buf);
        buf.clear();
        buf.reserve(total as usize);
        for p in payloads {
            frame::encode(&mut buf, p.as_ref());
        }
        let a = st.segments.back().expect("an active segment");
        if let Err(source) = sh.io.write_at(&a.file, &a.path, &buf, a.len) {
            st.buf = buf;
            return Err(st.failed_write(sh, source));
        }
        st.buf = buf;
        let n = payloads.len() as u64;
        let a = st.segments.back_mut().expect("an active segment");
        let appended = Appended {
            segment: a.segment,
            base: a.base,
            offset: a.len,
            index: a.frames,
            token: 0,
        };
        a.len += total;
        a.frames += n;
        st.dirty_active = true;
        st.gen += 1;
        st.writes += 1;
        Ok(Appended {
            token: st.gen,
            ..appended
        })
    }

    /// The token of the latest write: syncing to it makes everything
    /// written so far durable.
    pub fn written(&self) -> Token {
        self.shared.state().gen
    }

    /// Returns once every write up to `token` is fsynced (at once with
    /// [`FsyncPolicy::Never`]); blocks the thread. With
    /// [`FsyncPolicy::Every`] waits for the interval since the last round.
    /// Fails with [`Error::SyncFailed`] if the round that covered `token`
    /// failed, also if a later one succeeded.
    pub fn sync_to(&self, token: Token) -> Result<()> {
        self.shared.sync_to(token)
    }

    /// Makes every write so far durable; see [`Log::sync_to`].
    pub fn sync(&self) -> Result<()> {
        self.sync_to(self.written())
    }

    /// A future that resolves as [`Log::sync_to`] returns, without blocking
    /// a thread: the log's fsync thread runs the round.
    pub fn synced(&self, token: Token) -> Synced {
        Synced {
            shared: Arc::clone(&self.shared),
            token,
        }
    }

    /// [`Log::synced`], but the round that covers `token` starts without
    /// waiting for the rest of [`FsyncPolicy::Every`]'s interval: for a
    /// caller that waits for everything (a flush, a shutdown), to whom the
    /// interval is only latency. Also cuts short a round already waiting.
    pub fn synced_now(&self, token: Token) -> Synced {
        let sh = &*self.shared;
        if sh.opts.fsync != FsyncPolicy::Never {
            let mut sy = sh.sync_state();
            sy.hurried = sy.hurried.max(token);
            sy.requested = sy.requested.max(token);
            drop(sy);
            sh.work.notify_all();
        }
        self.synced(token)
    }

    /// Reads `buf.len()` bytes of segment `segment` at `offset` (frames as
    /// they are on disk; see [`decode_frame`]).
    pub fn read_at(&self, segment: u64, offset: u64, buf: &mut [u8]) -> Result<()> {
        let (file, path) = {
            let st = self.shared.state();
            let s = st
                .segments
                .iter()
                .find(|s| s.segment == segment)
                .ok_or_else(|| Error::Io {
                    op: "read",
                    path: segment_path(&self.shared.dir, self.shared.opts.suffix, segment),
                    source: io::Error::new(io::ErrorKind::NotFound, "no such segment"),
                })?;
            (Arc::clone(&s.file), s.path.clone())
        };
        file.read_exact_at(buf, offset)
            .map_err(io_err("read", &path))
    }

    /// Calls `visit` for every good frame of segment `segment`, in order,
    /// reading a bounded chunk at a time (1 MiB, or one frame if larger).
    pub fn scan(&self, segment: u64, mut visit: impl FnMut(FrameRef<'_>)) -> Result<()> {
        let (file, path, base, start, end, crc) = {
            let st = self.shared.state();
            let Some(s) = st.segments.iter().find(|s| s.segment == segment) else {
                return Ok(());
            };
            (
                Arc::clone(&s.file),
                s.path.clone(),
                s.base,
                s.start,
                s.len,
                s.crc,
            )
        };
        const CHUNK: u64 = 1 << 20;
        let mut pos = start;
        let mut buf = Vec::new();
        let mut index = 0u64;
        while pos < end {
            buf.resize((end - pos).min(CHUNK) as usize, 0);
            file.read_exact_at(&mut buf, pos)
                .map_err(io_err("read", &path))?;
            let mut at = 0usize;
            while let Ok(len) = frame::check(&buf[at..], crc) {
                visit(FrameRef {
                    segment,
                    base,
                    offset: pos + at as u64,
                    index,
                    payload: &buf[at + FRAME_HEADER..at + FRAME_HEADER + len],
                });
                index += 1;
                at += FRAME_HEADER + len;
            }
            if at == 0 {
                // One frame larger than the chunk: read all of it, or stop
                // at what is not a frame.
                let need = match buf.get(..4) {
                    Some(b) => frame_len(u32::from_le_bytes(b.try_into().expect("4")) as usize),
                    None => return Ok(()),
                };
                if need <= buf.len() as u64 || pos + need > end {
                    return Ok(());
                }
                buf.resize(need as usize, 0);
                file.read_exact_at(&mut buf, pos)
                    .map_err(io_err("read", &path))?;
                let len = frame::check(&buf, crc).map_err(|reason| Error::Io {
                    op: "read",
                    path: path.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidData, reason),
                })?;
                visit(FrameRef {
                    segment,
                    base,
                    offset: pos,
                    index,
                    payload: &buf[FRAME_HEADER..FRAME_HEADER + len],
                });
                index += 1;
                at = FRAME_HEADER + len;
            }
            pos += at as u64;
        }
        Ok(())
    }

    /// The segments on disk, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.shared
            .state()
            .segments
            .iter()
            .map(|s| SegmentInfo {
                segment: s.segment,
                base: s.base,
                len: s.len,
                frames: s.frames,
            })
            .collect()
    }

    /// Bytes in the segment files (valid frames and headers).
    pub fn disk_bytes(&self) -> u64 {
        self.shared.state().segments.iter().map(|s| s.len).sum()
    }

    /// The segment the next append goes to, unless it starts a new one.
    pub fn active_segment(&self) -> Option<u64> {
        let st = self.shared.state();
        if st.sealed {
            return None;
        }
        st.segments.back().map(|s| s.segment)
    }

    /// Seals the active segment: the next append starts a new one.
    pub fn seal(&self) {
        self.shared.state().sealed = true;
    }

    /// Removes the segments numbered `<= through`, oldest first, but never
    /// the newest one; each removal is followed by a directory fsync (unless
    /// the policy is [`FsyncPolicy::Never`] or [`LogOptions::sync_removals`]
    /// is off) before the next one, so a power cut leaves a suffix of the
    /// log. Returns how many were removed; stops at the first failure (the
    /// rest stay for a later call).
    pub fn remove_through(&self, through: u64) -> Result<usize> {
        let sh = &*self.shared;
        let fsync = sh.opts.fsync != FsyncPolicy::Never && sh.opts.sync_removals;
        let mut st = sh.state();
        if st.removal_unsynced {
            sh.io
                .sync_dir(&sh.dir)
                .map_err(io_err("fsync directory", &sh.dir))?;
            st.removal_unsynced = false;
        }
        let mut removed = 0;
        while st.segments.len() > 1 && st.segments[0].segment <= through {
            let path = st.segments[0].path.clone();
            match sh.io.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &path)(e)),
            }
            st.segments.pop_front();
            st.dirty_other.retain(|(p, _)| *p != path);
            removed += 1;
            if fsync {
                if let Err(e) = sh.io.sync_dir(&sh.dir) {
                    st.removal_unsynced = true;
                    return Err(io_err("fsync directory", &sh.dir)(e));
                }
            }
        }
        Ok(removed)
    }

    /// Opens (or creates) the side file `name` in the log's directory and
    /// returns it with its contents.
    pub fn side_file(&self, name: &str) -> Result<(SideFile, Vec<u8>)> {
        let path = self.shared.dir.join(name);
        let tmp = self.shared.dir.join(format!("{name}.tmp"));
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove", &tmp)(e));
            }
            _ => {}
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let contents = std::fs::read(&path).map_err(io_err("read", &path))?;
        let len = contents.len() as u64;
        Ok((
            SideFile {
                shared: Arc::clone(&self.shared),
                path,
                tmp,
                file: Arc::new(file),
                len,
            },
            contents,
        ))
    }

    /// Closes the log without dropping it (a notifier shut down through a
    /// shared reference): syncs what was written, stops the fsync thread and
    /// releases the directory's lock, so another opener may take it. Appends
    /// afterwards fail with [`Error::Closed`].
    pub fn close(&self) -> Result<()> {
        let synced = self.sync();
        self.stop_syncer();
        self.shared.state().closed = true;
        drop(
            self.shared
                .lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        synced
    }

    fn stop_syncer(&self) {
        self.shared.sync_state().stop = true;
        self.shared.work.notify_all();
        let t = self
            .syncer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }

    /// Counters.
    pub fn stats(&self) -> LogStats {
        let (segments, disk_bytes, failed_writes, writes) = {
            let st = self.shared.state();
            (
                st.segments.len(),
                st.segments.iter().map(|s| s.len).sum(),
                st.failed_writes,
                st.writes,
            )
        };
        let sy = self.shared.sync_state();
        LogStats {
            segments,
            disk_bytes,
            fsyncs: sy.fsyncs,
            failed_fsyncs: sy.failed_fsyncs,
            failed_writes,
            writes,
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.stop_syncer();
    }
}

/// A small file beside the segments whose writes join the log's fsync
/// rounds (the queue store's ack cursor).
#[derive(Debug)]
pub struct SideFile {
    shared: Arc<Shared>,
    path: PathBuf,
    tmp: PathBuf,
    file: Arc<File>,
    len: u64,
}

impl SideFile {
    /// Its length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `bytes`; on failure cuts the file back and returns the error.
    pub fn append(&mut self, bytes: &[u8]) -> Result<Token> {
        let sh = &*self.shared;
        let mut st = sh.state();
        if let Err(source) = sh.io.write_at(&self.file, &self.path, bytes, self.len) {
            let _ = sh.io.set_len(&self.file, &self.path, self.len);
            return Err(Error::Io {
                op: "write",
                path: self.path.clone(),
                source,
            });
        }
        self.len += bytes.len() as u64;
        if !st.dirty_other.iter().any(|(p, _)| *p == self.path) {
            st.dirty_other
                .push((self.path.clone(), Arc::clone(&self.file)));
        }
        st.gen += 1;
        Ok(st.gen)
    }

    /// Cuts the file to `len` bytes.
    pub fn truncate(&mut self, len: u64) -> Result<()> {
        let sh = &*self.shared;
        sh.io
            .set_len(&self.file, &self.path, len)
            .map_err(io_err("truncate", &self.path))?;
        self.len = len;
        Ok(())
    }

    /// Replaces the contents with `bytes`, atomically: a temporary file
    /// (fsynced unless the policy is `Never`) renamed over it; the directory
    /// is fsynced with the next round.
    pub fn replace(&mut self, bytes: &[u8]) -> Result<Token> {
        let sh = &*self.shared;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.tmp)
            .map_err(io_err("create", &self.tmp))?;
        sh.io
            .write_at(&file, &self.tmp, bytes, 0)
            .map_err(io_err("write", &self.tmp))?;
        if sh.opts.fsync != FsyncPolicy::Never {
            sh.io
                .sync(&file, &self.tmp)
                .map_err(io_err("fsync", &self.tmp))?;
        }
        sh.io
            .rename(&self.tmp, &self.path)
            .map_err(io_err("rename", &self.path))?;
        let mut st = sh.state();
        st.dirty_other.retain(|(p, _)| *p != self.path);
        self.file = Arc::new(file);
        self.len = bytes.len() as u64;
        st.dir_dirty = true;
        st.gen += 1;
        Ok(st.gen)
    }
}

/// The future of [`Log::synced`]. A clone waits for the same token.
#[derive(Debug, Clone)]
pub struct Synced {
    shared: Arc<Shared>,
    token: Token,
}

impl Future for Synced {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let sh = &*self.shared;
        if sh.opts.fsync == FsyncPolicy::Never {
            return Poll::Ready(Ok(()));
        }
        let mut sy = sh.sync_state();
        if let Some(done) = sy.answer(self.token, &sh.dir) {
            return Poll::Ready(done);
        }
        if !sy.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            sy.wakers.push(cx.waker().clone());
        }
        sy.requested = sy.requested.max(self.token);
        // While a round runs (or waits its interval), whoever runs it
        // looks at `requested` again when it ends (`round` wakes the fsync
        // thread): no need to wake it once per waiter.
        let idle = !sy.running;
        drop(sy);
        if idle {
            sh.work.notify_all();
        }
        Poll::Pending
    }
}

impl SyncState {
    /// The answer for a waiter on `token`, if there is one yet.
    fn answer(&self, token: Token, dir: &Path) -> Option<Result<()>> {
        if self
            .failed
            .iter()
            .any(|&(from, to)| from < token && token <= to)
        {
            return Some(Err(Error::SyncFailed {
                dir: dir.to_owned(),
            }));
        }
        (self.synced >= token).then_some(Ok(()))
    }
}

impl State {
    /// After a failed write to the active segment: cuts what may have been
    /// written, so no frame ever follows a partial one, and seals the
    /// segment either way (if the cut failed, open skips the rest of it).
    fn failed_write(&mut self, sh: &Shared, source: io::Error) -> Error {
        let a = self.segments.back().expect("an active segment");
        if let Err(e) = sh.io.set_len(&a.file, &a.path, a.len) {
            tracing::error!(
                path = %a.path.display(), error = %e,
                "{}: could not cut a failed write back", sh.opts.what
            );
        }
        let path = a.path.clone();
        self.sealed = true;
        self.failed_writes += 1;
        Error::Io {
            op: "write",
            path,
            source,
        }
    }

    /// Starts a new segment with base `base`; the old one is fsynced with
    /// the next round.
    fn rotate(&mut self, sh: &Shared, base: u64) -> Result<()> {
        let number = self.next_segment;
        self.next_segment += 1;
        let path = segment_path(&sh.dir, sh.opts.suffix, number);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        if let Err(source) = sh
            .io
            .write_at(&file, &path, &frame::header(&sh.opts.magic, base), 0)
        {
            if let Err(e) = sh.io.remove(&path) {
                tracing::error!(path = %path.display(), error = %e, "{}: could not remove a segment it failed to start", sh.opts.what);
            }
            return Err(Error::Io {
                op: "write",
                path,
                source,
            });
        }
        if let Some(old) = self.segments.back() {
            if self.dirty_active {
                self.dirty_other
                    .push((old.path.clone(), Arc::clone(&old.file)));
            }
        }
        self.segments.push_back(Segment {
            segment: number,
            base,
            path,
            file: Arc::new(file),
            len: SEGMENT_HEADER as u64,
            frames: 0,
            crc: Crc::LenAndPayload,
            start: SEGMENT_HEADER as u64,
        });
        self.sealed = false;
        self.dirty_active = true;
        self.dir_dirty = true;
        self.gen += 1;
        Ok(())
    }
}

/// Files to fsync, taken under the state lock, synced outside it.
struct Work {
    gen: Token,
    files: Vec<(PathBuf, Arc<File>)>,
    dir: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state changes only after the I/O it describes succeeded, so
        // it stays consistent if a thread panicked holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sync_state(&self) -> MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn interval(&self) -> Option<Duration> {
        match self.opts.fsync {
            FsyncPolicy::Every(d) => Some(d),
            _ => None,
        }
    }

    /// Blocking group commit: the first caller that finds no round running
    /// runs one; the others wait for it.
    fn sync_to(&self, token: Token) -> Result<()> {
        if self.opts.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        let mut sy = self.sync_state();
        loop {
            if let Some(done) = sy.answer(token, &self.dir) {
                return done;
            }
            if !sy.running {
                sy.running = true;
                drop(self.wait_interval(sy));
                let _ = self.round();
                sy = self.sync_state();
                continue;
            }
            sy.blocked += 1;
            sy = self.done.wait(sy).unwrap_or_else(PoisonError::into_inner);
            sy.blocked -= 1;
        }
    }

    /// Waits (with the state unlocked) until the interval since the last
    /// round has passed, unless someone hurries ([`Log::synced_now`]) or
    /// the log is dropped, also while it waits.
    fn wait_interval<'a>(&self, mut sy: MutexGuard<'a, SyncState>) -> MutexGuard<'a, SyncState> {
        if let (Some(d), Some(last)) = (self.interval(), sy.last_start) {
            let due = last + d;
            loop {
                let now = Instant::now();
                if sy.hurried > sy.taken || sy.stop || due <= now {
                    break;
                }
                sy = self
                    .work
                    .wait_timeout(sy, due - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        sy
    }

    /// One round of fsyncs; the caller has set `running`.
    fn round(&self) -> Result<()> {
        let work = {
            let mut st = self.state();
            let mut files = std::mem::take(&mut st.dirty_other);
            if std::mem::take(&mut st.dirty_active) {
                if let Some(a) = st.segments.back() {
                    files.push((a.path.clone(), Arc::clone(&a.file)));
                }
            }
            Work {
                gen: st.gen,
                files,
                dir: std::mem::take(&mut st.dir_dirty),
            }
        };
        let start = Instant::now();
        let mut result = Ok(());
        for (path, file) in &work.files {
            if let Err(e) = self.io.sync(file, path) {
                result = Err(io_err("fsync", path)(e));
                break;
            }
        }
        if result.is_ok() && work.dir {
            result = self
                .io
                .sync_dir(&self.dir)
                .map_err(io_err("fsync directory", &self.dir));
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, "{}: fsync failed; starting a new segment", self.opts.what);
            let mut st = self.state();
            st.sealed = true;
            // A failed directory fsync: the next round must try it again.
            st.dir_dirty |= work.dir;
        }
        let mut sy = self.sync_state();
        sy.running = false;
        sy.last_start = Some(start);
        let taken = sy.taken.max(work.gen);
        let from = std::mem::replace(&mut sy.taken, taken);
        match &result {
            Ok(()) => {
                sy.synced = sy.synced.max(work.gen);
                sy.fsyncs += 1;
            }
            Err(_) => {
                sy.failed_fsyncs += 1;
                match sy.failed.back_mut() {
                    Some(last) if last.1 >= from => last.1 = last.1.max(work.gen),
                    _ => sy.failed.push_back((from, work.gen)),
                }
                if sy.failed.len() > 4096 {
                    sy.failed.pop_front();
                }
            }
        }
        let wakers = std::mem::take(&mut sy.wakers);
        // Only those who wait are woken (a condvar's notify is a system
        // call even when nobody waits): blocked callers, and the fsync
        // thread when async waiters asked for more than this round took.
        let (blocked, more) = (sy.blocked > 0, sy.requested > sy.taken || sy.stop);
        drop(sy);
        for w in wakers {
            w.wake();
        }
        if blocked {
            self.done.notify_all();
        }
        if more {
            self.work.notify_all();
        }
        result
    }

    /// The fsync thread: runs rounds for async waiters, and with
    /// [`FsyncPolicy::Every`] in the background, one period (the interval,
    /// or [`LogOptions::background`]) after the last round if something was
    /// written since; a last round when the log is dropped.
    fn syncer(&self) {
        let period = self
            .interval()
            .map(|d| self.opts.background.map_or(d, |b| b.max(d)));
        loop {
            let mut sy = self.sync_state();
            loop {
                let dirty = self.state().gen > sy.taken;
                if sy.stop {
                    let todo = !sy.running && dirty;
                    if todo {
                        sy.running = true;
                    }
                    drop(sy);
                    if todo {
                        let _ = self.round();
                    }
                    return;
                }
                // A background round is due one period after the last round
                // started, if something was written since.
                let now = Instant::now();
                let due = period
                    .filter(|_| dirty)
                    .map(|p| sy.last_start.map_or(now, |l| l + p));
                if !sy.running && (sy.requested > sy.taken || due.is_some_and(|t| t <= now)) {
                    break;
                }
                let wait = match due {
                    Some(t) if t > now => Some(t - now),
                    _ => period,
                };
                sy = match wait {
                    Some(d) => {
                        self.work
                            .wait_timeout(sy, d.max(Duration::from_millis(1)))
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                    None => self.work.wait(sy).unwrap_or_else(PoisonError::into_inner),
                };
            }
            sy.running = true;
            drop(self.wait_interval(sy));
            let _ = self.round();
        }
    }
}
