//! What the database and search targets (`redis`, `postgresql`, `mysql`,
//! `elasticsearch`) share: MinIO's `namespace`/`access` formats and the
//! documents they store.

use std::collections::HashMap;
use std::fmt;

use s3_event_core::{EventRecord, TargetError, TargetId};
use serde::{Deserialize, Deserializer};

/// Largest batch these targets take in one `send_batch`: one round trip
/// (pipeline, statement, transaction or `_bulk` request) per batch.
pub(crate) const MAX_BATCH: usize = 256;

/// How events are stored, as MinIO's `format` key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// One entry per `bucket/key` holding the object's latest event:
    /// upserted on every event, deleted on `s3:ObjectRemoved:*`. The default,
    /// as in MinIO.
    #[default]
    Namespace,
    /// Append-only: one entry per event, with its event time.
    Access,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Namespace => "namespace",
            Format::Access => "access",
        })
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "namespace" => Ok(Format::Namespace),
            "access" => Ok(Format::Access),
            other => Err(serde::de::Error::custom(format!(
                "`format` must be \"namespace\" or \"access\", not {other:?}"
            ))),
        }
    }
}

/// The `bucket/key` (key URL-decoded) a namespace entry is stored under, as
/// MinIO. A key that does not decode is a permanent error.
pub(crate) fn namespace_key(id: &TargetId, record: &EventRecord) -> Result<String, TargetError> {
    let key = record.decoded_key().map_err(|e| {
        TargetError::permanent(id, format!("cannot store the event under its key: {e}"))
    })?;
    Ok(format!(
        "{}/{key}",
        record.bucket_name().unwrap_or_default()
    ))
}

/// Whether the event removes its object from the namespace: any
/// `s3:ObjectRemoved:*` event (MinIO only removes on
/// `s3:ObjectRemoved:Delete`; `DeleteMarkerCreated` also hides the object).
pub(crate) fn is_removal(record: &EventRecord) -> bool {
    let name = record.event_name_str().unwrap_or_default();
    name.strip_prefix("s3:")
        .unwrap_or(name)
        .starts_with("ObjectRemoved:")
}

/// MinIO's stored document for one event: `{"Records": [record]}`.
#[derive(serde::Serialize)]
pub(crate) struct RecordsDoc<'a> {
    #[serde(rename = "Records")]
    records: [&'a EventRecord; 1],
}

/// [`RecordsDoc`] as JSON text.
pub(crate) fn records_doc(record: &EventRecord) -> String {
    // Serializing records cannot fail: every map key is a string.
    serde_json::to_string(&RecordsDoc { records: [record] }).expect("an event record serializes")
}

/// One namespace operation after [`collapse`].
#[derive(Debug)]
pub(crate) enum NsOp<'a> {
    /// Store `doc` (MinIO's `{"Records": [record]}`) under the key.
    Put(&'a EventRecord),
    /// Remove the key.
    Delete,
}

/// The namespace operations of a batch, one per `bucket/key` (the last
/// event of each key wins, as applying them in order would leave it), in
/// order of each key's last event. Applying the result in any order leaves
/// the same state as applying the batch in order.
pub(crate) fn collapse<'a>(
    id: &TargetId,
    events: &'a [EventRecord],
) -> Result<Vec<(String, NsOp<'a>)>, TargetError> {
    let mut last: HashMap<String, usize> = HashMap::with_capacity(events.len());
    let mut keys = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let k = namespace_key(id, e)?;
        last.insert(k.clone(), i);
        keys.push(k);
    }
    Ok(keys
        .into_iter()
        .enumerate()
        .filter(|(i, k)| last.get(k) == Some(i))
        .map(|(i, k)| {
            let e = &events[i];
            let op = if is_removal(e) {
                NsOp::Delete
            } else {
                NsOp::Put(e)
            };
            (k, op)
        })
        .collect())
}

/// A per-test unique name for tables, keys and indexes.
#[cfg(all(test, feature = "integration"))]
pub(crate) fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}_{}_{nanos:x}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A record for the format tests: `event` on `bucket`/`key` at `time`.
#[cfg(test)]
pub(crate) fn test_record(event: &str, bucket: &str, key: &str, time: &str) -> EventRecord {
    serde_json::from_value(serde_json::json!({
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "eventName": event,
        "eventTime": time,
        "s3": {
            "bucket": { "name": bucket },
            "object": { "key": s3_event_core::encode_key(key), "size": 1 },
        },
    }))
    .expect("a test record deserializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> TargetId {
        "arn:minio:sqs::1:redis".parse().unwrap()
    }

    #[test]
    fn format_parses_minio_values() {
        let f = |s: &str| serde_json::from_value::<Format>(serde_json::Value::String(s.into()));
        assert_eq!(f("").unwrap(), Format::Namespace);
        assert_eq!(f("Namespace").unwrap(), Format::Namespace);
        assert_eq!(f("access").unwrap(), Format::Access);
        assert!(f("log").unwrap_err().to_string().contains("`format`"));
    }

    #[test]
    fn namespace_key_is_bucket_slash_decoded_key() {
        let r = test_record("s3:ObjectCreated:Put", "b", "a b/é", "");
        assert_eq!(namespace_key(&id(), &r).unwrap(), "b/a b/é");
        let mut bad = r.clone();
        bad.s3.as_mut().unwrap().object.as_mut().unwrap().key = Some("%ff".into());
        assert!(!namespace_key(&id(), &bad).unwrap_err().is_transient());
    }

    #[test]
    fn removal_with_and_without_prefix() {
        for (name, removal) in [
            ("s3:ObjectRemoved:Delete", true),
            ("ObjectRemoved:DeleteMarkerCreated", true),
            ("s3:ObjectCreated:Put", false),
            ("", false),
        ] {
            assert_eq!(
                is_removal(&test_record(name, "b", "k", "")),
                removal,
                "{name}"
            );
        }
    }

    #[test]
    fn collapse_keeps_the_last_event_per_key() {
        let ev = [
            test_record("s3:ObjectCreated:Put", "b", "x", "1"),
            test_record("s3:ObjectCreated:Put", "b", "y", "2"),
            test_record("s3:ObjectRemoved:Delete", "b", "x", "3"),
            test_record("s3:ObjectCreated:Put", "b", "y", "4"),
            test_record("s3:ObjectCreated:Put", "b", "z", "5"),
        ];
        let ops = collapse(&id(), &ev).unwrap();
        let summary: Vec<(String, Option<&str>)> = ops
            .iter()
            .map(|(k, op)| {
                let t = match op {
                    NsOp::Put(r) => r.event_time.as_deref(),
                    NsOp::Delete => None,
                };
                (k.clone(), t)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("b/x".to_string(), None),
                ("b/y".to_string(), Some("4")),
                ("b/z".to_string(), Some("5")),
            ]
        );
    }
}

/// A TCP proxy on loopback between a target and a shared server, for the
/// restart tests: `stop` closes the listener and every proxied connection
/// (the target sees its connections drop and new ones refused, as when the
/// server goes down), `start` listens again on the same port. The shared
/// server itself is never stopped.
#[cfg(all(test, feature = "integration"))]
pub(crate) mod proxy {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    struct Running {
        accept: JoinHandle<()>,
        conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    }

    /// See the [module docs](self).
    pub(crate) struct Proxy {
        /// The loopback port the proxy listens on.
        pub(crate) port: u16,
        upstream: String,
        running: tokio::sync::Mutex<Option<Running>>,
    }

    impl Proxy {
        /// A running proxy to `upstream` (`host:port`).
        pub(crate) async fn new(upstream: &str) -> Proxy {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let p = Proxy {
                port: listener.local_addr().unwrap().port(),
                upstream: upstream.to_owned(),
                running: tokio::sync::Mutex::new(None),
            };
            *p.running.lock().await = Some(p.run(listener));
            p
        }

        fn run(&self, listener: TcpListener) -> Running {
            let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
            let upstream = self.upstream.clone();
            let c2 = conns.clone();
            let accept = tokio::spawn(async move {
                while let Ok((mut down, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut up) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        }
                    });
                    c2.lock().unwrap().push(task);
                }
            });
            Running { accept, conns }
        }

        /// Closes the listener and every proxied connection.
        pub(crate) async fn stop(&self) {
            let Some(r) = self.running.lock().await.take() else {
                return;
            };
            r.accept.abort();
            let _ = r.accept.await;
            let conns: Vec<JoinHandle<()>> = std::mem::take(&mut *r.conns.lock().unwrap());
            for c in conns {
                c.abort();
                let _ = c.await;
            }
        }

        /// Listens again on the same port.
        pub(crate) async fn start(&self) {
            let mut running = self.running.lock().await;
            if running.is_some() {
                return;
            }
            let mut tries = 0;
            let listener = loop {
                match TcpListener::bind(("127.0.0.1", self.port)).await {
                    Ok(l) => break l,
                    Err(e) if tries < 100 => {
                        tries += 1;
                        eprintln!("rebinding port {}: {e}", self.port);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("cannot rebind port {}: {e}", self.port),
                }
            };
            *running = Some(self.run(listener));
        }
    }
}
