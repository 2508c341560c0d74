//! A bucket poller: lists a prefix of an [`ObjectStore`] on an interval,
//! compares the listing with a cursor persisted to a file, and emits the
//! `ObjectCreated:Put` and `ObjectRemoved:Delete` records a real S3 store
//! would have sent — for stores without notifications, or as a safety net
//! beside them.
//!
//! - The cursor maps each key to its ETag, size and last-modified time; an
//!   object is "created" when its key is new or any of the three changed,
//!   "removed" when a complete listing no longer has it.
//! - The listing is streamed and compared entry by entry against the cursor:
//!   memory holds the cursor and one batch of records, never two listings.
//! - Records are handed to a [`RecordsHandler`] in batches of
//!   [`PollerConfig::batch_size`]; the cursor takes a change only once its
//!   batch is accepted and is written (atomically: temporary file, fsync,
//!   rename) at the end of every poll, also after a failed one. A restart
//!   therefore emits nothing already accepted; a crash between a batch's
//!   acceptance and the cursor write emits that batch again (at least once).
//! - A failed or partial listing emits no removals.
//! - Records look like S3's: `eventVersion` 2.1, `eventSource` `aws:s3`,
//!   keys URL-encoded with [`encode_key`], `eTag` without quotes, a 16-digit
//!   hexadecimal `sequencer` that increases across polls and restarts,
//!   `eventTime` the object's last-modified time for creates and the poll
//!   time for removals.
//!
//! ```no_run
//! use std::sync::Arc;
//! use s3_event_inputs::poller::{Poller, PollerConfig};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(object_store::local::LocalFileSystem::new_with_prefix("/srv/bucket")?);
//! let config = PollerConfig::new("bucket", "/var/lib/s3-event/poller.cursor");
//! let poller = Poller::open(store, config)?;
//! poller
//!     .run(
//!         |records: Vec<s3_event_inputs::core::EventRecord>| async move {
//!             println!("{} records", records.len());
//!             Ok::<(), std::convert::Infallible>(())
//!         },
//!         std::future::pending(),
//!     )
//!     .await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use s3_event_core::{
    encode_key, Bucket, EventRecord, Object, ResponseElements, S3Entity, UserIdentity,
};
use serde_json::json;

use crate::handler::{HandlerError, RecordsHandler};

const CURSOR_FORMAT: &str = "s3-event-poller-cursor";

/// Poller settings. Deserializes from the field names (`interval` as
/// `interval_secs`); `bucket` and `cursor_file` are required, unknown keys
/// refused.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollerConfig {
    /// The bucket name put in records (`s3.bucket.name`). Required.
    pub bucket: String,
    /// Only keys under this prefix (an `object_store` path: `ingest`, not
    /// `ingest/`); `None` lists everything.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Where the cursor lives. Required.
    pub cursor_file: PathBuf,
    /// Time between polls (default 30 s; key `interval_secs`, > 0).
    #[serde(
        rename = "interval_secs",
        default = "default_interval",
        deserialize_with = "positive_secs"
    )]
    pub interval: Duration,
    /// Records per handler call (default 1000).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// `awsRegion` of the records (default empty).
    #[serde(default)]
    pub region: String,
    /// `s3.configurationId` of the records (default `poller`).
    #[serde(default = "default_configuration_id")]
    pub configuration_id: String,
    /// `userIdentity.principalId` and the bucket owner (default
    /// `s3-event-poller`).
    #[serde(default = "default_principal_id")]
    pub principal_id: String,
    /// On the first poll (no cursor file, or one left by a first poll that
    /// failed), emit a create for every object already there (default);
    /// off, they are only recorded.
    #[serde(default = "default_true")]
    pub emit_existing: bool,
}

fn default_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_batch_size() -> usize {
    1000
}
fn default_configuration_id() -> String {
    "poller".into()
}
fn default_principal_id() -> String {
    "s3-event-poller".into()
}
fn default_true() -> bool {
    true
}
fn positive_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match <u64 as serde::Deserialize>::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be > 0")),
        n => Ok(Duration::from_secs(n)),
    }
}

impl PollerConfig {
    /// Defaults for `bucket` with the cursor at `cursor_file`.
    pub fn new(bucket: impl Into<String>, cursor_file: impl Into<PathBuf>) -> Self {
        PollerConfig {
            bucket: bucket.into(),
            prefix: None,
            cursor_file: cursor_file.into(),
            interval: default_interval(),
            batch_size: default_batch_size(),
            region: String::new(),
            configuration_id: default_configuration_id(),
            principal_id: default_principal_id(),
            emit_existing: true,
        }
    }

    /// Checks the values serde cannot: messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.bucket.trim().is_empty() {
            return Err("`bucket` must not be empty".into());
        }
        if self.cursor_file.as_os_str().is_empty() {
            return Err("`cursor_file` must not be empty".into());
        }
        if self.batch_size == 0 {
            return Err("`batch_size` must be > 0".into());
        }
        Ok(())
    }
}

/// Errors of the poller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollerError {
    /// Listing failed; nothing was removed.
    #[error("listing `{prefix}` failed: {source}")]
    List {
        /// The prefix listed.
        prefix: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Reading or writing the cursor file failed.
    #[error("cursor file `{}`: {source}", path.display())]
    Io {
        /// The cursor file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The cursor file is not one this poller wrote, or is for another
    /// prefix.
    #[error("cursor file `{}` line {line}: {reason}", path.display())]
    Cursor {
        /// The cursor file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The handler refused a batch; it is offered again on the next poll
    /// (whatever the error's kind: the poller has nowhere else to put it).
    #[error("handler refused {count} records: {reason}")]
    Handler {
        /// Records in the refused batch.
        count: usize,
        /// The handler's error.
        reason: HandlerError,
    },
}

/// What one poll did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Objects listed.
    pub listed: u64,
    /// `ObjectCreated:Put` records accepted by the handler.
    pub created: u64,
    /// `ObjectRemoved:Delete` records accepted by the handler.
    pub removed: u64,
}

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    etag: Option<String>,
    size: u64,
    last_modified_ms: i64,
    /// The poll that last saw the object.
    seen: u64,
}

/// The poller. [`Poller::poll_once`] polls now; [`Poller::run`] polls on
/// the interval until shut down.
pub struct Poller {
    store: Arc<dyn ObjectStore>,
    config: PollerConfig,
    cursor: HashMap<String, Entry>,
    generation: u64,
    next_sequencer: u64,
    first_run: bool,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("config", &self.config)
            .field("objects", &self.cursor.len())
            .finish_non_exhaustive()
    }
}

fn now_micros() -> u64 {
    u64::try_from(Utc::now().timestamp_micros()).unwrap_or(0)
}

fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Poller {
    /// A poller over `store`, resuming from the cursor file when there is
    /// one.
    pub fn open(store: Arc<dyn ObjectStore>, config: PollerConfig) -> Result<Self, PollerError> {
        let mut p = Poller {
            store,
            config,
            cursor: HashMap::new(),
            generation: 0,
            next_sequencer: 0,
            first_run: true,
        };
        p.load()?;
        p.next_sequencer = p.next_sequencer.max(now_micros());
        Ok(p)
    }

    /// Objects in the cursor.
    pub fn tracked(&self) -> usize {
        self.cursor.len()
    }

    /// Polls on [`PollerConfig::interval`] (the first poll at once) until
    /// `shutdown` completes; failed polls are logged, counted
    /// (`s3_event_poller_errors_total`) and retried on the next tick.
    pub async fn run(mut self, handler: impl RecordsHandler, shutdown: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => {}
            }
            match self.poll_once(&handler).await {
                Ok(s) => tracing::debug!(
                    listed = s.listed,
                    created = s.created,
                    removed = s.removed,
                    "poll done"
                ),
                Err(e) => {
                    metrics::counter!("s3_event_poller_errors_total").increment(1);
                    tracing::warn!(error = %e, "poll failed");
                }
            }
        }
    }

    /// Lists the prefix once and hands the differences to `handler`.
    pub async fn poll_once(
        &mut self,
        handler: &dyn RecordsHandler,
    ) -> Result<PollStats, PollerError> {
        let mut stats = PollStats::default();
        let result = self.poll_inner(handler, &mut stats).await;
        if result.is_ok() {
            self.first_run = false;
        }
        // Whatever was accepted is kept, also after an error.
        let saved = self.save();
        metrics::counter!("s3_event_poller_created_total").increment(stats.created);
        metrics::counter!("s3_event_poller_removed_total").increment(stats.removed);
        metrics::gauge!("s3_event_poller_objects").set(self.cursor.len() as f64);
        result?;
        saved?;
        Ok(stats)
    }

    async fn poll_inner(
        &mut self,
        handler: &dyn RecordsHandler,
        stats: &mut PollStats,
    ) -> Result<(), PollerError> {
        self.generation += 1;
        let generation = self.generation;
        let batch_size = self.config.batch_size.max(1);
        let silent = self.first_run && !self.config.emit_existing;
        let prefix = self.config.prefix.as_deref().map(Path::from);
        let store = self.store.clone();
        let mut listing = store.list(prefix.as_ref());
        let mut batch: Vec<(String, Entry, EventRecord)> = Vec::new();
        while let Some(item) = listing.next().await {
            let meta = item.map_err(|source| PollerError::List {
                prefix: self.config.prefix.clone().unwrap_or_default(),
                source,
            })?;
            stats.listed += 1;
            let key = meta.location.to_string();
            let entry = Entry {
                etag: meta
                    .e_tag
                    .as_deref()
                    .map(|e| e.trim_matches('"').to_owned()),
                size: meta.size,
                last_modified_ms: meta.last_modified.timestamp_millis(),
                seen: generation,
            };
            if let Some(old) = self.cursor.get_mut(&key) {
                if old.etag == entry.etag
                    && old.size == entry.size
                    && old.last_modified_ms == entry.last_modified_ms
                {
                    old.seen = generation;
                    continue;
                }
            }
            if silent {
                self.cursor.insert(key, entry);
                continue;
            }
            let record = self.created(&key, &meta, &entry);
            batch.push((key, entry, record));
            if batch.len() >= batch_size {
                self.flush_created(handler, &mut batch, stats).await?;
            }
        }
        self.flush_created(handler, &mut batch, stats).await?;
        drop(listing);

        let gone: Vec<String> = self
            .cursor
            .iter()
            .filter(|(_, e)| e.seen != generation)
            .map(|(k, _)| k.clone())
            .collect();
        for chunk in gone.chunks(batch_size) {
            let now = format_time(Utc::now());
            let records: Vec<EventRecord> = chunk.iter().map(|k| self.removed(k, &now)).collect();
            let count = records.len();
            handler
                .handle(records)
                .await
                .map_err(|reason| PollerError::Handler { count, reason })?;
            for k in chunk {
                self.cursor.remove(k);
            }
            stats.removed += count as u64;
        }
        Ok(())
    }

    async fn flush_created(
        &mut self,
        handler: &dyn RecordsHandler,
        batch: &mut Vec<(String, Entry, EventRecord)>,
        stats: &mut PollStats,
    ) -> Result<(), PollerError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (entries, records): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|(k, e, r)| ((k, e), r)).unzip();
        let count = records.len();
        handler
            .handle(records)
            .await
            .map_err(|reason| PollerError::Handler { count, reason })?;
        self.cursor.extend(entries);
        stats.created += count as u64;
        Ok(())
    }

    fn sequencer(&mut self) -> String {
        let s = self.next_sequencer;
        self.next_sequencer += 1;
        format!("{s:016X}")
    }

    fn record(
        &self,
        event_name: &str,
        event_time: String,
        sequencer: String,
        object: Object,
    ) -> EventRecord {
        let c = &self.config;
        let principal = || UserIdentity {
            principal_id: Some(c.principal_id.clone()),
            ..Default::default()
        };
        EventRecord {
            event_version: Some("2.1".into()),
            event_source: Some("aws:s3".into()),
            aws_region: Some(c.region.clone()),
            event_time: Some(event_time),
            event_name: Some(event_name.into()),
            user_identity: Some(principal()),
            response_elements: Some(ResponseElements {
                x_amz_request_id: Some(sequencer.clone()),
                ..Default::default()
            }),
            s3: Some(S3Entity {
                s3_schema_version: Some("1.0".into()),
                configuration_id: Some(c.configuration_id.clone()),
                bucket: Some(Bucket {
                    name: Some(c.bucket.clone()),
                    owner_identity: Some(principal()),
                    arn: Some(format!("arn:aws:s3:::{}", c.bucket)),
                    ..Default::default()
                }),
                object: Some(Object {
                    sequencer: Some(sequencer),
                    ..object
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn created(&mut self, key: &str, meta: &ObjectMeta, entry: &Entry) -> EventRecord {
        let sequencer = self.sequencer();
        let object = Object {
            key: Some(encode_key(key)),
            size: Some(meta.size),
            e_tag: entry.etag.clone(),
            version_id: meta.version.clone(),
            ..Default::default()
        };
        self.record(
            "ObjectCreated:Put",
            format_time(meta.last_modified),
            sequencer,
            object,
        )
    }

    fn removed(&mut self, key: &str, now: &str) -> EventRecord {
        let sequencer = self.sequencer();
        let object = Object {
            key: Some(encode_key(key)),
            ..Default::default()
        };
        self.record("ObjectRemoved:Delete", now.to_owned(), sequencer, object)
    }

    fn io_err(&self, source: std::io::Error) -> PollerError {
        PollerError::Io {
            path: self.config.cursor_file.clone(),
            source,
        }
    }

    fn load(&mut self) -> Result<(), PollerError> {
        let path = self.config.cursor_file.clone();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_err(e)),
        };
        let bad = |line: usize, reason: String| PollerError::Cursor {
            path: path.clone(),
            line,
            reason,
        };
        let mut lines = BufReader::new(file).lines();
        let header = match lines.next() {
            Some(l) => l.map_err(|e| self.io_err(e))?,
            None => return Err(bad(1, "empty file".into())),
        };
        let header: serde_json::Value =
            serde_json::from_str(&header).map_err(|e| bad(1, format!("bad header: {e}")))?;
        if header["format"] != CURSOR_FORMAT || header["version"] != 1 {
            return Err(bad(1, format!("not a version 1 {CURSOR_FORMAT} file")));
        }
        let prefix = header["prefix"].as_str().map(str::to_owned);
        if prefix != self.config.prefix {
            return Err(bad(
                1,
                format!(
                    "written for prefix {:?}, not {:?}",
                    prefix, self.config.prefix
                ),
            ));
        }
        self.next_sequencer = header["next_sequencer"].as_u64().unwrap_or(0);
        for (i, line) in lines.enumerate() {
            let line = line.map_err(|e| self.io_err(e))?;
            let (key, etag, size, last_modified_ms): (String, Option<String>, u64, i64) =
                serde_json::from_str(&line).map_err(|e| bad(i + 2, e.to_string()))?;
            self.cursor.insert(
                key,
                Entry {
                    etag,
                    size,
                    last_modified_ms,
                    seen: 0,
                },
            );
        }
        // A first poll that failed (with `emit_existing` off) is redone
        // as a first poll.
        self.first_run = !header["initialized"].as_bool().unwrap_or(true);
        Ok(())
    }

    /// Writes the cursor: a temporary file beside it, fsync, rename, fsync
    /// of the directory.
    fn save(&self) -> Result<(), PollerError> {
        let path = &self.config.cursor_file;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| self.io_err(e))?;
        let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        let write = || -> std::io::Result<()> {
            let mut w = BufWriter::new(File::create(&tmp)?);
            let header = json!({
                "format": CURSOR_FORMAT,
                "version": 1,
                "prefix": self.config.prefix,
                "next_sequencer": self.next_sequencer,
                "initialized": !self.first_run,
            });
            serde_json::to_writer(&mut w, &header)?;
            w.write_all(b"\n")?;
            for (k, e) in &self.cursor {
                serde_json::to_writer(&mut w, &(k, &e.etag, e.size, e.last_modified_ms))?;
                w.write_all(b"\n")?;
            }
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            sync_dir(&dir);
            Ok(())
        };
        write().map_err(|e| self.io_err(e))
    }
}

fn sync_dir(dir: &FsPath) {
    // Best effort: not every platform can fsync a directory.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;

    /// Collects every record handed over; fails when told to.
    #[derive(Clone, Default)]
    struct Collect {
        got: Arc<Mutex<Vec<EventRecord>>>,
        fail_after: Arc<Mutex<Option<usize>>>,
    }

    impl Collect {
        fn handler(&self) -> impl RecordsHandler {
            let c = self.clone();
            move |records: Vec<EventRecord>| {
                let c = c.clone();
                async move {
                    let mut fail = c.fail_after.lock().unwrap();
                    if let Some(n) = fail.as_mut() {
                        if *n == 0 {
                            return Err("down".to_owned());
                        }
                        *n -= 1;
                    }
                    c.got.lock().unwrap().extend(records);
                    Ok(())
                }
            }
        }

        fn take(&self) -> Vec<(String, String)> {
            let mut v: Vec<_> = self
                .got
                .lock()
                .unwrap()
                .drain(..)
                .map(|r| (r.event_name.clone().unwrap(), r.key().unwrap().to_owned()))
                .collect();
            v.sort();
            v
        }
    }

    async fn put(store: &dyn ObjectStore, key: &str, body: &str) {
        store
            .put(
                &Path::parse(key).unwrap(),
                PutPayload::from(body.to_owned()),
            )
            .await
            .unwrap();
    }

    fn ev(name: &str, key: &str) -> (String, String) {
        (name.to_owned(), key.to_owned())
    }

    fn sequencer(r: &EventRecord) -> String {
        let object = r.s3.as_ref().unwrap().object.as_ref().unwrap();
        object.sequencer.clone().unwrap()
    }

    /// Creates, changes, removals and a restart against `store`, under
    /// `prefix`.
    async fn lifecycle(store: Arc<dyn ObjectStore>, prefix: &str, cursor_dir: &FsPath) {
        let key = |k: &str| format!("{prefix}/{k}");
        let mut config = PollerConfig::new("s3e-test", cursor_dir.join("cursor"));
        config.prefix = Some(prefix.to_owned());
        config.batch_size = 2;
        put(&*store, &key("a.txt"), "a").await;
        put(&*store, &key("dir/b c.txt"), "bb").await;
        put(&*store, &key("ü+.txt"), "ccc").await;
        put(&*store, &format!("{prefix}-outside/x.txt"), "x").await;
        let c = Collect::default();
        let mut p = Poller::open(store.clone(), config.clone()).unwrap();
        let s = p.poll_once(&c.handler()).await.unwrap();
        assert_eq!((s.listed, s.created, s.removed), (3, 3, 0));
        let got = c.got.lock().unwrap().clone();
        let mut seqs: Vec<_> = got.iter().map(sequencer).collect();
        let sorted = {
            let mut s = seqs.clone();
            s.sort();
            s
        };
        assert_eq!(seqs, sorted, "sequencers increase");
        seqs.dedup();
        assert_eq!(seqs.len(), 3);
        let b = got
            .iter()
            .find(|r| r.key() == Some(&*encode_key(&key("dir/b c.txt"))))
            .unwrap();
        assert_eq!(b.size(), Some(2));
        assert_eq!(b.bucket_name(), Some("s3e-test"));
        assert_eq!(b.decoded_key().unwrap(), key("dir/b c.txt"));
        assert!(b.key().unwrap().ends_with("dir/b+c.txt"));
        let enc = encode_key(&key("ü+.txt"));
        assert!(enc.ends_with("%C3%BC%2B.txt"), "{enc}");
        assert_eq!(c.take().len(), 3);

        // Nothing changed: nothing emitted, also after a restart.
        assert_eq!(p.poll_once(&c.handler()).await.unwrap().created, 0);
        let last_seq = seqs.last().unwrap().clone();
        drop(p);
        let mut p = Poller::open(store.clone(), config.clone()).unwrap();
        assert_eq!(p.tracked(), 3);
        let s = p.poll_once(&c.handler()).await.unwrap();
        assert_eq!((s.created, s.removed), (0, 0));
        assert!(c.take().is_empty());

        // A change, a removal and a new object.
        put(&*store, &key("a.txt"), "a changed").await;
        store
            .delete(&Path::parse(key("ü+.txt")).unwrap())
            .await
            .unwrap();
        put(&*store, &key("new.txt"), "n").await;
        let s = p.poll_once(&c.handler()).await.unwrap();
        assert_eq!((s.created, s.removed), (2, 1));
        let got = c.got.lock().unwrap().clone();
        for r in &got {
            let seq = sequencer(r);
            assert!(seq > last_seq, "{seq} > {last_seq}");
        }
        let del = got
            .iter()
            .find(|r| r.event_name.as_deref() == Some("ObjectRemoved:Delete"))
            .unwrap();
        assert_eq!(del.size(), None);
        assert_eq!(
            c.take(),
            vec![
                ev("ObjectCreated:Put", &encode_key(&key("a.txt"))),
                ev("ObjectCreated:Put", &encode_key(&key("new.txt"))),
                ev("ObjectRemoved:Delete", &encode_key(&key("ü+.txt"))),
            ]
        );
        drop(p);
        let mut p = Poller::open(store.clone(), config).unwrap();
        assert_eq!(
            p.poll_once(&c.handler()).await.unwrap(),
            PollStats {
                listed: 3,
                created: 0,
                removed: 0
            }
        );
    }

    #[tokio::test]
    async fn in_memory_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        lifecycle(Arc::new(InMemory::new()), "ingest", dir.path()).await;
    }

    #[tokio::test]
    async fn local_filesystem_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bucket");
        std::fs::create_dir_all(&root).unwrap();
        let store = object_store::local::LocalFileSystem::new_with_prefix(&root).unwrap();
        lifecycle(Arc::new(store), "ingest", dir.path()).await;
    }

    #[tokio::test]
    async fn handler_failure_keeps_accepted_batches_only() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for i in 0..5 {
            put(&*store, &format!("k{i}"), "x").await;
        }
        let mut config = PollerConfig::new("b", dir.path().join("cursor"));
        config.batch_size = 2;
        let c = Collect::default();
        *c.fail_after.lock().unwrap() = Some(1);
        let mut p = Poller::open(store.clone(), config.clone()).unwrap();
        let e = p.poll_once(&c.handler()).await.unwrap_err();
        assert!(matches!(e, PollerError::Handler { count: 2, .. }), "{e}");
        assert_eq!(c.take().len(), 2);
        // Restarted: the accepted batch is not emitted again, the rest is.
        *c.fail_after.lock().unwrap() = None;
        let mut p = Poller::open(store.clone(), config).unwrap();
        let s = p.poll_once(&c.handler()).await.unwrap();
        assert_eq!((s.created, s.removed), (3, 0));
        assert_eq!(c.take().len(), 3);
        // A failure during removals emits no duplicate removals afterwards.
        for i in 0..5 {
            store.delete(&Path::from(format!("k{i}"))).await.unwrap();
        }
        *c.fail_after.lock().unwrap() = Some(1);
        assert!(p.poll_once(&c.handler()).await.is_err());
        *c.fail_after.lock().unwrap() = None;
        let s = p.poll_once(&c.handler()).await.unwrap();
        assert_eq!(s.removed, 3);
        assert_eq!(c.take().len(), 5);
        assert_eq!(p.tracked(), 0);
    }

    /// The 100000-object prefix of the issue: one create each, in batches
    /// of `batch_size`, nothing again after a restart, one delete each.
    #[tokio::test]
    async fn hundred_thousand_objects() {
        const N: usize = 100_000;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for i in 0..N {
            put(&*store, &format!("big/{i:06}"), "").await;
        }
        let config = PollerConfig {
            prefix: Some("big".into()),
            ..PollerConfig::new("b", dir.path().join("cursor"))
        };
        let counts = Arc::new(Mutex::new((0usize, 0usize, None::<String>)));
        let handler = {
            let counts = counts.clone();
            move |records: Vec<EventRecord>| {
                let counts = counts.clone();
                async move {
                    let mut c = counts.lock().unwrap();
                    c.0 += records.len();
                    c.1 = c.1.max(records.len());
                    // Sequencers increase across batches.
                    for r in &records {
                        let s = r.s3.as_ref().unwrap().object.as_ref().unwrap();
                        let s = s.sequencer.clone().unwrap();
                        assert!(c.2.as_ref().is_none_or(|p| *p < s));
                        c.2 = Some(s);
                    }
                    Ok::<(), String>(())
                }
            }
        };
        let mut p = Poller::open(store.clone(), config.clone()).unwrap();
        let s = p.poll_once(&handler).await.unwrap();
        assert_eq!((s.listed, s.created), (N as u64, N as u64));
        assert_eq!(counts.lock().unwrap().1, 1000, "batches of batch_size");
        drop(p);
        let text = std::fs::read_to_string(&config.cursor_file).unwrap();
        assert_eq!(text.lines().count(), N + 1);
        let mut p = Poller::open(store.clone(), config).unwrap();
        let s = p.poll_once(&handler).await.unwrap();
        assert_eq!((s.created, s.removed), (0, 0));
        for i in 0..N {
            store
                .delete(&Path::from(format!("big/{i:06}")))
                .await
                .unwrap();
        }
        let s = p.poll_once(&handler).await.unwrap();
        assert_eq!((s.listed, s.removed), (0, N as u64));
        assert_eq!(counts.lock().unwrap().0, 2 * N);
    }

    #[tokio::test]
    async fn records_are_shaped_like_s3() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        put(&*store, "in/a b.txt", "hello").await;
        let meta = store
            .head(&Path::parse("in/a b.txt").unwrap())
            .await
            .unwrap();
        let mut config = PollerConfig::new("photos", dir.path().join("cursor"));
        config.region = "us-east-1".into();
        let c = Collect::default();
        let mut p = Poller::open(store.clone(), config).unwrap();
        p.poll_once(&c.handler()).await.unwrap();
        let mut v = serde_json::to_value(&c.got.lock().unwrap()[0]).unwrap();
        let seq = v["s3"]["object"]["sequencer"].as_str().unwrap().to_owned();
        assert_eq!(seq.len(), 16);
        assert!(seq.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(v["responseElements"]["x-amz-request-id"], seq.as_str());
        let t = v["eventTime"].as_str().unwrap();
        assert_eq!(t, format_time(meta.last_modified));
        assert!(t.ends_with('Z') && t.len() == 24, "{t}");
        v["eventTime"] = "T".into();
        v["s3"]["object"]["sequencer"] = "S".into();
        v["responseElements"]["x-amz-request-id"] = "S".into();
        assert_eq!(
            v,
            json!({
                "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                "eventTime": "T", "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "s3-event-poller"},
                "responseElements": {"x-amz-request-id": "S"},
                "s3": {"s3SchemaVersion": "1.0", "configurationId": "poller",
                    "bucket": {"name": "photos", "ownerIdentity": {"principalId": "s3-event-poller"},
                        "arn": "arn:aws:s3:::photos"},
                    "object": {"key": "in/a+b.txt", "size": 5,
                        "eTag": meta.e_tag.unwrap().trim_matches('"'), "sequencer": "S"}}
            })
        );
    }

    #[tokio::test]
    async fn emit_existing_off_records_silently() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        put(&*store, "old", "x").await;
        let mut config = PollerConfig::new("b", dir.path().join("cursor"));
        config.emit_existing = false;
        let c = Collect::default();
        let mut p = Poller::open(store.clone(), config.clone()).unwrap();
        assert_eq!(p.poll_once(&c.handler()).await.unwrap().created, 0);
        // A cursor from an unfinished first poll makes the next one silent
        // too; a finished one does not.
        let text = std::fs::read_to_string(&config.cursor_file).unwrap();
        assert!(text
            .lines()
            .next()
            .unwrap()
            .contains("\"initialized\":true"));
        std::fs::write(
            &config.cursor_file,
            text.replacen("\"initialized\":true", "\"initialized\":false", 1),
        )
        .unwrap();
        put(&*store, "old2", "x").await;
        let mut p = Poller::open(store.clone(), config.clone()).unwrap();
        assert_eq!(p.poll_once(&c.handler()).await.unwrap().created, 0);
        let mut p = Poller::open(store.clone(), config).unwrap();
        put(&*store, "new", "x").await;
        assert_eq!(p.poll_once(&c.handler()).await.unwrap().created, 1);
        assert_eq!(c.take(), vec![ev("ObjectCreated:Put", "new")]);
    }

    #[tokio::test]
    async fn cursor_file_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        put(&*store, "p/x", "x").await;
        let mut config = PollerConfig::new("b", dir.path().join("sub/cursor"));
        config.prefix = Some("p".into());
        let mut p = Poller::open(store.clone(), config.clone()).unwrap();
        p.poll_once(&Collect::default().handler()).await.unwrap();
        assert!(!dir.path().join("sub/cursor.tmp").exists());
        let mut other = config.clone();
        other.prefix = Some("q".into());
        let e = Poller::open(store.clone(), other).unwrap_err();
        assert!(e.to_string().contains("written for prefix"), "{e}");
        std::fs::write(&config.cursor_file, "{\"format\":\"other\"}\n").unwrap();
        let e = Poller::open(store, config).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[tokio::test]
    async fn run_polls_until_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        put(&*store, "a", "x").await;
        let mut config = PollerConfig::new("b", dir.path().join("cursor"));
        config.interval = Duration::from_millis(20);
        let c = Collect::default();
        let p = Poller::open(store.clone(), config).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(p.run(c.handler(), async move {
            let _ = rx.await;
        }));
        tokio::time::sleep(Duration::from_millis(60)).await;
        put(&*store, "b", "x").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(()).unwrap();
        task.await.unwrap();
        assert_eq!(
            c.take(),
            vec![ev("ObjectCreated:Put", "a"), ev("ObjectCreated:Put", "b")]
        );
    }

    #[cfg(feature = "integration")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seaweedfs_lifecycle() {
        use object_store::aws::AmazonS3Builder;
        let store = AmazonS3Builder::new()
            .with_endpoint("http://127.0.0.1:18333")
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region("us-east-1")
            .with_bucket_name("s3e-test")
            .with_access_key_id("testkey")
            .with_secret_access_key("testsecret")
            .build()
            .unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(store);
        let prefix = format!(
            "poller-test-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let dir = tempfile::tempdir().unwrap();
        lifecycle(store.clone(), &prefix, dir.path()).await;
        let mut left = store.list(Some(&Path::from(prefix.as_str())));
        while let Some(m) = left.next().await {
            store.delete(&m.unwrap().location).await.unwrap();
        }
        store
            .delete(&Path::from(format!("{prefix}-outside/x.txt")))
            .await
            .unwrap();
    }
}
