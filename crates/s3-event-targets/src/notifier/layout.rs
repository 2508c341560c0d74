//! Where a target's durable queues live under `queue_dir`, and what other
//! layouts may have left there.
//!
//! ```text
//! <queue_dir>/<type>-<id>/          one directory per target, as MinIO
//!     lane-<i>-of-<n>/              the queue of sender i of n (a QueueStore)
//!     dead-letter/                  the dead-letter store (a QueueStore)
//!     replay/                       made by an operator: queued again on start
//! ```
//!
//! Left by other layouts, and drained into the current lanes on start:
//! `lane-<i>-of-<m>` for another number of senders `m`, `replay/`, and,
//! from the versions before per-target directories, a queue in `queue_dir`
//! itself (one sender), `queue_dir/lane-<i>` (several senders) and
//! `queue_dir/dead-letter`.

use std::io;
use std::path::{Path, PathBuf};

use s3_event_core::log::LOCK_FILE;
use s3_event_core::TargetId;

/// The dead-letter store's directory, in a target's directory.
pub const DEAD_LETTER_DIR: &str = "dead-letter";
/// A queue an operator puts in a target's directory (for example its
/// `dead-letter` directory, renamed while the notifier is stopped): its
/// entries are queued again on the next start, then it is removed.
pub const REPLAY_DIR: &str = "replay";

/// The directory of `target`'s queues under `queue_dir`:
/// `<queue_dir>/<type>-<id>`, every byte outside `[A-Za-z0-9._-]` written
/// as `%XX`.
pub fn target_dir(queue_dir: &Path, target: &TargetId) -> PathBuf {
    let mut name = String::new();
    for b in format!("{}-{}", target.kind(), target.id()).bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    queue_dir.join(name)
}

/// The queue of sender `lane` of `lanes`.
pub(super) fn lane_dir(target_dir: &Path, lane: usize, lanes: usize) -> PathBuf {
    target_dir.join(format!("lane-{lane}-of-{lanes}"))
}

/// Queues in a target's directory that the current layout (`lanes`
/// senders) does not use: lanes of another number of senders, ordered by
/// (number, lane), then `replay`.
pub(super) fn stale_queues(target_dir: &Path, lanes: usize) -> io::Result<Vec<PathBuf>> {
    let mut found: Vec<((usize, usize), PathBuf)> = Vec::new();
    for (name, path) in subdirs(target_dir)? {
        let parsed = name
            .strip_prefix("lane-")
            .and_then(|r| r.split_once("-of-"))
            .and_then(|(i, n)| Some((n.parse::<usize>().ok()?, i.parse::<usize>().ok()?)));
        match parsed {
            Some((n, i)) if n != lanes => found.push(((n, i), path)),
            _ => {}
        }
    }
    found.sort();
    let mut out: Vec<PathBuf> = found.into_iter().map(|(_, p)| p).collect();
    let replay = target_dir.join(REPLAY_DIR);
    if replay.is_dir() {
        out.push(replay);
    }
    Ok(out)
}

/// What the versions before per-target directories left in a `queue_dir`.
#[derive(Debug, Default)]
pub(super) struct Legacy {
    /// Segments or an ack log in `queue_dir` itself (one sender).
    pub root: bool,
    /// `queue_dir/lane-<i>` (several senders), by `i`.
    pub lanes: Vec<PathBuf>,
    /// `queue_dir/dead-letter`.
    pub dead_letter: Option<PathBuf>,
}

impl Legacy {
    pub fn is_empty(&self) -> bool {
        !self.root && self.lanes.is_empty() && self.dead_letter.is_none()
    }
}

/// Finds the legacy queues in `queue_dir` (nothing if it does not exist).
pub(super) fn legacy(queue_dir: &Path) -> io::Result<Legacy> {
    let mut legacy = Legacy::default();
    let rd = match std::fs::read_dir(queue_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(legacy),
        Err(e) => return Err(e),
    };
    let mut lanes = Vec::new();
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type()?.is_dir() {
            if name == DEAD_LETTER_DIR {
                legacy.dead_letter = Some(e.path());
            } else if let Some(i) = name
                .strip_prefix("lane-")
                .and_then(|i| i.parse::<usize>().ok())
            {
                lanes.push((i, e.path()));
            }
        } else if name == "acks" || is_segment_name(&name) {
            legacy.root = true;
        }
    }
    lanes.sort();
    legacy.lanes = lanes.into_iter().map(|(_, p)| p).collect();
    Ok(legacy)
}

/// `<20 digits>.log`: a queue store segment.
fn is_segment_name(name: &str) -> bool {
    name.strip_suffix(".log")
        .is_some_and(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
}

fn subdirs(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e?;
        if e.file_type()?.is_dir() {
            out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
        }
    }
    Ok(out)
}

/// Removes a drained queue directory, then fsyncs its parent so that the
/// removal survives a power cut (a queue found again would be delivered
/// again: duplicates, never loss).
pub(super) fn remove_queue_dir(dir: &Path) -> io::Result<()> {
    std::fs::remove_dir_all(dir)?;
    sync_parent(dir)
}

/// Removes the files of a drained legacy queue in `queue_dir` itself
/// (segments, ack log, lock), leaving everything else.
pub(super) fn remove_legacy_root(queue_dir: &Path) -> io::Result<()> {
    for e in std::fs::read_dir(queue_dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type()?.is_file()
            && (is_segment_name(&name) || ["acks", "acks.tmp", LOCK_FILE].contains(&name.as_str()))
        {
            std::fs::remove_file(e.path())?;
        }
    }
    std::fs::File::open(queue_dir)?.sync_all()
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => std::fs::File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_dirs_are_type_dash_id_and_safe() {
        let q = Path::new("/q");
        let id: TargetId = "arn:minio:sqs::1:redis".parse().unwrap();
        assert_eq!(target_dir(q, &id), Path::new("/q/redis-1"));
        let id: TargetId = "arn:minio:sqs:us-east-1:../x y:webhook".parse().unwrap();
        assert_eq!(target_dir(q, &id), Path::new("/q/webhook-..%2Fx%20y"));
    }

    #[test]
    fn stale_queues_are_other_lane_counts_then_replay() {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "lane-0-of-2",
            "lane-1-of-2",
            "lane-0-of-1",
            "lane-1-of-10",
            "replay",
            "dead-letter",
            "lane-x-of-2",
        ] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let names: Vec<String> = stale_queues(dir.path(), 2)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["lane-0-of-1", "lane-1-of-10", "replay"]);
    }

    #[test]
    fn legacy_layouts_are_found() {
        let dir = tempfile::tempdir().unwrap();
        assert!(legacy(dir.path()).unwrap().is_empty());
        assert!(legacy(&dir.path().join("missing")).unwrap().is_empty());
        for d in [
            "lane-10",
            "lane-2",
            "dead-letter",
            "webhook-1",
            "lane-0-of-1",
        ] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("notes.log"), "").unwrap();
        let l = legacy(dir.path()).unwrap();
        assert!(!l.root);
        assert_eq!(
            l.lanes,
            [dir.path().join("lane-2"), dir.path().join("lane-10")]
        );
        assert_eq!(l.dead_letter, Some(dir.path().join("dead-letter")));
        std::fs::write(dir.path().join("00000000000000000001.log"), "").unwrap();
        assert!(legacy(dir.path()).unwrap().root);
        remove_legacy_root(dir.path()).unwrap();
        assert!(!legacy(dir.path()).unwrap().root);
        assert!(dir.path().join("notes.log").exists());
    }
}
