//! The Elasticsearch target against osmem, an in-memory OpenSearch-API
//! emulator, at `S3E_OPENSEARCH_URL` (default `http://127.0.0.1:19200`,
//! started by `scripts/services.sh osmem`), read back over HTTP with a
//! client of the test's own. No real Elasticsearch or OpenSearch can run on
//! the test machines; osmem checks dynamic mappings and answers `_bulk`
//! item by item as they do. It ignores credentials, so bad credentials are
//! not tested here.
//!
//! Restarts: osmem keeps everything in memory, so it is never stopped. The
//! conformance harness puts a TCP proxy ([`crate::db_common::proxy`])
//! between the target and the server; "stopping the server" closes the
//! proxy's listener and every connection through it.

use super::*;
use crate::conformance::{self, Harness};
use crate::db_common::proxy::Proxy;
use crate::db_common::{test_record, unique_name};
use std::sync::Arc;

fn base() -> String {
    std::env::var("S3E_OPENSEARCH_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:19200".into())
        .trim_end_matches('/')
        .to_owned()
}

fn id() -> TargetId {
    "arn:minio:sqs::conformance:elasticsearch".parse().unwrap()
}

/// The `_source` of every document of `index`, in the order `_search`
/// returns them (osmem: insertion order; a real cluster would need a sort
/// field, as `Records.eventTime`).
async fn sources(index: &str) -> Vec<serde_json::Value> {
    let c = reqwest::Client::new();
    let _ = c.post(format!("{}/{index}/_refresh", base())).send().await;
    let Ok(resp) = c
        .get(format!("{}/{index}/_search?size=10000", base()))
        .send()
        .await
    else {
        return vec![];
    };
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    v["hits"]["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| h["_source"].clone())
        .collect()
}

fn source_key(s: &serde_json::Value) -> String {
    s3_event_core::decode_key(s["Records"][0]["s3"]["object"]["key"].as_str().unwrap()).unwrap()
}

async fn delete_index(index: &str) {
    let _ = reqwest::Client::new()
        .delete(format!("{}/{index}", base()))
        .send()
        .await;
}

struct EsHarness {
    proxy: Proxy,
    index: String,
}

impl EsHarness {
    async fn new() -> EsHarness {
        let host = reqwest::Url::parse(&base()).unwrap();
        let upstream = format!(
            "{}:{}",
            host.host_str().unwrap(),
            host.port_or_known_default().unwrap()
        );
        let h = EsHarness {
            proxy: Proxy::new(&upstream).await,
            index: unique_name("s3e_es_conf"),
        };
        // An operator-defined mapping: `eventTime` is a date, so a record
        // whose time does not parse is rejected (the poison).
        let resp = reqwest::Client::new()
            .put(format!("{}/{}", base(), h.index))
            .json(
                &serde_json::json!({"mappings": {"properties": {"Records": {"properties": {
                "eventTime": {"type": "date"}}}}}}),
            )
            .send()
            .await
            .expect("osmem answers at S3E_OPENSEARCH_URL (scripts/services.sh osmem)");
        assert!(resp.status().is_success(), "{:?}", resp.text().await);
        h
    }
}

#[async_trait]
impl Harness for EsHarness {
    fn target(&self) -> Arc<dyn Target> {
        let c = ElasticsearchConfig::new(
            format!("http://127.0.0.1:{}", self.proxy.port),
            self.index.clone(),
            Format::Access,
        );
        Arc::new(ElasticsearchTarget::new(id(), c).unwrap())
    }

    async fn received(&self) -> Vec<String> {
        sources(&self.index).await.iter().map(source_key).collect()
    }

    async fn stop_server(&self) {
        self.proxy.stop().await;
    }

    async fn start_server(&self) {
        self.proxy.start().await;
    }

    /// `eventTime` is mapped as a date: the server rejects a record whose
    /// time does not parse (`mapper_parsing_exception`).
    fn poison(&self) -> Option<EventRecord> {
        let mut r = conformance::record("conformance-poison");
        r.event_time = Some("not a time".into());
        Some(r)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_run_all_through_a_proxy() {
    let h = EsHarness::new().await;
    conformance::run_all(&h).await;
    delete_index(&h.index).await;
}

fn target(index: &str, format: Format) -> ElasticsearchTarget {
    ElasticsearchTarget::new(id(), ElasticsearchConfig::new(base(), index, format)).unwrap()
}

async fn get_doc(index: &str, id: &str) -> serde_json::Value {
    let mut url = reqwest::Url::parse(&format!("{}/{index}/_doc/", base())).unwrap();
    url.path_segments_mut().unwrap().pop_if_empty().push(id);
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_creates_overwrites_and_deletes() {
    let index = unique_name("s3e_es_ns");
    let t = target(&index, Format::Namespace);
    let put = |k: &str, time: &str| test_record("s3:ObjectCreated:Put", "photos", k, time);
    t.send_batch(&[
        put("a b.jpg", "2024-01-01T00:00:01Z"),
        put("c.jpg", "2024-01-01T00:00:01Z"),
    ])
    .await
    .unwrap();
    t.send(&put("a b.jpg", "2024-01-01T00:00:02Z"))
        .await
        .unwrap();
    let d = get_doc(&index, "photos/a b.jpg").await;
    assert_eq!(d["found"], true, "{d}");
    assert_eq!(
        d["_source"]["Records"][0]["eventTime"],
        "2024-01-01T00:00:02Z"
    );
    assert_eq!(d["_source"]["Records"].as_array().unwrap().len(), 1);
    t.send_batch(&[
        put("d.jpg", "2024-01-01T00:00:03Z"),
        test_record(
            "s3:ObjectRemoved:Delete",
            "photos",
            "a b.jpg",
            "2024-01-01T00:00:03Z",
        ),
        put("c.jpg", "2024-01-01T00:00:03Z"),
        test_record(
            "s3:ObjectRemoved:Delete",
            "photos",
            "c.jpg",
            "2024-01-01T00:00:04Z",
        ),
        // Deleting what is not there is fine.
        test_record(
            "s3:ObjectRemoved:Delete",
            "photos",
            "never.jpg",
            "2024-01-01T00:00:04Z",
        ),
    ])
    .await
    .unwrap();
    let mut keys: Vec<String> = sources(&index).await.iter().map(source_key).collect();
    keys.sort();
    assert_eq!(keys, ["d.jpg"]);
    assert_eq!(get_doc(&index, "photos/a b.jpg").await["found"], false);
    t.send(&test_record(
        "s3:ObjectRemoved:Delete",
        "photos",
        "d.jpg",
        "2024-01-01T00:00:05Z",
    ))
    .await
    .unwrap();
    assert!(
        sources(&index).await.is_empty(),
        "the delete leaves no document"
    );
    delete_index(&index).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn access_appends_in_order_with_event_time() {
    let index = unique_name("s3e_es_access");
    let t = target(&index, Format::Access);
    let ev: Vec<EventRecord> = (0..300)
        .map(|i| {
            test_record(
                "s3:ObjectCreated:Put",
                "b",
                &format!("k{i:03}"),
                &format!("2024-05-06T07:08:{:02}.{:03}Z", i / 100, i % 100),
            )
        })
        .collect();
    t.send_batch(&ev[..256]).await.unwrap();
    t.send_batch(&ev[256..]).await.unwrap();
    t.send(&test_record(
        "s3:ObjectRemoved:Delete",
        "b",
        "k000",
        "2024-05-06T07:09:00Z",
    ))
    .await
    .unwrap();
    let got = sources(&index).await;
    let keys: Vec<String> = got.iter().map(source_key).collect();
    let want: Vec<String> = (0..300)
        .map(|i| format!("k{i:03}"))
        .chain(["k000".into()])
        .collect();
    assert_eq!(keys, want);
    assert_eq!(
        got[1]["Records"][0]["eventTime"],
        "2024-05-06T07:08:00.001Z"
    );
    // A retried batch leaves what is there and adds nothing.
    t.send_batch(&ev[..10]).await.unwrap();
    assert_eq!(sources(&index).await.len(), 301);
    delete_index(&index).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_document_is_permanent_with_the_servers_reason() {
    let index = unique_name("s3e_es_reject");
    let t = target(&index, Format::Access);
    t.send(&test_record(
        "s3:ObjectCreated:Put",
        "b",
        "k",
        "2024-01-01T00:00:00Z",
    ))
    .await
    .unwrap();
    // `eventTime` is now mapped as a date.
    let e = t
        .send(&test_record(
            "s3:ObjectCreated:Put",
            "b",
            "k2",
            "not a time",
        ))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("mapper_parsing_exception"), "{e}");
    assert!(matches!(t.is_active().await, Ok(true)));
    delete_index(&index).await;
}
