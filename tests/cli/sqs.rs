//! `s3-event relay` reading an SQS queue against moto (`S3E_MOTO_ENDPOINT`,
//! default `http://127.0.0.1:15000`; started by `scripts/services.sh`),
//! which sends the S3 notifications itself: a bucket notifies the queue
//! directly (S3 → SQS) and through an SNS topic (S3 → SNS → SQS); objects
//! are put and deleted with aws-sdk-s3. What reaches Redis is compared with
//! what the same relay makes of the same bodies POSTed as webhooks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration, TopicConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use s3_event::core::aws::AwsConfig;
use serde_json::{json, Value};

use crate::relay::{http, post, redis, redis_config, start, unique_key};
use crate::util::free_port;

fn endpoint() -> String {
    std::env::var("S3E_MOTO_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:15000".into())
}

fn aws() -> AwsConfig {
    AwsConfig {
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        session_token: None,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Clients for moto.
struct Moto {
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
}

impl Moto {
    fn new() -> Self {
        let s3 = aws_sdk_s3::config::Builder::from(&aws().sdk_config("S3").unwrap())
            .force_path_style(true)
            .build();
        Moto {
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::new(&aws().sdk_config("SQS").unwrap()),
            sns: aws_sdk_sns::Client::new(&aws().sdk_config("SNS").unwrap()),
        }
    }

    /// A fresh queue with a 2 s visibility timeout: its URL and ARN.
    async fn queue(&self, name: &str) -> (String, String) {
        let url = self
            .sqs
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::VisibilityTimeout, "2")
            .send()
            .await
            .expect("moto creates the queue")
            .queue_url
            .unwrap();
        let arn = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()
            .remove(&QueueAttributeName::QueueArn)
            .unwrap();
        (url, arn)
    }

    /// Every body in `url` (until a receive comes back empty), deleted.
    async fn drain(&self, url: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let r = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            if r.messages().is_empty() {
                return out;
            }
            for m in r.messages() {
                out.push(m.body().unwrap_or_default().to_owned());
                self.sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// Bucket `bucket` notifying each queue directly and through one SNS
    /// topic, for every created and removed object.
    async fn notifying_bucket(&self, bucket: &str, queues: &[&str]) {
        let topic = self
            .sns
            .create_topic()
            .name(format!("{bucket}-topic"))
            .send()
            .await
            .unwrap()
            .topic_arn
            .unwrap();
        for q in queues {
            self.sns
                .subscribe()
                .topic_arn(&topic)
                .protocol("sqs")
                .endpoint(*q)
                .send()
                .await
                .unwrap();
        }
        self.s3.create_bucket().bucket(bucket).send().await.unwrap();
        let events = [
            Event::from("s3:ObjectCreated:*"),
            Event::from("s3:ObjectRemoved:*"),
        ];
        let mut config = NotificationConfiguration::builder().topic_configurations(
            TopicConfiguration::builder()
                .topic_arn(&topic)
                .set_events(Some(events.to_vec()))
                .build()
                .unwrap(),
        );
        for q in queues {
            config = config.queue_configurations(
                QueueConfiguration::builder()
                    .queue_arn(*q)
                    .set_events(Some(events.to_vec()))
                    .build()
                    .unwrap(),
            );
        }
        self.s3
            .put_bucket_notification_configuration()
            .bucket(bucket)
            .notification_configuration(config.build())
            .send()
            .await
            .expect("moto takes the notification configuration");
    }

    async fn put(&self, bucket: &str, key: &str) {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"{}"))
            .send()
            .await
            .unwrap();
    }

    async fn delete(&self, bucket: &str, key: &str) {
        self.s3
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
    }
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("s3e-{name}-{}-{nanos}", std::process::id())
}

/// The records in Redis list `key` (access format), as JSON text, sorted;
/// without `s3.configurationId`, which names the bucket's notification
/// configuration entry (one per queue), and `eventTime`, which moto stamps
/// per notification sent (a millisecond apart for the two queues).
fn redis_records(key: &str) -> Vec<String> {
    let entries: Vec<String> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(&mut redis())
        .expect("LRANGE");
    let mut out: Vec<String> = entries
        .iter()
        .map(|e| {
            let mut v: Value = serde_json::from_str(e).expect("access entry is JSON");
            let record = &mut v[0]["Event"][0];
            record
                .as_object_mut()
                .expect("record is an object")
                .remove("eventTime");
            record["s3"]
                .as_object_mut()
                .expect("record has s3")
                .remove("configurationId");
            record.to_string()
        })
        .collect();
    out.sort();
    out
}

/// Redis list `key`'s records once `done` holds of them (or at `within`).
fn wait_until(key: &str, within: Duration, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let got = redis_records(key);
        if done(&got) || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether every `(eventName, key)` of `want` is among `records` at least
/// as often as `want` says, and nothing else is.
fn covers(records: &[String], want: &BTreeMap<(String, String), usize>) -> bool {
    let got = decoded(records);
    got.keys().all(|k| want.contains_key(k))
        && want.iter().all(|(k, n)| got.get(k).is_some_and(|c| c >= n))
}

/// `records` with exact repeats removed (SQS delivers at least once: moto
/// has been seen to deliver a message twice).
fn distinct(records: &[String]) -> Vec<String> {
    let mut out = records.to_vec();
    out.dedup();
    out
}

/// `(eventName, decoded key)` of records, counted.
fn decoded(records: &[String]) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for r in records {
        let r: s3_event::core::EventRecord = serde_json::from_str(r).unwrap();
        let k = (
            r.event_name_str().unwrap().to_owned(),
            r.decoded_key().unwrap(),
        );
        *out.entry(k).or_insert(0) += 1;
    }
    out
}

/// A relay reading `queue_url` into Redis list `key`, HTTP on `port`.
fn sqs_relay_config(port: u16, key: &str, queue_url: &str, queue_dir: &std::path::Path) -> Value {
    let mut c = redis_config(port, key, Some(queue_dir));
    c["sqs"] = json!({
        "queue_url": queue_url,
        "aws": {"endpoint": endpoint(), "region": "us-east-1",
                "access_key_id": "testing", "secret_access_key": "testing"},
        "wait_time_secs": 1,
        "receivers": 2,
        "visibility_timeout_secs": 2,
        // moto does not sign its SNS messages.
        "sns": {"verify_signatures": false}
    });
    c
}

fn metric(port: u16, line_start: &str) -> f64 {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (_, body) = http(addr, "GET", "/metrics", &[], "").expect("GET /metrics");
    body.lines()
        .filter(|l| l.starts_with(line_start))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const KEYS: [&str; 4] = ["plain.txt", "a b+c.txt", "dir/ünï cødé.json", "100%.bin"];

/// S3 → SQS and S3 → SNS → SQS into the relay give Redis the same records
/// as the same bodies POSTed to the relay; keys decoded; the test events
/// counted and not forwarded; a body that is no notification is left in
/// the queue.
#[test]
fn s3_notifications_through_sqs_and_sns_reach_the_target_as_webhooks_do() {
    let rt = rt();
    let moto = Moto::new();
    let bucket = unique("src").to_lowercase();
    let (url, arn) = rt.block_on(moto.queue(&unique("relay")));
    let (ref_url, ref_arn) = rt.block_on(moto.queue(&unique("ref")));
    rt.block_on(moto.notifying_bucket(&bucket, &[&arn, &ref_arn]));
    rt.block_on(
        moto.sqs
            .send_message()
            .queue_url(&url)
            .message_body("this is not a notification")
            .send(),
    )
    .unwrap();
    for k in KEYS {
        rt.block_on(moto.put(&bucket, k));
    }
    for k in &KEYS[..2] {
        rt.block_on(moto.delete(&bucket, k));
    }

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let key = unique_key("sqs-source");
    let config = sqs_relay_config(port, &key, &url, &dir.path().join("queue"));
    let mut relay = start(dir.path(), Some(&config), port);
    // Each event twice: directly and through SNS.
    let mut want = BTreeMap::new();
    for k in KEYS {
        want.insert(("ObjectCreated:Put".to_owned(), k.to_owned()), 2);
    }
    for k in &KEYS[..2] {
        want.insert(("ObjectRemoved:Delete".to_owned(), k.to_string()), 2);
    }
    let via_sqs = wait_until(&key, Duration::from_secs(60), |r| covers(r, &want));
    // The counters, once the bad body and the test event were received
    // (in whichever receive moto put them).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (test_events, rejected) = loop {
        let t = metric(port, "s3_event_sqs_messages_total{outcome=\"test_event\"}");
        let r = metric(port, "s3_event_sqs_rejected_total{reason=\"bad_payload\"}");
        if (t >= 1.0 && r >= 1.0) || Instant::now() > deadline {
            break (t, r);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(relay.terminate().success());

    // The same bodies, read from the reference queue, POSTed as webhooks.
    let bodies = rt.block_on(moto.drain(&ref_url));
    let dir2 = tempfile::tempdir().unwrap();
    let port2 = free_port();
    let key2 = unique_key("sqs-webhook");
    let mut c2 = redis_config(port2, &key2, None);
    c2["receiver"] = json!({"sns": {"verify_signatures": false}});
    let mut webhooks = start(dir2.path(), Some(&c2), port2);
    let addr2 = SocketAddr::from(([127, 0, 0, 1], port2));
    for b in &bodies {
        assert_eq!(post(addr2, None, b).0, 200, "{b}");
    }
    let via_http = wait_until(&key2, Duration::from_secs(30), |r| covers(r, &want));
    assert!(webhooks.terminate().success());

    // At least once: a message SQS delivers twice is handled twice.
    assert!(
        covers(&via_sqs, &want),
        "{:?} != {want:?}",
        decoded(&via_sqs)
    );
    let (via_sqs, via_http) = (distinct(&via_sqs), distinct(&via_http));
    let only_sqs: Vec<_> = via_sqs.iter().filter(|r| !via_http.contains(r)).collect();
    let only_http: Vec<_> = via_http.iter().filter(|r| !via_sqs.contains(r)).collect();
    assert_eq!(
        via_sqs, via_http,
        "the relay made the same records of both; only through SQS: {only_sqs:?}; \
         only through HTTP: {only_http:?}"
    );
    assert!(test_events >= 1.0, "test events counted: {test_events}");
    assert!(rejected >= 1.0, "bad body counted: {rejected}");

    // The bad body is still in the queue, and nothing else.
    std::thread::sleep(Duration::from_secs(2));
    let left = rt.block_on(moto.drain(&url));
    assert_eq!(left, ["this is not a notification"]);
    for k in [&key, &key2] {
        let _: () = redis::cmd("DEL").arg(k).query(&mut redis()).unwrap();
    }
}

/// kill -9 of the relay while objects are being put: every object's
/// notification reaches Redis after the restart (the messages not yet
/// deleted come back after their visibility timeout).
#[test]
fn kill9_of_the_sqs_relay_loses_no_notification() {
    let rt = rt();
    let moto = Moto::new();
    let bucket = unique("kill").to_lowercase();
    let (url, arn) = rt.block_on(moto.queue(&unique("kill")));
    rt.block_on(moto.notifying_bucket(&bucket, &[&arn]));
    let dir = tempfile::tempdir().unwrap();
    let queue_dir = dir.path().join("queue");
    let port = free_port();
    let key = unique_key("sqs-kill9");
    let config = sqs_relay_config(port, &key, &url, &queue_dir);
    let mut relay = start(dir.path(), Some(&config), port);

    let n = 150;
    let names: Vec<String> = (0..n).map(|i| format!("k/obj {i:04}.bin")).collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let kill_after = 20 + (nanos as usize % 80);
    for (i, name) in names.iter().enumerate() {
        rt.block_on(moto.put(&bucket, name));
        if i == kill_after {
            relay.kill9();
        }
    }
    let before = decoded(&redis_records(&key)).len();
    let mut relay = start(dir.path(), Some(&config), port);
    // Each object directly and through SNS. Waiting for 2 × n records is
    // not enough: redelivered messages (at least once) can make up the
    // count before the last message's visibility timeout has passed.
    let want: BTreeMap<(String, String), usize> = names
        .iter()
        .map(|k| (("ObjectCreated:Put".to_owned(), k.clone()), 2))
        .collect();
    let got = wait_until(&key, Duration::from_secs(90), |got| covers(got, &want));
    let counts = decoded(&got);
    let missing: Vec<_> = names
        .iter()
        .filter(|k| {
            counts
                .get(&("ObjectCreated:Put".to_owned(), (*k).clone()))
                .is_none_or(|c| *c < 2)
        })
        .collect();
    println!(
        "sqs relay kill -9 after {kill_after} puts: {before} objects in Redis before the restart, \
         {} records after ({} expected at least)",
        got.len(),
        2 * n
    );
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert!(relay.terminate().success());
    let _: () = redis::cmd("DEL").arg(&key).query(&mut redis()).unwrap();
}

/// `s3-event ingest` reading S3 notifications from SQS: the object a
/// message announces is read into the sink (the poller, at start, found
/// nothing), and the message is deleted once its records are in the spool.
#[test]
fn ingest_reads_the_object_an_sqs_message_announces_and_deletes_it() {
    use crate::ingest::{customers, files_under, meter, Running};

    let rt = rt();
    let moto = Moto::new();
    let (url, _) = rt.block_on(moto.queue(&unique("ingest")));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("bucket/ingest")).unwrap();
    let config = json!({
        "pollIntervalMillis": 3_600_000,
        "sqs": {
            "queue_url": url,
            "aws": {"endpoint": endpoint(), "region": "us-east-1",
                    "access_key_id": "testing", "secret_access_key": "testing"},
            "wait_time_secs": 1,
            "visibility_timeout_secs": 2,
        },
    });
    let run = Running::start(dir, &config, 1);
    // The first poll (at start) finds nothing; only the message can bring
    // this file in.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(
        dir.join("bucket/ingest/q 1.json"),
        format!("{}\n", meter("q", 1.0)),
    )
    .unwrap();
    let body = json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-01-01T00:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
               "bucket": {"name": "bucket", "arn": "arn:aws:s3:::bucket"},
               "object": {"key": "ingest/q+1.json", "size": 10, "eTag": "abc"}}
    }]});
    rt.block_on(
        moto.sqs
            .send_message()
            .queue_url(&url)
            .message_body(body.to_string())
            .send(),
    )
    .unwrap();
    run.wait_ingested(1);
    let (_, log) = run.stop();
    // Deleted once handled: with the ingest stopped, a message it had not
    // deleted would come back after the 2 s visibility timeout.
    std::thread::sleep(Duration::from_secs(3));
    let left = rt.block_on(moto.drain(&url));
    assert!(left.is_empty(), "left in the queue: {left:?}\n{log}");
    assert!(log.contains("ingest/q 1.json"), "{log}");
    let objects: Vec<Vec<u8>> = files_under(&dir.join("meters"))
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(customers(&objects), ["q"]);
}
