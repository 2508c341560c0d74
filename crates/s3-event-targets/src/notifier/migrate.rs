//! Start-up moves of queues left by other layouts (see the [module
//! docs](super#queue_dir)) into the current lanes: each source queue is
//! read through in order, a chunk at a time, each chunk made durable in
//! its destinations, and the source removed once all of it is. Moves of a
//! target's own stale lanes record their progress ([`Marker`]) and resume
//! after a crash; the one-time moves of the legacy layout start over
//! (duplicates, never loss).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use s3_event_core::log::Faults;
use s3_event_core::{RuleSet, Target};

use super::dead_letter::{self, DeadLetterStore, Letter};
use super::layout::{self, target_dir, DEAD_LETTER_DIR};
use super::{lane_of, TargetOptions};
use crate::queue_store::{QueueStore, QueueStoreOptions, Seq};
use crate::{Error, Result};

/// Entries moved per chunk.
const CHUNK: usize = 1024;

/// The current queues of a target, opened without a limit for the move.
struct Dest {
    id: String,
    lanes: Vec<QueueStore>,
    dead: DeadLetterStore,
}

impl Dest {
    fn open(target: &dyn Target, options: &TargetOptions, dir: &Path) -> Result<Dest> {
        let n = options.senders;
        let lanes = (0..n)
            .map(|i| {
                QueueStore::open(
                    layout::lane_dir(dir, i, n),
                    QueueStoreOptions {
                        queue_limit: usize::MAX,
                        faults: options.faults.clone(),
                        ..QueueStoreOptions::default()
                    },
                )
            })
            .collect::<Result<_>>()?;
        let dead = DeadLetterStore::open(
            &dir.join(DEAD_LETTER_DIR),
            options.dead_letter_queue_limit,
            options.faults.clone(),
        )?;
        Ok(Dest {
            id: target.id().to_string(),
            lanes,
            dead,
        })
    }
}

/// Entries bound for the queues of one target.
#[derive(Default)]
struct Batch {
    lanes: Vec<Vec<Vec<u8>>>,
    dead: Vec<Vec<u8>>,
}

impl Batch {
    fn new(lanes: usize) -> Batch {
        Batch {
            lanes: vec![Vec::new(); lanes],
            dead: Vec::new(),
        }
    }

    /// Queues a record in the lane its key maps to: `bytes` when they are
    /// the record as queued, else the record serialized.
    fn record(&mut self, record: &s3_event_core::EventRecord, bytes: Option<Vec<u8>>) {
        let key = record
            .decoded_key()
            .unwrap_or_else(|_| record.key().unwrap_or_default().to_owned());
        let lane = lane_of(&key, self.lanes.len());
        // Serializing an EventRecord cannot fail.
        let bytes = bytes.unwrap_or_else(|| serde_json::to_vec(record).expect("record serializes"));
        self.lanes[lane].push(bytes);
    }

    /// Appends everything, then makes it durable.
    fn write(self, dest: &Dest) -> Result<()> {
        for (store, entries) in dest.lanes.iter().zip(&self.lanes) {
            if !entries.is_empty() {
                store.append_batch(entries)?;
            }
        }
        for (store, entries) in dest.lanes.iter().zip(&self.lanes) {
            if !entries.is_empty() {
                store.sync()?;
            }
        }
        if !self.dead.is_empty() {
            dest.dead.append_blocking(&self.dead)?;
        }
        Ok(())
    }
}

/// Moves everything numbered above `after` in the queue at `src` through
/// `put` (which must make each chunk durable; it gets the chunk's last
/// number), then removes the queue with `remove`. Returns how many entries
/// were moved.
///
/// The source is read through, never acknowledged, and removed only once
/// all of it is durable elsewhere: after a crash it is moved again whole,
/// so the copies left by the interrupted move are duplicates of its first
/// part, and each key's first arrivals keep their order whichever of the
/// two is moved first.
fn drain(
    src: &Path,
    mut after: Seq,
    faults: Option<Arc<Faults>>,
    mut put: impl FnMut(Vec<Vec<u8>>, Seq) -> Result<()>,
    remove: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<u64> {
    let store = QueueStore::open(
        src,
        QueueStoreOptions {
            queue_limit: usize::MAX,
            faults,
            ..QueueStoreOptions::default()
        },
    )?;
    for e in &store.recovery().corrupt {
        tracing::error!(dir = %src.display(), error = %e, "moving a queue: damaged entries skipped");
    }
    let mut moved = 0u64;
    loop {
        let chunk = match store.peek_after(after, CHUNK) {
            Ok(c) => c,
            // Dropped and logged by the store.
            Err(Error::Corrupt { .. }) => continue,
            Err(e) => return Err(e),
        };
        let Some(&(last, _)) = chunk.last() else {
            break;
        };
        after = last;
        moved += chunk.len() as u64;
        put(chunk.into_iter().map(|(_, b)| b).collect(), last)?;
    }
    drop(store);
    remove(src).map_err(|source| Error::Io {
        path: src.to_path_buf(),
        source,
    })?;
    Ok(moved)
}

/// Moves the queues of other layouts of every target into its current
/// lanes. `route` maps each of `rules.targets()` to an index of `targets`.
pub(super) fn run(
    targets: &[(Arc<dyn Target>, TargetOptions)],
    rules: &RuleSet,
    route: &[usize],
) -> Result<()> {
    for (queue_dir, members) in &by_queue_dir(targets) {
        let legacy = layout::legacy(queue_dir).map_err(|source| Error::Io {
            path: queue_dir.clone(),
            source,
        })?;
        let mut stale = Vec::new();
        for &i in members {
            let (t, o) = &targets[i];
            let dir = target_dir(queue_dir, t.id());
            let s = layout::stale_queues(&dir, o.senders).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
            stale.push((i, dir, s));
        }
        if legacy.is_empty()
            && stale
                .iter()
                .all(|(_, dir, s)| s.is_empty() && !dir.join(MARKER).exists())
        {
            continue;
        }
        let dests = stale
            .iter()
            .map(|(i, dir, _)| Dest::open(&*targets[*i].0, &targets[*i].1, dir))
            .collect::<Result<Vec<_>>>()?;
        let faults = targets[members[0]].1.faults.clone();
        if !legacy.is_empty() {
            let shared = Shared {
                members,
                dests: &dests,
                rules,
                route,
                queue_dir,
            };
            move_legacy(&legacy, &shared, &faults)?;
        }
        for ((i, dir, sources), dest) in stale.iter().zip(&dests) {
            move_stale(dir, targets[*i].1.senders, sources, dest, &faults)?;
        }
    }
    Ok(())
}

/// Indexes of `targets` by `queue_dir`, in the order they were added.
fn by_queue_dir(targets: &[(Arc<dyn Target>, TargetOptions)]) -> Vec<(PathBuf, Vec<usize>)> {
    let mut groups: Vec<(PathBuf, Vec<usize>)> = Vec::new();
    for (i, (_, o)) in targets.iter().enumerate() {
        let Some(q) = &o.queue_dir else { continue };
        match groups.iter_mut().find(|(d, _)| same_dir(d, q)) {
            Some((_, members)) => members.push(i),
            None => groups.push((q.clone(), vec![i])),
        }
    }
    groups
}

/// Drains the layout before per-target directories (segments in
/// `queue_dir` itself, its `lane-<i>` and `dead-letter` directories) into
/// the targets sharing `queue_dir`.
fn move_legacy(
    legacy: &layout::Legacy,
    shared: &Shared<'_>,
    faults: &Option<Arc<Faults>>,
) -> Result<()> {
    let queue_dir = shared.queue_dir;
    let mut moved = 0;
    if legacy.root {
        moved += drain(
            queue_dir,
            0,
            faults.clone(),
            |c, _| shared.put(c, false),
            layout::remove_legacy_root,
        )?;
    }
    for lane in &legacy.lanes {
        moved += drain(
            lane,
            0,
            faults.clone(),
            |c, _| shared.put(c, false),
            layout::remove_queue_dir,
        )?;
    }
    if let Some(dead) = &legacy.dead_letter {
        moved += drain(
            dead,
            0,
            faults.clone(),
            |c, _| shared.put(c, true),
            layout::remove_queue_dir,
        )?;
    }
    tracing::info!(
        queue_dir = %queue_dir.display(), entries = moved,
        targets = ?shared.dests.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        "moved the queues of the layout before per-target directories"
    );
    Ok(())
}

/// Moves the stale queues of a target's directory into its current
/// `lanes` lanes, recording the progress of each move in [`Marker`] so
/// that a move interrupted by a crash resumes where it was (at most one
/// chunk is moved twice) instead of starting over: repeated crashes while
/// moving must not multiply the queue.
fn move_stale(
    dir: &Path,
    lanes: usize,
    stale: &[PathBuf],
    dest: &Dest,
    faults: &Option<Arc<Faults>>,
) -> Result<()> {
    let io = |source| Error::Io {
        path: dir.join(MARKER),
        source,
    };
    let mut order: Vec<(PathBuf, Seq)> = Vec::new();
    if let Some(m) = Marker::read(dir).map_err(io)? {
        let src = dir.join(&m.source);
        if stale.contains(&src) {
            // The interrupted move's destination holds the first part of
            // `src`: when it is stale too, it goes first.
            if m.lanes != lanes {
                for i in 0..m.lanes {
                    let d = layout::lane_dir(dir, i, m.lanes);
                    if stale.contains(&d) {
                        order.push((d, 0));
                    }
                }
            }
            order.push((src, m.upto));
        }
    }
    for s in stale {
        if !order.iter().any(|(p, _)| p == s) {
            order.push((s.clone(), 0));
        }
    }
    for (src, after) in order {
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mark = |upto| {
            Marker {
                source: name.clone(),
                lanes,
                upto,
            }
            .write(dir)
            .map_err(io)
        };
        mark(after)?;
        let moved = drain(
            &src,
            after,
            faults.clone(),
            |chunk, last| {
                let mut b = Batch::new(dest.lanes.len());
                for bytes in chunk {
                    let bare = !is_wrapped(&bytes);
                    match dead_letter::decode(&bytes) {
                        Letter::Record(d) => b.record(&d.record, bare.then_some(bytes)),
                        Letter::Undecodable { error, entry } => {
                            b.dead.push(dead_letter::encode_undecodable(
                                entry.as_bytes(),
                                &format!("{error} (found in {})", src.display()),
                            ))
                        }
                    }
                }
                b.write(dest)?;
                mark(last)
            },
            layout::remove_queue_dir,
        )?;
        tracing::info!(
            from = %src.display(), target_id = %dest.id, entries = moved, resumed_after = after,
            "moved a queue of another layout into the current lanes"
        );
    }
    Marker::remove(dir).map_err(io)
}

/// The progress file of a move in a target's directory.
const MARKER: &str = "MOVING";

/// What [`MARKER`] holds: the queue being moved (a directory name in the
/// target's directory), into how many lanes, and up to which of its
/// entries the move is durable.
#[derive(Debug, PartialEq)]
struct Marker {
    source: String,
    lanes: usize,
    upto: Seq,
}

impl Marker {
    fn read(dir: &Path) -> std::io::Result<Option<Marker>> {
        let text = match std::fs::read_to_string(dir.join(MARKER)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut fields = BTreeMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once(' ') {
                fields.insert(k, v);
            }
        }
        let parsed = (|| {
            Some(Marker {
                source: (*fields.get("source")?).to_owned(),
                lanes: fields.get("lanes")?.parse().ok()?,
                upto: fields.get("upto")?.parse().ok()?,
            })
        })();
        if parsed.is_none() {
            tracing::warn!(dir = %dir.display(), "ignoring an unreadable {MARKER} file");
        }
        Ok(parsed)
    }

    /// Replaces the file atomically (temporary file, fsync, rename,
    /// directory fsync).
    fn write(&self, dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = dir.join(format!("{MARKER}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        write!(
            f,
            "source {}\nlanes {}\nupto {}\n",
            self.source, self.lanes, self.upto
        )?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(MARKER))?;
        std::fs::File::open(dir)?.sync_all()
    }

    fn remove(dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(dir.join(MARKER)) {
            Ok(()) => std::fs::File::open(dir)?.sync_all(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The legacy queues of a `queue_dir` and the targets that share it.
struct Shared<'a> {
    members: &'a [usize],
    dests: &'a [Dest],
    rules: &'a RuleSet,
    route: &'a [usize],
    queue_dir: &'a Path,
}

impl Shared<'_> {
    /// Puts a chunk of legacy entries: all to the one target, or each to
    /// the targets whose rules match it (the first target when none does).
    /// `dead`: the entries are dead letters, and stay dead letters.
    fn put(&self, chunk: Vec<Vec<u8>>, dead: bool) -> Result<()> {
        let mut batches: Vec<Batch> = self
            .dests
            .iter()
            .map(|d| Batch::new(d.lanes.len()))
            .collect();
        let mut hits = Vec::new();
        for bytes in chunk {
            let bare = !is_wrapped(&bytes);
            let d = match dead_letter::decode(&bytes) {
                Letter::Record(d) => d,
                Letter::Undecodable { error, entry } => {
                    batches[0].dead.push(dead_letter::encode_undecodable(
                        entry.as_bytes(),
                        &format!("{error} (found in {})", self.queue_dir.display()),
                    ));
                    continue;
                }
            };
            let mut to: Vec<usize> = Vec::new();
            if self.members.len() == 1 {
                to.push(0);
            } else if let (Ok(event), Ok(key)) =
                (d.record.parsed_event_name(), d.record.decoded_key())
            {
                self.rules.match_into(event, &key, &mut hits);
                for &h in &hits {
                    let target = self.route[h];
                    if let Some(m) = self.members.iter().position(|&i| i == target) {
                        if !to.contains(&m) {
                            to.push(m);
                        }
                    }
                }
            }
            if to.is_empty() {
                // Whose it was is unknown: kept as a dead letter of the first.
                batches[0].dead.push(dead_letter::encode(
                    &d.record,
                    &format!(
                        "queued in the shared queue_dir {} before per-target directories; \
                         matches the rules of none of its targets",
                        self.queue_dir.display()
                    ),
                ));
                continue;
            }
            for m in to {
                if dead {
                    batches[m]
                        .dead
                        .push(dead_letter::encode(&d.record, &d.error));
                } else {
                    batches[m].record(&d.record, bare.then(|| bytes.clone()));
                }
            }
        }
        for (b, dest) in batches.into_iter().zip(self.dests) {
            b.write(dest)?;
        }
        Ok(())
    }
}

/// Whether an entry is a dead letter (not a bare record).
fn is_wrapped(bytes: &[u8]) -> bool {
    bytes.starts_with(br#"{"error":"#) || bytes.starts_with(br#"{"entry":"#)
}

/// Whether two paths name the same directory (compared as given when they
/// do not exist yet).
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}
