use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Wake;

use super::*;

const MAGIC: [u8; 8] = *b"S3ETEST1";

fn opts(fsync: FsyncPolicy) -> LogOptions {
    LogOptions::new("log", MAGIC).with_fsync(fsync)
}

fn read_all(dir: &Path, o: LogOptions) -> (Vec<Vec<u8>>, Recovery) {
    let mut seen = Vec::new();
    let (_, r) = Log::open(dir, o, |f| seen.push(f.payload.to_vec())).unwrap();
    (seen, r)
}

fn v(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// A minimal executor for the async waiter.
struct Unpark(std::thread::Thread, AtomicBool);
impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.1.store(true, Ordering::SeqCst);
        self.0.unpark();
    }
}
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let w = Arc::new(Unpark(std::thread::current(), AtomicBool::new(false)));
    let waker = Waker::from(Arc::clone(&w));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        while !w.1.swap(false, Ordering::SeqCst) {
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }
}

#[test]
fn appends_survive_reopen_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(FsyncPolicy::Always).with_segment_bytes(64);
    {
        let (log, r) = Log::open(dir.path(), o.clone(), |_| panic!("empty")).unwrap();
        assert_eq!(r.segments, 0);
        for i in 0..10 {
            let a = log.append(&[format!("entry {i}")], i).unwrap();
            log.sync_to(a.token).unwrap();
        }
        assert!(log.segments().len() > 2, "{:?}", log.segments());
    }
    let (seen, r) = read_all(dir.path(), o.clone());
    let want: Vec<Vec<u8>> = (0..10).map(|i| format!("entry {i}").into_bytes()).collect();
    assert_eq!(seen, want);
    assert!(r.truncated.is_none() && r.corrupt.is_empty());
    // Bases are what the appender gave when each segment started.
    let (log, _) = Log::open(dir.path(), o, |_| {}).unwrap();
    let segs = log.segments();
    assert_eq!(segs[0].base, 0);
    assert!(segs.windows(2).all(|w| w[0].base < w[1].base));
}

#[test]
fn a_second_opener_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(FsyncPolicy::Never).with_what("spool");
    let (log, _) = Log::open(dir.path(), o.clone(), |_| {}).unwrap();
    let e = Log::open(dir.path(), o.clone(), |_| {}).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Locked { .. }), "{e:?}");
    assert!(
        msg.contains("spool directory") && msg.contains(&std::process::id().to_string()),
        "{msg}"
    );
    drop(log);
    Log::open(dir.path(), o, |_| {}).unwrap();
}

#[test]
fn a_failed_write_is_cut_back_and_nothing_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let o = opts(FsyncPolicy::Never).with_faults(Some(Arc::clone(&faults)));
    {
        let (log, _) = Log::open(dir.path(), o.clone(), |_| {}).unwrap();
        log.append(&["a"], 0).unwrap();
        // ENOSPC after 5 of the bytes of two frames.
        faults.fail_writes(1, 5, ErrorKind::StorageFull);
        let e = log.append(&["b", "c"], 1).unwrap_err();
        assert_eq!(e.io_kind(), Some(ErrorKind::StorageFull));
        assert_eq!(log.active_segment(), None, "sealed");
        let after = log.append(&["d"], 3).unwrap();
        assert_eq!(after.base, 3);
        assert_eq!(log.segments().len(), 2);
    }
    let (seen, r) = read_all(dir.path(), o);
    assert_eq!(seen, v(&["a", "d"]));
    assert!(r.corrupt.is_empty(), "the cut left no partial frame");
}

#[test]
fn a_failed_write_that_cannot_be_cut_back_ends_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let o = opts(FsyncPolicy::Never).with_faults(Some(Arc::clone(&faults)));
    {
        let (log, _) = Log::open(dir.path(), o.clone(), |_| {}).unwrap();
        log.append(&["a"], 0).unwrap();
        faults.fail_writes(1, 11, ErrorKind::Other);
        faults.fail_set_lens(1);
        log.append(&["bbbbbb"], 1).unwrap_err();
        log.append(&["c"], 2).unwrap();
    }
    let (seen, r) = read_all(dir.path(), o);
    assert_eq!(seen, v(&["a", "c"]));
    assert_eq!(r.corrupt.len(), 1, "{r:?}");
}

#[test]
fn a_failed_fsync_is_never_reported_as_success() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let o = opts(FsyncPolicy::Always).with_faults(Some(Arc::clone(&faults)));
    let (log, _) = Log::open(dir.path(), o, |_| {}).unwrap();
    let a = log.append(&["a"], 0).unwrap();
    log.sync_to(a.token).unwrap();
    let b = log.append(&["b"], 1).unwrap();
    faults.fail_fsyncs(1);
    assert!(matches!(
        log.sync_to(b.token),
        Err(Error::SyncFailed { .. })
    ));
    // The segment is sealed; the next append goes to a new one.
    let c = log.append(&["c"], 2).unwrap();
    assert_ne!(c.segment, b.segment);
    log.sync_to(c.token).unwrap();
    // A later good round does not make the failed one good.
    assert!(matches!(
        log.sync_to(b.token),
        Err(Error::SyncFailed { .. })
    ));
    assert!(matches!(
        block_on(log.synced(b.token)),
        Err(Error::SyncFailed { .. })
    ));
    log.sync_to(a.token).unwrap();
    assert_eq!(log.stats().failed_fsyncs, 1);
}

#[test]
fn the_async_waiter_is_answered_by_the_fsync_thread() {
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Every(Duration::from_millis(2)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::new();
        faults.record();
        let o = opts(policy).with_faults(Some(Arc::clone(&faults)));
        let (log, _) = Log::open(dir.path(), o, |_| {}).unwrap();
        let a = log.append(&["a"], 0).unwrap();
        block_on(log.synced(a.token)).unwrap();
        assert!(faults.ops().iter().any(|op| matches!(op, Op::Sync(_))));
    }
}

#[test]
fn every_interval_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    faults.record();
    let o =
        opts(FsyncPolicy::Every(Duration::from_millis(5))).with_faults(Some(Arc::clone(&faults)));
    let (log, _) = Log::open(dir.path(), o, |_| {}).unwrap();
    log.append(&["a"], 0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.stats().fsyncs == 0 {
        assert!(Instant::now() < deadline, "no background fsync");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn synced_now_does_not_wait_for_the_interval() {
    // An hour's interval: after the first round, the next one would start
    // an hour later.
    let dir = tempfile::tempdir().unwrap();
    let o = opts(FsyncPolicy::Every(Duration::from_secs(3600)));
    let (log, _) = Log::open(dir.path(), o, |_| {}).unwrap();
    let log = Arc::new(log);
    let a = log.append(&["a"], 0).unwrap();
    log.sync_to(a.token).unwrap();
    let b = log.append(&["b"], 0).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wait = |now: bool| {
        let (log, tx) = (Arc::clone(&log), tx.clone());
        std::thread::spawn(move || {
            let synced = if now {
                log.synced_now(b.token)
            } else {
                log.synced(b.token)
            };
            tx.send((now, block_on(synced))).unwrap();
        })
    };
    // A waiter at the interval, whose round is waiting out the hour (if it
    // started before the hurried one), then one that hurries: both are
    // answered by the hurried round.
    let at_interval = wait(false);
    std::thread::sleep(Duration::from_millis(50));
    let hurried = wait(true);
    for _ in 0..2 {
        let (now, synced) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a waiter still waits for the interval");
        assert!(synced.is_ok(), "now {now}: {synced:?}");
    }
    at_interval.join().unwrap();
    hurried.join().unwrap();
    assert_eq!(log.stats().fsyncs, 2);
}

#[test]
fn background_rounds_wait_their_own_period() {
    // Waiters get rounds every 1 ms; writes nobody waits for are synced
    // 400 ms after the last round started, not 1 ms after.
    let dir = tempfile::tempdir().unwrap();
    let o = opts(FsyncPolicy::Every(Duration::from_millis(1)))
        .with_background(Duration::from_millis(400));
    let (log, _) = Log::open(dir.path(), o, |_| {}).unwrap();
    let before = Instant::now();
    let a = log.append(&["a"], 0).unwrap();
    log.sync_to(a.token).unwrap();
    let after_waited = log.stats().fsyncs;
    assert_eq!(after_waited, 1);
    log.append(&["b"], 0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.stats().fsyncs == after_waited {
        assert!(Instant::now() < deadline, "no background fsync");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        before.elapsed() >= Duration::from_millis(400),
        "background round after {:?}",
        before.elapsed()
    );
}

#[test]
fn concurrent_callers_share_fsync_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(FsyncPolicy::Always);
    let (log, _) = Log::open(dir.path(), o.clone(), |_| {}).unwrap();
    let log = Arc::new(log);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..200 {
                    let a = log.append(&[format!("{t}/{i}")], 0).unwrap();
                    log.sync_to(a.token).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let fsyncs = log.stats().fsyncs;
    assert!(fsyncs < 1600, "{fsyncs} rounds for 1600 durable appends");
    drop(log);
    let (seen, _) = read_all(dir.path(), o);
    assert_eq!(seen.len(), 1600);
    // Each thread's entries in its own order.
    for t in 0..8 {
        let mine: Vec<_> = seen
            .iter()
            .filter_map(|e| {
                let s = std::str::from_utf8(e).unwrap();
                let (a, b) = s.split_once('/').unwrap();
                (a == t.to_string()).then(|| b.parse::<u32>().unwrap())
            })
            .collect();
        assert_eq!(mine, (0..200).collect::<Vec<_>>());
    }
}

#[test]
fn a_torn_tail_of_the_newest_segment_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(FsyncPolicy::Never);
    {
        let (log, _) = Log::open(dir.path(), o.clone(), |_| {}).unwrap();
        log.append(&["one", "two"], 0).unwrap();
    }
    let path = segment_path(dir.path(), "log", 0);
    let len = std::fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 2)
        .unwrap();
    let (seen, r) = read_all(dir.path(), o.clone());
    assert_eq!(seen, v(&["one"]));
    assert_eq!(
        r.truncated.as_ref().unwrap().reason,
        "frame runs past the end of the file"
    );
    // And new frames follow the last good one.
    {
        let (log, _) = Log::open(dir.path(), o.clone(), |_| {}).unwrap();
        log.append(&["three"], 9).unwrap();
        assert_eq!(log.segments().len(), 1);
    }
    assert_eq!(read_all(dir.path(), o).0, v(&["one", "three"]));
}

#[test]
fn a_segment_cut_before_its_header_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(FsyncPolicy::Never);
    {
        let (log, _) = Log::open(dir.path(), o.clone(), |_| {}).unwrap();
        log.append(&["one"], 0).unwrap();
    }
    std::fs::write(segment_path(dir.path(), "log", 1), &MAGIC[..5]).unwrap();
    let (seen, r) = read_all(dir.path(), o.clone());
    assert_eq!((seen, r.removed_headless), (v(&["one"]), 1));
    assert!(!segment_path(dir.path(), "log", 1).exists());
}

/// A log in `dir` with `Always` fsyncs, 30-byte segments and `faults`,
/// holding `n` entries, one segment each.
fn one_entry_per_segment(dir: &Path, faults: &Arc<Faults>, sync_removals: bool, n: u64) -> Log {
    let o = opts(FsyncPolicy::Always)
        .with_segment_bytes(30)
        .with_sync_removals(sync_removals)
        .with_faults(Some(Arc::clone(faults)));
    let (log, _) = Log::open(dir, o, |_| {}).unwrap();
    for i in 0..n {
        log.append(&[format!("entry {i}")], i).unwrap();
    }
    log
}

#[test]
fn removal_is_oldest_first_with_a_directory_fsync_after_each() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let log = one_entry_per_segment(dir.path(), &faults, true, 4);
    let segs: Vec<u64> = log.segments().iter().map(|s| s.segment).collect();
    assert_eq!(segs.len(), 4);
    faults.record();
    // Never the newest, even when asked.
    assert_eq!(log.remove_through(u64::MAX).unwrap(), 3);
    let ops: Vec<String> = faults
        .ops()
        .iter()
        .map(|op| match op {
            Op::Remove(p) => format!("rm {}", p.file_name().unwrap().to_string_lossy()),
            Op::SyncDir(_) => "syncdir".to_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    let want: Vec<String> = segs[..3]
        .iter()
        .flat_map(|s| [format!("rm {s:020}.log"), "syncdir".to_owned()])
        .collect();
    assert_eq!(ops, want);
    assert_eq!(log.segments().len(), 1);
}

#[test]
fn removal_without_sync_removals_fsyncs_no_directory() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let log = one_entry_per_segment(dir.path(), &faults, false, 4);
    faults.record();
    assert_eq!(log.remove_through(u64::MAX).unwrap(), 3);
    let ops = faults.ops();
    assert_eq!(
        ops.iter().filter(|op| matches!(op, Op::Remove(_))).count(),
        3
    );
    assert!(
        !ops.iter().any(|op| matches!(op, Op::SyncDir(_))),
        "{ops:?}"
    );
}

#[test]
fn a_failed_directory_fsync_stops_removal_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let log = one_entry_per_segment(dir.path(), &faults, true, 3);
    faults.fail_dir_syncs(1);
    assert!(log.remove_through(u64::MAX).is_err());
    assert_eq!(log.segments().len(), 2, "stopped after the first removal");
    faults.record();
    assert_eq!(log.remove_through(u64::MAX).unwrap(), 1);
    // The directory fsync is retried before the next removal.
    assert!(
        matches!(faults.ops()[0], Op::SyncDir(_)),
        "{:?}",
        faults.ops()
    );
}

#[test]
fn legacy_segments_are_read_and_never_appended_to() {
    // Headerless, CRC over length and payload: the queue store's first format.
    let dir = tempfile::tempdir().unwrap();
    let mut data = Vec::new();
    frame::encode(&mut data, b"old 1");
    frame::encode(&mut data, b"old 2");
    std::fs::write(segment_path(dir.path(), "log", 7), &data).unwrap();
    let o = opts(FsyncPolicy::Never).with_legacy(Legacy::Headerless);
    let mut bases = Vec::new();
    {
        let (log, _) = Log::open(dir.path(), o.clone(), |f| bases.push((f.base, f.index))).unwrap();
        assert_eq!(bases, vec![(7, 0), (7, 1)]);
        assert_eq!(log.active_segment(), None);
        let a = log.append(&["new"], 9).unwrap();
        assert_eq!((a.segment, a.base), (8, 9));
    }
    assert_eq!(read_all(dir.path(), o).0, v(&["old 1", "old 2", "new"]));

    // A magic and a CRC over the payload alone: the spool's first format.
    let dir = tempfile::tempdir().unwrap();
    let mut data = b"S3ESPL01".to_vec();
    for p in [&b"x1"[..], b"x2"] {
        data.extend_from_slice(&(p.len() as u32).to_le_bytes());
        data.extend_from_slice(&crc32fast::hash(p).to_le_bytes());
        data.extend_from_slice(p);
    }
    std::fs::write(segment_path(dir.path(), "log", 3), &data).unwrap();
    let o = opts(FsyncPolicy::Never).with_legacy(Legacy::MagicPayloadCrc(*b"S3ESPL01"));
    assert_eq!(read_all(dir.path(), o).0, v(&["x1", "x2"]));
}

#[test]
fn scan_reads_a_segment_again_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), opts(FsyncPolicy::Never), |_| {}).unwrap();
    let big = vec![7u8; 3 << 20];
    log.append(&[&b"small"[..], &big, b"after"], 0).unwrap();
    let seg = log.segments()[0].segment;
    let mut seen = Vec::new();
    log.scan(seg, |f| seen.push((f.index, f.payload.len())))
        .unwrap();
    assert_eq!(seen, vec![(0, 5), (1, 3 << 20), (2, 5)]);
}

#[test]
fn side_files_append_and_replace_durably() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let o = opts(FsyncPolicy::Always).with_faults(Some(Arc::clone(&faults)));
    {
        let (log, _) = Log::open(dir.path(), o.clone(), |_| {}).unwrap();
        let (mut side, contents) = log.side_file("acks").unwrap();
        assert!(contents.is_empty());
        faults.record();
        let t = side.append(b"12345678").unwrap();
        log.sync_to(t).unwrap();
        assert!(faults
            .ops()
            .iter()
            .any(|op| matches!(op, Op::Sync(p) if p.ends_with("acks"))));
        faults.fail_writes(1, 2, ErrorKind::StorageFull);
        side.append(b"abcdefgh").unwrap_err();
        assert_eq!(side.len(), 8, "cut back");
        side.replace(b"fresh").unwrap();
    }
    let (log, _) = Log::open(dir.path(), o, |_| {}).unwrap();
    let (_, contents) = log.side_file("acks").unwrap();
    assert_eq!(contents, b"fresh");
}

#[test]
fn close_releases_the_directory_without_dropping() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(FsyncPolicy::Always);
    let (log, _) = Log::open(dir.path(), o.clone(), |_| {}).unwrap();
    log.append(&["kept"], 0).unwrap();
    log.close().unwrap();
    assert!(matches!(
        log.append(&["late"], 1),
        Err(Error::Closed { .. })
    ));
    // Another opener gets the directory while the closed log still exists.
    let (seen, _) = read_all(dir.path(), o);
    assert_eq!(seen, v(&["kept"]));
    drop(log);
}
