//! The Kafka source (feature `kafka-source`): a consumer group reads one or
//! more topics and writes their messages to the store, every message
//! exactly once, across instances, crashes and rebalances, with count,
//! size and wall-clock flushes alike.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use s3_event_sink::kafka_source::KafkaSource;
//! use s3_event_sink::StoreConfig;
//!
//! # async fn run() -> s3_event_sink::Result<()> {
//! let store = StoreConfig::Local { dir: "/srv/bucket".into() }.build()?;
//! let source = KafkaSource::builder()
//!     .with_brokers("127.0.0.1:19092")
//!     .with_group_id("s3-sink")
//!     .with_topics(["events"])
//!     .with_store(store)
//!     .with_prefix("events/")
//!     .with_flush_interval(Duration::from_secs(60))
//!     .build()?;
//! let stats = source.stats_handle();
//! // Runs for an hour (pass a signal handler's future to stop on SIGTERM),
//! // then uploads what is open, commits and leaves the group.
//! let totals = source.run(tokio::time::sleep(Duration::from_secs(3600))).await?;
//! println!("{} objects, {} messages", totals.objects, stats.snapshot().messages);
//! # Ok(()) }
//! ```
//!
//! There is no spool: Kafka is the durable log. The source holds open
//! batches in memory and commits a partition's offset only once everything
//! below it is in the bucket; whatever a crash loses is read again from
//! Kafka by the partition's next owner.
//!
//! # The client
//!
//! [`rdkafka`](https://docs.rs/rdkafka) (librdkafka, built from source by
//! its `-sys` crate): it speaks the consumer-group protocol (join, sync,
//! heartbeats, assignment and revocation callbacks, offset commits) and is
//! the most used Kafka client there is. `rskafka`, which the Kafka *target*
//! uses, has no consumer groups.
//!
//! # Keys, manifests, records
//!
//! A batch is the messages of one Kafka partition that fall into one time
//! partition, the hour (or day) of the message's Kafka timestamp: not the
//! processing time, so that a redo puts every message where the first
//! attempt did. Its object's key is
//!
//! ```text
//! {prefix}{YYYY/MM/DD/HH/}{topic}+{partition}+{first offset:020}{ext}
//! ```
//!
//! and its [manifest](crate::manifest) names the instance `{topic}+{partition}`
//! and lists the offsets it holds, so [`verify`](crate::verify()) checks
//! every topic-partition for holes and overlaps. The record is the
//! message's value (JSON, as sent; a pretty-printed value's line breaks
//! become spaces), or with
//! [`with_wrap`](KafkaSourceBuilder::with_wrap) an object of `topic`,
//! `partition`, `offset`, `timestamp`, `key`, `headers` and `value`. A
//! message whose value is not JSON (or is empty, or a tombstone) is not
//! dropped and does not stop its partition: its failure report, one NDJSON
//! line with the reason and the value (as text and base64), is stored at
//! `{prefix}{YYYY/MM/DD/HH/}_failed/{topic}+{partition}+{offset:020}.ndjson`
//! with a manifest holding its offset, so `verify` of the prefix counts it
//! and finds no hole; query engines skip directories starting with `_`.
//!
//! Batches close at [`flush_size`](KafkaSourceBuilder::with_flush_size)
//! records, at [`max_bytes`](KafkaSourceBuilder::with_max_bytes) of encoded
//! output, or [`flush_interval`](KafkaSourceBuilder::with_flush_interval)
//! after their first record arrived, whichever comes first.
//!
//! # Why every message is stored exactly once
//!
//! Kafka Connect's S3 sink names objects the same way and is exactly once
//! only while a redone batch ends where the first attempt's did, which a
//! wall-clock rotation breaks (its issues 144, 341, 388): a redo of the
//! batch from offset 100 that ends at 180 where the first ended at 150
//! writes 151–180 into a second object, then, from 181, a third object
//! overlapping the first attempt's next one. Here batch ends may differ
//! between attempts; what makes it exactly once is this.
//!
//! 1. **Uploads are create-only** (`If-None-Match: *` on S3, a no-replace
//!    link in a local directory) and carry the manifest. No object is
//!    ever overwritten.
//! 2. **Chains.** Take the *T-messages* of a partition: its JSON messages
//!    in time partition T, in offset order. Every batch is a run of
//!    consecutive T-messages, and a batch opens only at a *chain point*:
//!    the first T-message this owner takes, or the one right after a
//!    stored T-object. Uploads of one partition are made one at a time, in
//!    order, so the stored T-objects form a chain from the committed
//!    offset on, each starting where the previous one ended.
//! 3. **The chain check.** Before opening a batch at a chain point the
//!    source asks the store for the object at that point's key (a HEAD).
//!    If there is one (a batch uploaded by an earlier owner whose commit
//!    was lost), its manifest lists the offsets it holds: they are skipped
//!    as they arrive, and the next T-message is the next chain point,
//!    checked again. The first miss ends the check for that time
//!    partition: nothing beyond it can have been stored. So a new owner
//!    makes one HEAD per object uploaded but not committed, plus one per
//!    time partition: a bounded lookup, never a listing.
//! 4. **Collisions.** Two owners of one partition at once (a zombie that
//!    has not yet seen its revocation) both open batches at the same chain
//!    points. The first upload wins; the other finds the key taken, reads
//!    the stored manifest and, unless it holds this very batch (a lost
//!    reply), takes it as the truth: the records it holds are dropped, the
//!    offsets it holds beyond ours are skipped when they come, and the
//!    rest of ours (they follow it in the chain) is encoded again, from
//!    the raw records kept for open batches, as a batch at the next chain
//!    point, which is uploaded the same way.
//! 5. **Commits at clean cuts.** Several time partitions can be open at
//!    once (late messages), so a batch's offsets may straddle another's.
//!    The offset committed is the highest `c` such that every offset below
//!    `c` is stored (in an object or a failure report) *and* no stored
//!    object holds offsets both below and above `c`. A new owner starting
//!    at `c` therefore meets every T-object from its first message on, and
//!    point 2 holds from its first message. Commits go to Kafka (never
//!    auto-commit) after the uploads that allow them, at most one per
//!    commit interval (1 s by default): what was stored since the last
//!    commit is what a new owner finds with the chain check. Two time
//!    partitions whose batches keep overlapping (a steady trickle of late
//!    messages) could leave no clean cut for ever; when none has appeared
//!    for a flush interval, all the partition's open batches are closed
//!    together, which makes one (the late batch is then cut short).
//! 6. **Determinism.** The time partition comes from the message's Kafka
//!    timestamp and the record from the message's bytes (wrapping adds
//!    only the message's own fields), so every attempt sees the same
//!    T-messages, the same records and the same keys; only where batches
//!    end may differ, which points 3 and 4 absorb.
//!
//! A manifest that lists offsets in runs is limited to 1 KiB of text: a
//! batch whose offsets would need more runs (many interleaved late
//! messages) is closed early. An object found without a manifest (the
//! local-directory store writes its metadata just after the object; a
//! writer killed in between) is read and its records counted: they are the
//! next that many T-messages. Once they are all counted, their offsets are
//! known, and the source writes the object's manifest by putting the same
//! bytes again create-only with it (the local store then writes the
//! missing sidecar), so `verify` and later owners find offsets, not a
//! count.
//!
//! What it does not survive: changing the prefix, the encoding, the
//! compression or the time granularity while objects are uploaded but not
//! committed (their keys change), and a store without create-only puts
//! (refused with an error).
//!
//! # Rebalances and shutdown
//!
//! On revocation a partition's open batches are **abandoned**, not
//! uploaded: librdkafka runs the revocation inside its poll, where no
//! upload can be awaited. What is already stored and not yet committed
//! (the commit interval held it back) is committed first, in that
//! callback, before librdkafka gives the partition up. The next owner
//! reads again from the committed offset: the abandoned records (at most
//! one flush interval of them), which it stores, and, if that commit
//! failed or the instance died, the objects uploaded since the last
//! commit (at most one commit interval of them), which the chain check
//! finds and skips; points 3 and 4 keep that exactly once. On assignment
//! the partition resumes at its committed offset. On shutdown every open batch
//! is uploaded and its offsets committed before the consumer leaves the
//! group.
//!
//! # Metrics
//!
//! [`KafkaSourceStats`]: messages, records, objects, bytes, failure
//! reports, objects adopted from earlier owners, collisions, commits and
//! their latency, rebalances, and per partition the consumer lag (from
//! librdkafka's statistics, every `statistics_interval`).

mod consumer;
#[cfg(all(test, feature = "integration"))]
mod kill_tests;
mod partition;
mod record;
#[cfg(all(test, feature = "integration"))]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::ObjectStore;
use s3_event_core::retry::RetryPolicy;
use s3_event_core::{Granularity, Layout, TimePartitioner};

use crate::{Compression, Encoding, Error, Result};

/// The default `flush_size`.
pub const DEFAULT_FLUSH_SIZE: usize = 1000;
/// The default `max_bytes`: 64 MiB of encoded output.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;
/// The default `flush_interval`.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(60);
/// The least time between two offset commits, by default.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// The largest `max_bytes`: S3's limit for one put (5 GiB).
const MAX_SINGLE_PUT: usize = 5 << 30;
/// The directory, inside each time partition, of failure reports.
pub const FAILURE_DIR: &str = "_failed";

/// A hook called with the key of every object uploaded (tests).
type UploadHook = dyn Fn(&str) + Send + Sync;

/// The source's counters, shared with the consumer loop.
#[derive(Default)]
pub(crate) struct Counters {
    pub messages: AtomicU64,
    pub records: AtomicU64,
    pub skipped: AtomicU64,
    pub poison: AtomicU64,
    pub objects: AtomicU64,
    pub bytes: AtomicU64,
    pub adopted: AtomicU64,
    pub collisions: AtomicU64,
    pub forced_cuts: AtomicU64,
    pub manifests_written: AtomicU64,
    pub store_retries: AtomicU64,
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
    pub commit_micros_total: AtomicU64,
    pub commit_micros_max: AtomicU64,
    pub assignments: AtomicU64,
    pub revocations: AtomicU64,
    pub consumer_errors: AtomicU64,
    pub partitions: Mutex<BTreeMap<String, PartitionStats>>,
    pub after_upload: Mutex<Option<Box<UploadHook>>>,
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counters")
            .field("messages", &self.messages)
            .field("objects", &self.objects)
            .finish_non_exhaustive()
    }
}

/// One assigned partition's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionStats {
    /// The next offset the source will take (the last taken + 1).
    pub position: Option<i64>,
    /// The offset last committed.
    pub committed: Option<i64>,
    /// The partition's high watermark, from the client's last statistics.
    pub high_watermark: Option<i64>,
    /// Messages not yet taken: high watermark − position.
    pub lag: Option<i64>,
    /// Records in open batches.
    pub open_records: usize,
}

/// A snapshot of the source's counters ([`KafkaSource::stats_handle`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaSourceStats {
    /// Messages taken (each offset once per owner).
    pub messages: u64,
    /// Records added to batches.
    pub records: u64,
    /// Messages dropped because an object already stored holds them (a
    /// redo after a lost commit, or a collision).
    pub skipped: u64,
    /// Messages that are not JSON, stored as failure reports.
    pub poison: u64,
    /// Objects uploaded by this source.
    pub objects: u64,
    /// Bytes in them.
    pub bytes: u64,
    /// Objects found already stored at a batch's key by the chain check.
    pub adopted: u64,
    /// Uploads that found their key taken by another attempt's batch.
    pub collisions: u64,
    /// Times a partition's open batches were all closed together because
    /// batches of overlapping time partitions left no offset to commit
    /// at for a flush interval.
    pub forced_cuts: u64,
    /// Objects found without a manifest (a writer killed between a local
    /// object and its sidecar) whose manifest this source wrote once their
    /// records were counted off.
    pub manifests_written: u64,
    /// Store operations retried.
    pub store_retries: u64,
    /// Offset commits that succeeded.
    pub commits: u64,
    /// Offset commits refused (a rebalance in progress, mostly).
    pub commit_failures: u64,
    /// Mean commit latency: from a commit's start to the broker's answer.
    pub commit_latency_mean: Duration,
    /// Longest commit latency.
    pub commit_latency_max: Duration,
    /// Partition assignments received (rebalances that gave partitions).
    pub assignments: u64,
    /// Revocations received.
    pub revocations: u64,
    /// Errors the consumer reported (transport errors; it reconnects).
    pub consumer_errors: u64,
    /// Per assigned partition (`{topic}+{partition}`).
    pub partitions: BTreeMap<String, PartitionStats>,
}

/// Reads the running source's counters.
#[derive(Clone, Debug)]
pub struct KafkaStatsHandle(Arc<Counters>);

impl KafkaStatsHandle {
    /// The counters now.
    pub fn snapshot(&self) -> KafkaSourceStats {
        let c = &self.0;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let commits = get(&c.commits);
        KafkaSourceStats {
            messages: get(&c.messages),
            records: get(&c.records),
            skipped: get(&c.skipped),
            poison: get(&c.poison),
            objects: get(&c.objects),
            bytes: get(&c.bytes),
            adopted: get(&c.adopted),
            collisions: get(&c.collisions),
            forced_cuts: get(&c.forced_cuts),
            manifests_written: get(&c.manifests_written),
            store_retries: get(&c.store_retries),
            commits,
            commit_failures: get(&c.commit_failures),
            commit_latency_mean: Duration::from_micros(
                get(&c.commit_micros_total)
                    .checked_div(commits)
                    .unwrap_or_default(),
            ),
            commit_latency_max: Duration::from_micros(get(&c.commit_micros_max)),
            assignments: get(&c.assignments),
            revocations: get(&c.revocations),
            consumer_errors: get(&c.consumer_errors),
            partitions: c.partitions.lock().expect("stats lock").clone(),
        }
    }
}

/// Builds a [`KafkaSource`]; see the [module docs](self).
#[derive(Clone)]
pub struct KafkaSourceBuilder {
    brokers: String,
    group_id: String,
    topics: Vec<String>,
    store: Option<Arc<dyn ObjectStore>>,
    prefix: String,
    granularity: Granularity,
    layout: Layout,
    encoding: Encoding,
    compression: Compression,
    flush_size: usize,
    max_bytes: usize,
    flush_interval: Duration,
    commit_interval: Duration,
    wrap: bool,
    retry: RetryPolicy,
    statistics_interval: Duration,
    options: BTreeMap<String, String>,
    chain_check: bool,
    commit: bool,
    flush_on_shutdown: bool,
}

impl fmt::Debug for KafkaSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Client options may hold SASL passwords and TLS keys: names only.
        f.debug_struct("KafkaSourceBuilder")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("prefix", &self.prefix)
            .field("granularity", &self.granularity)
            .field("encoding", &self.encoding)
            .field("compression", &self.compression)
            .field("flush_size", &self.flush_size)
            .field("max_bytes", &self.max_bytes)
            .field("flush_interval", &self.flush_interval)
            .field("commit_interval", &self.commit_interval)
            .field("wrap", &self.wrap)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for KafkaSourceBuilder {
    fn default() -> Self {
        KafkaSourceBuilder {
            brokers: String::new(),
            group_id: String::new(),
            topics: Vec::new(),
            store: None,
            prefix: String::new(),
            granularity: Granularity::Hourly,
            layout: Layout::Plain,
            encoding: Encoding::Ndjson,
            compression: Compression::gzip(),
            flush_size: DEFAULT_FLUSH_SIZE,
            max_bytes: DEFAULT_MAX_BYTES,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            wrap: false,
            retry: RetryPolicy::default(),
            statistics_interval: Duration::from_secs(5),
            options: BTreeMap::new(),
            chain_check: true,
            commit: true,
            flush_on_shutdown: true,
        }
    }
}

impl KafkaSourceBuilder {
    /// The bootstrap brokers, `host:port[,host:port…]` (required).
    pub fn with_brokers(mut self, brokers: impl Into<String>) -> Self {
        self.brokers = brokers.into();
        self
    }

    /// The consumer group (required): instances with the same group share
    /// the topics' partitions.
    pub fn with_group_id(mut self, group_id: impl Into<String>) -> Self {
        self.group_id = group_id.into();
        self
    }

    /// The topics to read (at least one).
    pub fn with_topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// The store objects go to (required).
    pub fn with_store(mut self, store: Arc<dyn ObjectStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The key prefix, e.g. `events/` (default: none).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Hourly (default) or daily time partitions, by the Kafka timestamp.
    pub fn with_granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }

    /// Plain `YYYY/MM/DD/HH/` (default) or Hive partitions.
    pub fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// How records are laid out (default NDJSON).
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Compression (default gzip).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Records per object at most (default 1000).
    pub fn with_flush_size(mut self, flush_size: usize) -> Self {
        self.flush_size = flush_size;
        self
    }

    /// Encoded bytes per object at most (default 64 MiB).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// How long after its first record a batch is closed at the latest
    /// (default 60 s).
    pub fn with_flush_interval(mut self, flush_interval: Duration) -> Self {
        self.flush_interval = flush_interval;
        self
    }

    /// The least time between the starts of two offset commits (default
    /// 1 s; zero commits after every upload). Offsets are still committed
    /// only once their objects are stored; a longer interval makes fewer
    /// commits for the broker to write, and leaves more objects uploaded
    /// but not committed when an instance dies, which the next owner finds
    /// with one HEAD each (the chain check) instead of storing them again.
    pub fn with_commit_interval(mut self, commit_interval: Duration) -> Self {
        self.commit_interval = commit_interval;
        self
    }

    /// Store each message wrapped with its topic, partition, offset,
    /// timestamp, key and headers (default: the value alone).
    pub fn with_wrap(mut self, wrap: bool) -> Self {
        self.wrap = wrap;
        self
    }

    /// How store failures are retried (never given up).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How often librdkafka reports statistics, the source of the lag
    /// figures (default 5 s; zero turns them off).
    pub fn with_statistics_interval(mut self, interval: Duration) -> Self {
        self.statistics_interval = interval;
        self
    }

    /// A librdkafka consumer property (`security.protocol`,
    /// `sasl.username`, `session.timeout.ms`, …). The source sets
    /// `group.id`, `bootstrap.servers`, `enable.auto.commit` (false) and
    /// `enable.auto.offset.store` (false) itself; setting them here is an
    /// error. Values are never printed.
    pub fn with_kafka_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.insert(key.into(), value.into());
        self
    }

    /// Tests: turn the chain check off (the collision path alone must
    /// then keep exactly once).
    #[doc(hidden)]
    pub fn with_chain_check(mut self, on: bool) -> Self {
        self.chain_check = on;
        self
    }

    /// Tests: never commit offsets (a crash after every upload).
    #[doc(hidden)]
    pub fn with_commits(mut self, on: bool) -> Self {
        self.commit = on;
        self
    }

    /// Tests: on shutdown, leave without uploading what is open (a crash
    /// that still leaves the group at once).
    #[doc(hidden)]
    pub fn with_flush_on_shutdown(mut self, on: bool) -> Self {
        self.flush_on_shutdown = on;
        self
    }

    /// Checks the configuration; the consumer is created by
    /// [`KafkaSource::run`].
    pub fn build(self) -> Result<KafkaSource> {
        self.check()?;
        let prefix = if self.prefix.is_empty() || self.prefix.ends_with('/') {
            self.prefix.clone()
        } else {
            format!("{}/", self.prefix)
        };
        let Some(store) = self.store.clone() else {
            return Err(Error::InvalidConfig {
                what: "store",
                value: String::new(),
                expected: "a store (`with_store`)",
            });
        };
        let counters = Arc::new(Counters::default());
        let shared = partition::Shared {
            store,
            prefix,
            failure_dir: FAILURE_DIR.to_owned(),
            encoding: self.encoding,
            compression: self.compression,
            flush_size: self.flush_size,
            max_bytes: self.max_bytes,
            flush_interval: self.flush_interval,
            retry: self.retry.clone(),
            counters: Arc::clone(&counters),
            chain_check: self.chain_check,
            manifest_wait: partition::MANIFEST_WAIT,
        };
        let partitioner = TimePartitioner::new(self.granularity).with_layout(self.layout);
        Ok(KafkaSource {
            config: self,
            shared,
            partitioner,
            counters,
        })
    }

    /// The values `build` refuses, each named with what was expected.
    fn check(&self) -> Result<()> {
        let bad = |what: &'static str, value: String, expected: &'static str| {
            Err(Error::InvalidConfig {
                what,
                value,
                expected,
            })
        };
        if self.brokers.trim().is_empty() {
            return bad("brokers", self.brokers.clone(), "`host:port[,host:port…]`");
        }
        if self.group_id.trim().is_empty() {
            return bad("group_id", self.group_id.clone(), "a consumer group name");
        }
        if self.topics.is_empty() {
            return bad("topics", String::new(), "at least one topic");
        }
        for t in &self.topics {
            let ok = !t.is_empty()
                && t.len() <= 249
                && t != "."
                && t != ".."
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return bad(
                    "topic",
                    t.clone(),
                    "a Kafka topic name: 1 to 249 of `a-zA-Z0-9._-`, not `.` or `..`",
                );
            }
        }
        if self.flush_size == 0 {
            return bad("flush_size", "0".into(), "a number > 0");
        }
        if self.max_bytes == 0 {
            return bad("max_bytes", "0".into(), "a number > 0");
        }
        if self.flush_interval.is_zero() {
            return bad("flush_interval", "0s".into(), "a duration > 0");
        }
        // Every object goes up in one create-only put (a multipart upload
        // has none, and a zombie owner's could replace a stored object):
        // S3 takes up to 5 GiB in one put.
        if self.max_bytes > MAX_SINGLE_PUT {
            return bad(
                "max_bytes",
                self.max_bytes.to_string(),
                "at most 5 GiB (objects go up in one create-only put)",
            );
        }
        if self.encoding.is_parquet() {
            return bad(
                "encoding",
                self.encoding.to_string(),
                "`ndjson` or `json` (Parquet's inferred schema depends on the batch, so a redo could refuse other records)",
            );
        }
        for reserved in [
            "group.id",
            "bootstrap.servers",
            "enable.auto.commit",
            "enable.auto.offset.store",
        ] {
            if self.options.contains_key(reserved) {
                return bad(
                    "kafka option",
                    reserved.into(),
                    "a property the source does not set itself",
                );
            }
        }
        Ok(())
    }
}

/// The Kafka source; see the [module docs](self).
pub struct KafkaSource {
    config: KafkaSourceBuilder,
    shared: partition::Shared,
    partitioner: TimePartitioner,
    counters: Arc<Counters>,
}

impl fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSource")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// A builder.
    pub fn builder() -> KafkaSourceBuilder {
        KafkaSourceBuilder::default()
    }

    /// Reads the counters, while [`run`](Self::run) runs and after.
    pub fn stats_handle(&self) -> KafkaStatsHandle {
        KafkaStatsHandle(Arc::clone(&self.counters))
    }

    /// Tests: `hook` is called with the key of every object uploaded.
    #[doc(hidden)]
    pub fn on_upload(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        *self.counters.after_upload.lock().expect("hook lock") = Some(Box::new(hook));
    }

    /// Joins the group and stores what it is given until `shutdown`
    /// completes; then uploads what is open, commits, leaves the group and
    /// returns the counters. Fails when the client cannot be created or
    /// subscribe, or when an object at one of its keys is not its own
    /// (never overwritten); store failures are retried.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<KafkaSourceStats> {
        consumer::run(self, shutdown).await
    }
}
