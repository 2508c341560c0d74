//! The sink as a notification target: [`SinkTarget`] hands the records a
//! notifier routes to it to a [`Sink`], which spools them (so `send_batch`
//! returns once they are on disk) and writes them as objects.
//!
//! ```no_run
//! use s3_event_sink::target::{SinkTarget, SinkTargetConfig};
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config: SinkTargetConfig = serde_json::from_str(r#"{"dir": "./relay-data"}"#)?;
//! let target = SinkTarget::from_config(&config, "us-east-1")?;
//! assert_eq!(target.id().to_string(), "arn:minio:sqs:us-east-1:local:directory");
//! # Ok(()) }
//! # use s3_event_core::Target as _;
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use s3_event_core::{EventRecord, Target, TargetError, TargetId};
use serde::Deserialize;

use crate::{Error, Result, Sink, SpoolOptions, StoreConfig};

/// The target type in the ARN of a [`SinkTarget`]
/// (`arn:minio:sqs:<region>:<id>:directory`).
pub const TARGET_TYPE: &str = "directory";

/// A [`Sink`] as a [`Target`]; see the [module docs](self).
pub struct SinkTarget {
    id: TargetId,
    sink: Arc<Sink>,
    max_batch: usize,
}

impl std::fmt::Debug for SinkTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkTarget")
            .field("id", &self.id)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl SinkTarget {
    /// `sink` as the target `id`, taking batches of up to 500 records.
    pub fn new(id: TargetId, sink: Sink) -> Self {
        SinkTarget {
            id,
            sink: Arc::new(sink),
            max_batch: 500,
        }
    }

    /// Builds the sink of `config` (recovering its spool) as the target
    /// `arn:minio:sqs:<region>:<id>:directory`.
    pub fn from_config(config: &SinkTargetConfig, region: &str) -> Result<Self> {
        config.validate().map_err(|rule| Error::InvalidConfig {
            what: "sink target",
            value: rule,
            expected: "valid settings",
        })?;
        let id = TargetId::new(region, config.id.as_str(), TARGET_TYPE).map_err(|e| {
            Error::InvalidConfig {
                what: "id",
                value: format!("{}: {e}", config.id),
                expected: "a target id",
            }
        })?;
        let store = config.store_config().build()?;
        let sink = Sink::builder()
            .with_store(store)
            .with_prefix(config.prefix.clone())
            .with_flush_size(config.flush_size)
            .with_flush_interval(Duration::from_secs(config.flush_interval_secs))
            .with_spool(SpoolOptions::new(config.spool_dir()))
            .build()?;
        Ok(SinkTarget::new(id, sink))
    }

    /// The sink.
    pub fn sink(&self) -> &Arc<Sink> {
        &self.sink
    }
}

#[async_trait]
impl Target for SinkTarget {
    fn id(&self) -> &TargetId {
        &self.id
    }

    async fn send_batch(&self, events: &[EventRecord]) -> std::result::Result<(), TargetError> {
        self.sink
            .push_batch(events)
            .await
            .map_err(|e| TargetError::transient(&self.id, e))
    }

    async fn is_active(&self) -> std::result::Result<bool, TargetError> {
        Ok(true)
    }

    async fn close(&self) -> std::result::Result<(), TargetError> {
        self.sink
            .shutdown()
            .await
            .map_err(|e| TargetError::transient(&self.id, e))
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }
}

/// The configuration of a [`SinkTarget`]: records as gzip NDJSON objects,
/// hourly partitions, by default under `<dir>/events/` with the spool in
/// `<dir>/spool/`. Unknown keys are refused.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkTargetConfig {
    /// The target id in the ARN (default `local`).
    #[serde(default = "default_id")]
    pub id: String,
    /// The working directory (default `./relay-data`): the store when
    /// `store` is not given, and the spool's parent.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// Where objects go (default: the local directory `dir`).
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// Put before every key (default `events/`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The spool (default `<dir>/spool`).
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// The notifier's durable queue for this target (none: in memory).
    #[serde(default)]
    pub queue_dir: Option<PathBuf>,
    /// Records per object (default 1000).
    #[serde(default = "default_flush_size")]
    pub flush_size: usize,
    /// Seconds from an object's first record to its upload (default 10).
    #[serde(default = "default_flush_interval")]
    pub flush_interval_secs: u64,
}

fn default_id() -> String {
    "local".into()
}
fn default_dir() -> PathBuf {
    "./relay-data".into()
}
fn default_prefix() -> String {
    "events/".into()
}
fn default_flush_size() -> usize {
    crate::DEFAULT_FLUSH_SIZE
}
fn default_flush_interval() -> u64 {
    10
}

impl Default for SinkTargetConfig {
    fn default() -> Self {
        SinkTargetConfig {
            id: default_id(),
            dir: default_dir(),
            store: None,
            prefix: default_prefix(),
            spool_dir: None,
            queue_dir: None,
            flush_size: default_flush_size(),
            flush_interval_secs: default_flush_interval(),
        }
    }
}

impl SinkTargetConfig {
    /// Checks the values; messages name the key (`` `flush_size` must be > 0 ``).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.flush_size == 0 {
            return Err("`flush_size` must be > 0".into());
        }
        if self.flush_interval_secs == 0 {
            return Err("`flush_interval_secs` must be > 0".into());
        }
        if self.dir.as_os_str().is_empty() {
            return Err("`dir` must not be empty".into());
        }
        Ok(())
    }

    /// The store objects go to.
    pub fn store_config(&self) -> StoreConfig {
        self.store.clone().unwrap_or_else(|| StoreConfig::Local {
            dir: self.dir.clone(),
        })
    }

    /// The spool directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| self.dir.join("spool"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_sent_to_the_target_become_objects() {
        let dir = tempfile::tempdir().unwrap();
        let config: SinkTargetConfig = serde_json::from_value(serde_json::json!({
            "dir": dir.path(), "id": "out", "flush_size": 2
        }))
        .unwrap();
        let t = SinkTarget::from_config(&config, "r").unwrap();
        assert_eq!(t.id().to_string(), "arn:minio:sqs:r:out:directory");
        let record: EventRecord = serde_json::from_str(
            r#"{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}"#,
        )
        .unwrap();
        t.send_batch(&[record.clone(), record]).await.unwrap();
        t.close().await.unwrap();
        let store = config.store_config().build().unwrap();
        let objects = crate::conformance_tests::objects(&*store, "events/").await;
        assert_eq!(objects.len(), 1);
        let (key, bytes) = &objects[0];
        assert!(key.starts_with("events/"), "{key}");
        assert_eq!(crate::decode(key, bytes).unwrap().records.len(), 2);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let e = serde_json::from_str::<SinkTargetConfig>(r#"{"dri": "x"}"#).unwrap_err();
        assert!(e.to_string().contains("dri"), "{e}");
        let c: SinkTargetConfig = serde_json::from_str(r#"{"flush_size": 0}"#).unwrap();
        assert_eq!(c.validate().unwrap_err(), "`flush_size` must be > 0");
    }
}
