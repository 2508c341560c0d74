//! The Elasticsearch target (feature `elasticsearch`; OpenSearch speaks the
//! same API): MinIO's `namespace` and `access` formats, one `_bulk` request
//! per batch.
//!
//! - `namespace` (default): one document per object, id `bucket/object`
//!   (decoded key; ids longer than 512 bytes, the server's limit, become
//!   `sha256-<hex of bucket/object>`), body `{"Records": [event]}`;
//!   `s3:ObjectRemoved:*` deletes it. MinIO (for Elasticsearch 7 and later)
//!   uses a HighwayHash of `bucket/object` as the id instead.
//! - `access`: one document per event, body `{"Records": [event]}` (the
//!   event's `eventTime` inside), appended with the `create` action. Its
//!   id is the SHA-256 of the body, so when a batch is retried after a
//!   partial failure the documents it already wrote answer 409 (already
//!   there), are left as they are and count as delivered: no duplicates.
//!
//! The index is created when missing (`PUT /<index>`), once per target.
//!
//! Errors: connection failures, timeouts, HTTP 429 and 5xx (for the request
//! or any item of the bulk) are transient; 401/403 and items the server
//! rejects (a `mapper_parsing_exception`, …) are permanent, with the
//! server's reason. Deleting a missing document is not an error.
//!
//! Tested against osmem, an in-memory OpenSearch-API emulator: no real
//! Elasticsearch or OpenSearch runs on the test machines.

mod config;
#[cfg(all(test, feature = "integration"))]
mod conformance_tests;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use s3_event_core::{EventRecord, Target, TargetError, TargetId};
use sha2::{Digest, Sha256};

pub use crate::db_common::Format;
pub use config::{ElasticsearchConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};

use crate::config::Timeouts;
use crate::db_common::{collapse, records_doc, NsOp, MAX_BATCH};
use crate::{Error, Result};

/// How long `is_active`'s probe may take.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest document id the server accepts, in bytes.
const MAX_ID: usize = 512;
/// Longest excerpt of a server's answer kept in an error.
const EXCERPT: usize = 300;

/// Delivers events to an Elasticsearch or OpenSearch index. See the
/// [module docs](self).
pub struct ElasticsearchTarget {
    id: TargetId,
    format: Format,
    base: reqwest::Url,
    index: String,
    username: Option<String>,
    password: Option<String>,
    client: reqwest::Client,
    timeouts: Timeouts,
    index_ready: AtomicBool,
}

impl fmt::Debug for ElasticsearchTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElasticsearchTarget")
            .field("id", &self.id)
            .field("url", &config::redact_url(self.base.as_str()))
            .field("index", &self.index)
            .field("format", &self.format)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

/// The namespace document id of `key` (`bucket/object`).
pub(crate) fn doc_id(key: &str) -> String {
    if key.len() <= MAX_ID {
        key.to_owned()
    } else {
        format!("sha256-{}", hex::encode(Sha256::digest(key.as_bytes())))
    }
}

/// One line of NDJSON: `v` then `\n`.
fn push_json(out: &mut String, v: &serde_json::Value) {
    out.push_str(&v.to_string());
    out.push('\n');
}

/// At most [`EXCERPT`] characters of `text`, on one line.
fn excerpt(text: &str) -> String {
    text.chars()
        .take(EXCERPT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}


/// Registered in `lib.rs`'s `targets!` list.
impl crate::registry::TargetType for ElasticsearchTarget {
    type Config = ElasticsearchConfig;

    const SECRET_KEYS: &'static [&'static str] = &["password"];
    const URL_KEYS: &'static [&'static str] = &["url"];

    fn build(
        id: TargetId,
        config: ElasticsearchConfig,
    ) -> crate::Result<std::sync::Arc<dyn s3_event_core::Target>> {
        Ok(std::sync::Arc::new(ElasticsearchTarget::new(id, config)?))
    }
}

impl ElasticsearchTarget {
    /// Validates `config` (errors name the target id and the key) and
    /// builds the target. Nothing is contacted until the first send.
    pub fn new(id: TargetId, config: ElasticsearchConfig) -> Result<ElasticsearchTarget> {
        config.validate(id.id())?;
        let timeouts = config.timeouts();
        let err = |key: &'static str, message: String| Error::InvalidConfig {
            target: format!("elasticsearch {}", id.id()),
            key,
            message,
        };
        let mut base = reqwest::Url::parse(&config.url)
            .map_err(|e| err("url", format!("`url` is not a valid URL: {e}")))?;
        // Credentials in the URL become basic auth, as the Go client does.
        let (mut username, mut password) = (config.username, config.password);
        if !base.username().is_empty() && username.is_none() {
            username = Some(base.username().to_owned());
            password = base.password().map(str::to_owned);
        }
        let _ = base.set_username("");
        let _ = base.set_password(None);
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeouts.request)
            .connect_timeout(timeouts.connect)
            .build()
            .map_err(|e| err("url", format!("cannot build the HTTP client: {e}")))?;
        Ok(ElasticsearchTarget {
            id,
            format: config.format,
            base,
            index: config.index,
            username,
            password,
            client,
            timeouts,
            index_ready: AtomicBool::new(false),
        })
    }

    /// The connect and request timeouts its HTTP client was built with.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn url(&self, path: &str) -> reqwest::Url {
        // `path` is built from a validated index name and fixed words.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, self.url(path));
        match &self.username {
            Some(u) => req.basic_auth(u, self.password.as_deref()),
            None => req,
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> TargetError {
        if e.is_builder() {
            TargetError::permanent(&self.id, e)
        } else {
            TargetError::transient(&self.id, describe(&e))
        }
    }

    /// An error for a non-2xx answer: 408, 429 and 5xx transient, others
    /// permanent.
    async fn status_error(&self, what: &str, resp: reqwest::Response) -> TargetError {
        let status = resp.status();
        let body = resp.text().await.map(|t| excerpt(&t)).unwrap_or_default();
        let message = format!("{what}: HTTP {status}: {body}");
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
        {
            TargetError::transient(&self.id, message)
        } else {
            TargetError::permanent(&self.id, message)
        }
    }

    /// Creates the index if it is missing (once per target).
    async fn ensure_index(&self) -> Result<(), TargetError> {
        if self.index_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let resp = self
            .request(reqwest::Method::HEAD, &self.index)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        if resp.status() == StatusCode::NOT_FOUND {
            let resp = self
                .request(reqwest::Method::PUT, &self.index)
                .send()
                .await
                .map_err(|e| self.transport_error(e))?;
            if !resp.status().is_success() {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                // Created meanwhile by someone else.
                if !(status == StatusCode::BAD_REQUEST
                    && body.contains("resource_already_exists_exception"))
                {
                    let message = format!("creating index: HTTP {status}: {}", excerpt(&body));
                    return Err(if status.is_server_error() || status.as_u16() == 429 {
                        TargetError::transient(&self.id, message)
                    } else {
                        TargetError::permanent(&self.id, message)
                    });
                }
            }
        } else if !resp.status().is_success() {
            return Err(self.status_error("checking the index", resp).await);
        }
        self.index_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// The `_bulk` body of a batch.
    fn bulk_body(&self, events: &[EventRecord]) -> Result<String, TargetError> {
        let mut body = String::with_capacity(events.len() * 1024);
        match self.format {
            Format::Access => {
                for e in events {
                    let doc = records_doc(e);
                    let id = hex::encode(Sha256::digest(doc.as_bytes()));
                    push_json(&mut body, &serde_json::json!({"create": {"_id": id}}));
                    body.push_str(&doc);
                    body.push('\n');
                }
            }
            Format::Namespace => {
                for (key, op) in collapse(&self.id, events)? {
                    let id = doc_id(&key);
                    match op {
                        NsOp::Put(r) => {
                            push_json(&mut body, &serde_json::json!({"index": {"_id": id}}));
                            body.push_str(&records_doc(r));
                            body.push('\n');
                        }
                        NsOp::Delete => {
                            push_json(&mut body, &serde_json::json!({"delete": {"_id": id}}))
                        }
                    }
                }
            }
        }
        Ok(body)
    }

    /// The outcome of a `_bulk` answer: the first transient item failure
    /// wins (the batch is retried), else the first permanent one.
    fn bulk_outcome(&self, answer: &serde_json::Value) -> Result<(), TargetError> {
        if answer["errors"].as_bool() != Some(true) {
            return Ok(());
        }
        let mut permanent = None;
        for item in answer["items"].as_array().into_iter().flatten() {
            let Some((action, r)) = item.as_object().and_then(|o| o.iter().next()) else {
                continue;
            };
            let status = r["status"].as_u64().unwrap_or(0);
            // A missing document is deleted; an access document written by
            // an earlier attempt is there.
            if (200..300).contains(&status)
                || (action == "delete" && status == 404)
                || (action == "create" && status == 409)
            {
                continue;
            }
            let reason = format!(
                "{action} of document {:?}: HTTP {status}: {}: {}",
                r["_id"].as_str().unwrap_or_default(),
                r["error"]["type"].as_str().unwrap_or_default(),
                r["error"]["reason"].as_str().unwrap_or_default()
            );
            if status == 429 || status >= 500 || status == 0 {
                return Err(TargetError::transient(&self.id, excerpt(&reason)));
            }
            permanent.get_or_insert(reason);
        }
        match permanent {
            Some(reason) => Err(TargetError::permanent(&self.id, excerpt(&reason))),
            None => Ok(()),
        }
    }
}

/// A reqwest error with its causes, on one line.
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[async_trait]
impl Target for ElasticsearchTarget {
    fn id(&self) -> &TargetId {
        &self.id
    }

    /// One `_bulk` request for the whole batch; see the
    /// [module docs](self).
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
        if events.is_empty() {
            return Ok(());
        }
        let body = self.bulk_body(events)?;
        self.ensure_index().await?;
        let resp = self
            .request(reqwest::Method::POST, &format!("{}/_bulk", self.index))
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        if !resp.status().is_success() {
            return Err(self.status_error("bulk request", resp).await);
        }
        let answer: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| TargetError::transient(&self.id, format!("bulk answer: {e}")))?;
        self.bulk_outcome(&answer)
    }

    /// `GET /` (cluster information): `Ok(true)` on 2xx, `Ok(false)` when
    /// the server cannot be reached or answers 5xx, an error on 401/403.
    async fn is_active(&self) -> Result<bool, TargetError> {
        let probe = self
            .request(reqwest::Method::GET, "")
            .timeout(PING_TIMEOUT)
            .send()
            .await;
        match probe {
            Ok(r) if r.status().is_success() => Ok(true),
            Ok(r) if r.status().is_server_error() => Ok(false),
            Ok(r) => Err(self.status_error("probe", r).await),
            Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => Ok(false),
            Err(e) => Err(self.transport_error(e)),
        }
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }
}

#[cfg(test)]
mod tests {
    use super::config::valid_index;
    use super::*;
    use crate::db_common::test_record;

    fn id() -> TargetId {
        "arn:minio:sqs::1:elasticsearch".parse().unwrap()
    }

    #[test]
    fn client_keys_reach_the_client() {
        use crate::config::client::testing::{assert_client_keys, secs};
        let keys = serde_json::json!({"url": "http://127.0.0.1:9200", "index": "events"});
        assert_client_keys(keys, secs(10, 10), |v| {
            ElasticsearchTarget::new(id(), serde_json::from_value(v).unwrap())
                .unwrap()
                .timeouts()
        });
    }

    #[test]
    fn debug_hides_passwords() {
        let mut c = ElasticsearchConfig::new(
            "http://elastic:s3cr3t-url@127.0.0.1:9200",
            "events",
            Format::Access,
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t-url") && shown.contains("***"),
            "{shown}"
        );
        let t = ElasticsearchTarget::new(id(), c.clone()).unwrap();
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("s3cr3t-url") && shown.contains("***"),
            "{shown}"
        );
        c.url = "http://127.0.0.1:9200".into();
        c.username = Some("elastic".into());
        c.password = Some("s3cr3t-pw".into());
        assert!(!format!("{c:?}").contains("s3cr3t-pw"));
        let t = ElasticsearchTarget::new(id(), c).unwrap();
        assert!(!format!("{t:?}").contains("s3cr3t-pw"));
    }

    #[test]
    fn validation_and_minio_keys() {
        let c: ElasticsearchConfig = serde_json::from_value(serde_json::json!({
            "enable": "on", "format": "namespace", "url": "http://127.0.0.1:9200",
            "index": "bucketevents", "username": "", "password": "",
            "queue_dir": "", "queue_limit": "0"
        }))
        .unwrap();
        c.validate("1").unwrap();
        for (url, index, key) in [
            ("", "i", "url"),
            ("ftp://h/", "i", "url"),
            ("http://h:9200", "", "index"),
            ("http://h:9200", "Events", "index"),
        ] {
            let e = ElasticsearchTarget::new(
                id(),
                ElasticsearchConfig::new(url, index, Format::Access),
            )
            .unwrap_err();
            assert!(
                matches!(e, Error::InvalidConfig { key: k, .. } if k == key),
                "{url} {index}: {e}"
            );
        }
        let mut c = ElasticsearchConfig::new("http://h:9200", "i", Format::Access);
        c.username = Some("u".into());
        assert!(ElasticsearchTarget::new(id(), c).is_err());
        assert!(valid_index("bucket-events.2024"));
        assert!(!valid_index("_x") && !valid_index("a b") && !valid_index("a/b"));
    }

    #[test]
    fn bulk_bodies() {
        let t = ElasticsearchTarget::new(
            id(),
            ElasticsearchConfig::new("http://127.0.0.1:9200", "i", Format::Namespace),
        )
        .unwrap();
        let body = t
            .bulk_body(&[
                test_record("s3:ObjectCreated:Put", "b", "x y", "t1"),
                test_record("s3:ObjectRemoved:Delete", "b", "z", "t2"),
            ])
            .unwrap();
        let lines: Vec<serde_json::Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0], serde_json::json!({"index": {"_id": "b/x y"}}));
        assert_eq!(lines[1]["Records"][0]["eventTime"], "t1");
        assert_eq!(lines[2], serde_json::json!({"delete": {"_id": "b/z"}}));
        assert_eq!(lines.len(), 3);
        let long = "k".repeat(600);
        assert!(doc_id(&long).starts_with("sha256-") && doc_id(&long).len() < MAX_ID);
    }

    #[test]
    fn bulk_item_errors() {
        let t = ElasticsearchTarget::new(
            id(),
            ElasticsearchConfig::new("http://127.0.0.1:9200", "i", Format::Access),
        )
        .unwrap();
        let ok = serde_json::json!({"errors": true, "items": [
            {"index": {"status": 201}}, {"delete": {"status": 404, "result": "not_found"}},
            {"create": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}}]});
        assert!(t.bulk_outcome(&ok).is_ok());
        let bad = serde_json::json!({"errors": true, "items": [
            {"index": {"status": 400, "_id": "a", "error": {"type": "mapper_parsing_exception", "reason": "failed to parse"}}}]});
        let e = t.bulk_outcome(&bad).unwrap_err();
        assert!(
            !e.is_transient() && e.to_string().contains("mapper_parsing_exception"),
            "{e}"
        );
        let busy = serde_json::json!({"errors": true, "items": [
            {"index": {"status": 400, "error": {"type": "x"}}}, {"index": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}}]});
        assert!(t.bulk_outcome(&busy).unwrap_err().is_transient());
    }

    #[test]
    fn built_from_notify_config_json_and_env() {
        let c = crate::NotifyConfig::from_json(
            r#"{"elasticsearch": {"1": {"url": "http://127.0.0.1:9200", "index": "i",
                                       "format": "access"}}}"#,
            "r",
        )
        .unwrap();
        let t = c.build_targets().unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:1:elasticsearch");
        let env = [
            ("MINIO_NOTIFY_ELASTICSEARCH_URL", "http://127.0.0.1:9200"),
            ("MINIO_NOTIFY_ELASTICSEARCH_INDEX", "bucketevents"),
            ("MINIO_NOTIFY_ELASTICSEARCH_PASSWORD", "pw"),
            ("MINIO_NOTIFY_ELASTICSEARCH_USERNAME", "u"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let t = crate::NotifyConfig::from_env_vars(env, "r")
            .unwrap()
            .build_targets()
            .unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:_:elasticsearch");
    }

    #[tokio::test]
    async fn unreachable_server_is_transient_and_inactive() {
        let t = ElasticsearchTarget::new(
            id(),
            ElasticsearchConfig::new("http://127.0.0.1:1", "i", Format::Access),
        )
        .unwrap();
        assert!(matches!(t.is_active().await, Ok(false)));
        let e = t
            .send(&test_record("s3:ObjectCreated:Put", "b", "k", ""))
            .await
            .unwrap_err();
        assert!(e.is_transient(), "{e}");
    }
}
