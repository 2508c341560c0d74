//! Every file operation of the log goes through [`Io`], which asks an
//! optional [`Faults`] whether to fail it: the fault matrix and soak tests
//! inject short writes, failed fsyncs and failed truncations here, where the
//! machine cannot produce them on demand (EIO), and record the order of
//! operations (a directory fsync between two segment deletions).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// One file operation, as recorded by [`Faults::record`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `len` bytes written at `offset`.
    Write {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// How many bytes were asked for.
        len: usize,
    },
    /// `fdatasync` of a file.
    Sync(PathBuf),
    /// `fsync` of a directory.
    SyncDir(PathBuf),
    /// A file cut to `len` bytes.
    SetLen(PathBuf, u64),
    /// A file removed.
    Remove(PathBuf),
    /// A file renamed onto `to`.
    Rename {
        /// The old name.
        from: PathBuf,
        /// The new name.
        to: PathBuf,
    },
}

/// Faults to inject into a log's file operations; shared (`Arc`) between
/// the log and the test that steers it.
///
/// Deterministic faults fail the next `n` operations of a kind; random
/// faults ([`Faults::random`]) fail each write or fsync with a given
/// probability, from a seeded generator, for soak tests. An injected write
/// failure first writes part of the buffer for real (a short write), then
/// returns the error, as a full disk does.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Upcoming writes: `None` passes, `Some` fails.
    writes: VecDeque<Option<(usize, io::ErrorKind)>>,
    fsyncs: u32,
    dir_syncs: u32,
    set_lens: u32,
    removes: u32,
    random: Option<Random>,
    recording: Option<Vec<Op>>,
    injected_writes: u64,
    injected_fsyncs: u64,
}

#[derive(Debug)]
struct Random {
    state: u64,
    write_ppm: u32,
    fsync_ppm: u32,
}

impl Random {
    /// splitmix64: a tiny, seedable generator; reproducible soaks need no
    /// more than that.
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn hit(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.next() % 1_000_000 < u64::from(ppm)
    }
}

impl Faults {
    /// No faults (yet).
    pub fn new() -> Arc<Faults> {
        Arc::default()
    }

    /// Each write fails with probability `write_ppm` / 10⁶ (after writing a
    /// random part of its buffer), each file fsync with `fsync_ppm` / 10⁶.
    pub fn random(seed: u64, write_ppm: u32, fsync_ppm: u32) -> Arc<Faults> {
        let f = Faults::new();
        f.lock().random = Some(Random {
            state: seed,
            write_ppm,
            fsync_ppm,
        });
        f
    }

    /// Parses `seed=N,write=PPM,fsync=PPM` (any subset; for child processes
    /// of soak tests, which take it from the environment).
    pub fn from_spec(spec: &str) -> Result<Arc<Faults>, String> {
        let (mut seed, mut write, mut fsync) = (0u64, 0u32, 0u32);
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("fault spec `{part}`: expected key=value"))?;
            let bad = |_| format!("fault spec `{part}`: `{v}` is not a number");
            match k {
                "seed" => seed = v.parse().map_err(bad)?,
                "write" => write = v.parse().map_err(bad)?,
                "fsync" => fsync = v.parse().map_err(bad)?,
                _ => return Err(format!("fault spec: unknown key `{k}`")),
            }
        }
        Ok(Faults::random(seed, write, fsync))
    }

    /// The next `n` writes write at most `keep` bytes, then fail with `kind`.
    pub fn fail_writes(&self, n: usize, keep: usize, kind: io::ErrorKind) {
        self.fail_writes_after(0, n, keep, kind);
    }

    /// After `skip` more writes pass, the next `n` fail as in
    /// [`Faults::fail_writes`].
    pub fn fail_writes_after(&self, skip: usize, n: usize, keep: usize, kind: io::ErrorKind) {
        let mut s = self.lock();
        s.writes.clear();
        for _ in 0..skip {
            s.writes.push_back(None);
        }
        for _ in 0..n {
            s.writes.push_back(Some((keep, kind)));
        }
    }

    /// The next `n` file fsyncs fail with EIO.
    pub fn fail_fsyncs(&self, n: u32) {
        self.lock().fsyncs += n;
    }

    /// The next `n` directory fsyncs fail with EIO.
    pub fn fail_dir_syncs(&self, n: u32) {
        self.lock().dir_syncs += n;
    }

    /// The next `n` truncations fail with EIO.
    pub fn fail_set_lens(&self, n: u32) {
        self.lock().set_lens += n;
    }

    /// The next `n` file removals fail with EIO.
    pub fn fail_removes(&self, n: u32) {
        self.lock().removes += n;
    }

    /// Starts recording operations (see [`Faults::ops`]).
    pub fn record(&self) {
        self.lock().recording = Some(Vec::new());
    }

    /// The operations recorded since [`Faults::record`].
    pub fn ops(&self) -> Vec<Op> {
        self.lock().recording.clone().unwrap_or_default()
    }

    /// How many write and fsync failures were injected so far.
    pub fn injected(&self) -> (u64, u64) {
        let s = self.lock();
        (s.injected_writes, s.injected_fsyncs)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn injected(kind: io::ErrorKind) -> io::Error {
    io::Error::new(kind, "injected fault")
}

/// The log's file operations, with optional fault injection.
#[derive(Clone, Debug, Default)]
pub(crate) struct Io {
    pub faults: Option<Arc<Faults>>,
}

impl Io {
    fn note(&self, op: impl FnOnce() -> Op) -> Option<std::sync::MutexGuard<'_, State>> {
        let mut s = self.faults.as_ref()?.lock();
        if let Some(r) = &mut s.recording {
            r.push(op());
        }
        Some(s)
    }

    pub fn write_at(&self, file: &File, path: &Path, buf: &[u8], offset: u64) -> io::Result<()> {
        let fault = self
            .note(|| Op::Write {
                path: path.to_owned(),
                offset,
                len: buf.len(),
            })
            .and_then(|mut s| {
                if let Some(next) = s.writes.pop_front() {
                    if next.is_some() {
                        s.injected_writes += 1;
                    }
                    return next;
                }
                let hit = s.random.as_mut().map(|r| {
                    let hit = r.hit(r.write_ppm);
                    (hit, r.next())
                });
                match hit {
                    Some((true, n)) => {
                        s.injected_writes += 1;
                        let keep = (n % (buf.len() as u64 + 1)) as usize;
                        let kind = if n & 1 == 0 {
                            io::ErrorKind::StorageFull
                        } else {
                            io::ErrorKind::Other
                        };
                        Some((keep, kind))
                    }
                    _ => None,
                }
            });
        match fault {
            Some((keep, kind)) => {
                let keep = keep.min(buf.len());
                file.write_all_at(&buf[..keep], offset)?;
                Err(injected(kind))
            }
            None => file.write_all_at(buf, offset),
        }
    }

    pub fn sync(&self, file: &File, path: &Path) -> io::Result<()> {
        if let Some(mut s) = self.note(|| Op::Sync(path.to_owned())) {
            let random = s.random.as_mut().is_some_and(|r| r.hit(r.fsync_ppm));
            if s.fsyncs > 0 || random {
                s.fsyncs = s.fsyncs.saturating_sub(1);
                s.injected_fsyncs += 1;
                return Err(injected(io::ErrorKind::Other));
            }
        }
        file.sync_data()
    }

    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if let Some(mut s) = self.note(|| Op::SyncDir(dir.to_owned())) {
            if s.dir_syncs > 0 {
                s.dir_syncs -= 1;
                return Err(injected(io::ErrorKind::Other));
            }
        }
        File::open(dir)?.sync_all()
    }

    pub fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        if let Some(mut s) = self.note(|| Op::SetLen(path.to_owned(), len)) {
            if s.set_lens > 0 {
                s.set_lens -= 1;
                return Err(injected(io::ErrorKind::Other));
            }
        }
        file.set_len(len)
    }

    pub fn remove(&self, path: &Path) -> io::Result<()> {
        if let Some(mut s) = self.note(|| Op::Remove(path.to_owned())) {
            if s.removes > 0 {
                s.removes -= 1;
                return Err(injected(io::ErrorKind::Other));
            }
        }
        std::fs::remove_file(path)
    }

    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.note(|| Op::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
        });
        std::fs::rename(from, to)
    }
}
