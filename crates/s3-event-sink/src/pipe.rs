//! A gzip batch whose deflate runs off the pushing task
//! ([`SinkBuilder::with_background_compression`](crate::SinkBuilder::with_background_compression)).
//!
//! The pusher frames records (NDJSON lines or a JSON array) into a chunk of
//! [`GZIP_CHUNK`] bytes. Full chunks go on the batch's queue, and a run on
//! tokio's blocking pool feeds them to deflate in order, so serializing the
//! next records and compressing the last ones overlap on two cores. At most
//! one run per batch exists at a time; it ends when the queue is empty.
//!
//! The queue is bounded: when the compressor is that far behind, the pusher
//! compresses the queued chunks itself. Memory stays bounded, a lone core
//! still makes progress, and the size estimate the flush policy uses never
//! rests on more than the bound of not-yet-compressed bytes.
//!
//! Deflate's state moves between the run and the pusher but is only ever
//! used by one of them, outside the lock; whoever wants it while the other
//! has it waits on a condition variable for the length of one chunk.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::encode::{gzip_estimate, GzipStream, GZIP_CHUNK, GZIP_HEADER_LEN};
use crate::sink::relock;
use crate::{Encoding, Error, Result};

/// The compressed object, once the run has finished it.
pub(crate) type Finished = oneshot::Receiver<Result<Vec<u8>>>;

#[derive(Default)]
struct State {
    queue: VecDeque<Vec<u8>>,
    /// Bytes in `queue`.
    queued: usize,
    /// `None` while the run or the pusher is feeding it.
    deflater: Option<Box<GzipStream>>,
    /// A run is scheduled or running.
    running: bool,
    /// Set by `finish`: the run that empties the queue sends the object.
    finish: Option<oneshot::Sender<Result<Vec<u8>>>>,
    /// The first compression error; the object is not produced then.
    failed: Option<Error>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the deflater is put back.
    returned: Condvar,
    /// gzip header plus deflate output so far (for the size estimate).
    produced: AtomicUsize,
    /// Input fed before the write during which the output last grew.
    in_at_growth: AtomicUsize,
}

impl Shared {
    /// Waits until the deflater is free, then takes it.
    fn take_deflater<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> (MutexGuard<'a, State>, Box<GzipStream>) {
        loop {
            if let Some(d) = st.deflater.take() {
                return (st, d);
            }
            st = self.returned.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Feeds `chunks` outside the lock, then puts the deflater back.
    fn feed_all(&self, st: MutexGuard<'_, State>, chunks: &[Vec<u8>]) {
        let (st, mut d) = self.take_deflater(st);
        drop(st);
        let mut result = Ok(());
        for c in chunks {
            result = d.feed(c);
            if result.is_err() {
                break;
            }
        }
        self.in_at_growth.store(d.in_at_growth(), Ordering::Relaxed);
        self.produced.store(d.produced(), Ordering::Relaxed);
        let mut st = relock(&self.state);
        if let Err(e) = result {
            st.failed.get_or_insert(e);
        }
        st.deflater = Some(d);
        drop(st);
        self.returned.notify_all();
    }

    /// One run: feeds queued chunks until the queue is empty, then, if the
    /// batch is finished, sends the object.
    fn run(&self) {
        loop {
            let mut st = relock(&self.state);
            // Wait for the pusher if it is compressing inline, so a chunk
            // it has not fed yet is not overtaken.
            while st.deflater.is_none() {
                st = self.returned.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            let Some(chunk) = st.queue.pop_front() else {
                st.running = false;
                if let Some(tx) = st.finish.take() {
                    let d = st.deflater.take().expect("checked above");
                    let failed = st.failed.take();
                    drop(st);
                    let _ = tx.send(match failed {
                        Some(e) => Err(e),
                        None => d.finish(),
                    });
                }
                return;
            };
            st.queued -= chunk.len();
            self.feed_all(st, std::slice::from_ref(&chunk));
        }
    }
}

/// One batch's gzip stream, compressed on tokio's blocking pool; see the
/// [module docs](self). The same framing and output as a gzip
/// [`BatchEncoder`](crate::BatchEncoder).
pub(crate) struct GzipPipe {
    encoding: Encoding,
    records: usize,
    chunk: Vec<u8>,
    /// All framed bytes so far, queued or not.
    total_in: usize,
    /// Most bytes the queue may hold before the pusher compresses them.
    queue_limit: usize,
    shared: Arc<Shared>,
}

impl GzipPipe {
    /// An empty batch at gzip `level`; `max_bytes` (the flush policy's
    /// object size) bounds the queue so the size estimate stays close.
    pub(crate) fn new(encoding: Encoding, level: u32, max_bytes: usize) -> Self {
        let mut pipe = GzipPipe {
            encoding,
            records: 0,
            chunk: Vec::with_capacity(GZIP_CHUNK + 4096),
            total_in: 0,
            queue_limit: (max_bytes / 8).clamp(GZIP_CHUNK, 8 * GZIP_CHUNK),
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    deflater: Some(Box::new(GzipStream::new(level))),
                    ..State::default()
                }),
                returned: Condvar::new(),
                produced: AtomicUsize::new(GZIP_HEADER_LEN),
                in_at_growth: AtomicUsize::new(0),
            }),
        };
        if encoding == Encoding::JsonArray {
            pipe.write(b"[");
        }
        pipe
    }

    pub(crate) fn len(&self) -> usize {
        self.records
    }

    /// Appends one record that [`invalid_record`](crate::encode::invalid_record)
    /// has passed.
    pub(crate) fn push_checked(&mut self, record: &[u8]) {
        match self.encoding {
            Encoding::Ndjson => {
                self.write(record);
                self.write(b"\n");
            }
            // A JSON array (the sink pipes only gzip, never Parquet).
            _ => {
                if self.records > 0 {
                    self.write(b",");
                }
                self.write(record);
            }
        }
        self.records += 1;
    }

    /// The estimated size of the object if finished now, as
    /// [`BatchEncoder::encoded_len`](crate::BatchEncoder::encoded_len).
    pub(crate) fn encoded_len(&self) -> usize {
        let closing = usize::from(self.encoding == Encoding::JsonArray);
        gzip_estimate(
            self.shared.produced.load(Ordering::Relaxed),
            self.shared.in_at_growth.load(Ordering::Relaxed),
            self.total_in + closing,
        )
    }

    /// Closes the array (if any) and hands the rest to a run, which sends
    /// the finished object.
    pub(crate) fn finish(mut self) -> Finished {
        if self.encoding == Encoding::JsonArray {
            self.write(b"]");
        }
        let (tx, rx) = oneshot::channel();
        let chunk = std::mem::take(&mut self.chunk);
        let mut st = relock(&self.shared.state);
        if !chunk.is_empty() {
            st.queued += chunk.len();
            st.queue.push_back(chunk);
        }
        st.finish = Some(tx);
        self.schedule(st);
        rx
    }

    fn write(&mut self, bytes: &[u8]) {
        self.chunk.extend_from_slice(bytes);
        self.total_in += bytes.len();
        if self.chunk.len() >= GZIP_CHUNK {
            self.hand_off();
        }
    }

    fn hand_off(&mut self) {
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(GZIP_CHUNK + 4096));
        let mut st = relock(&self.shared.state);
        if st.queued + chunk.len() > self.queue_limit {
            // The compressor is behind: feed what is queued, and this chunk,
            // here.
            let mut chunks: Vec<Vec<u8>> = st.queue.drain(..).collect();
            st.queued = 0;
            chunks.push(chunk);
            self.shared.feed_all(st, &chunks);
            return;
        }
        st.queued += chunk.len();
        st.queue.push_back(chunk);
        self.schedule(st);
    }

    /// Starts a run unless one is on its way.
    fn schedule(&self, mut st: MutexGuard<'_, State>) {
        if st.running {
            return;
        }
        st.running = true;
        drop(st);
        let shared = Arc::clone(&self.shared);
        // Dropped without running only when the runtime shuts down; the
        // receiver of `finish` then sees its sender gone.
        drop(tokio::task::spawn_blocking(move || shared.run()));
    }
}
