use super::*;

#[test]
fn defaults_and_keys() {
    let c: SqsSourceConfig = serde_json::from_str(
        r#"{"queue_url": "http://127.0.0.1:15000/123456789012/q",
            "aws": {"endpoint": "http://127.0.0.1:15000", "secret_access_key": "hunter2"},
            "receivers": 3, "sns": {"verify_signatures": false}}"#,
    )
    .unwrap();
    assert_eq!(
        (
            c.wait_time_secs,
            c.max_messages,
            c.receivers,
            c.visibility_timeout_secs
        ),
        (20, 10, 3, 30)
    );
    assert!(!c.sns.verify_signatures);
    c.validate().unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    let e = serde_json::from_str::<SqsSourceConfig>(r#"{"queue_url": "x", "wait": 3}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `wait`"), "{e}");
}

#[test]
fn validate_names_the_key() {
    let ok = SqsSourceConfig::new("https://sqs.us-east-1.amazonaws.com/1/q");
    type Change = Box<dyn Fn(&mut SqsSourceConfig)>;
    let cases: Vec<(&str, Change)> = vec![
        ("`queue_url`", Box::new(|c| c.queue_url = "q".into())),
        ("`wait_time_secs`", Box::new(|c| c.wait_time_secs = 21)),
        ("`max_messages`", Box::new(|c| c.max_messages = 11)),
        ("`max_messages`", Box::new(|c| c.max_messages = 0)),
        ("`receivers`", Box::new(|c| c.receivers = 0)),
        (
            "`visibility_timeout_secs`",
            Box::new(|c| c.visibility_timeout_secs = 0),
        ),
    ];
    for (key, change) in cases {
        let mut c = ok.clone();
        change(&mut c);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with(key), "{key}: {e}");
    }
    let mut c = ok;
    c.aws.endpoint = Some("localhost:1".into());
    let nothing = |_: Vec<s3_event_core::EventRecord>| async { Ok::<(), HandlerError>(()) };
    let e = SqsSource::new(c, nothing).unwrap_err().to_string();
    assert!(e.starts_with("`aws`") && e.contains("endpoint"), "{e}");
}

use crate::handler::HandlerError;

#[cfg(feature = "integration")]
mod moto {
    use std::sync::Mutex;
    use std::time::Instant;

    use aws_sdk_sqs::types::QueueAttributeName;
    use s3_event_core::EventRecord;

    use super::*;

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

    fn client() -> Client {
        Client::new(&aws().sdk_config("SQS").unwrap())
    }

    /// A fresh queue (moto is shared): its URL.
    async fn queue(tag: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        client()
            .create_queue()
            .queue_name(format!("s3e-src-{tag}-{nanos}"))
            .send()
            .await
            .expect("moto creates the queue")
            .queue_url
            .unwrap()
    }

    async fn send(url: &str, body: &str) {
        client()
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .expect("moto takes the message");
    }

    /// Visible plus in-flight messages.
    async fn left(url: &str) -> usize {
        let attrs = client()
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        let n = |k: QueueAttributeName| attrs[&k].parse::<usize>().unwrap();
        n(QueueAttributeName::ApproximateNumberOfMessages)
            + n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
    }

    fn config(url: &str, visibility: u32) -> SqsSourceConfig {
        let mut c = SqsSourceConfig::new(url);
        c.aws = aws();
        c.wait_time_secs = 1;
        c.visibility_timeout_secs = visibility;
        c.sns.verify_signatures = false;
        c
    }

    /// A handler keeping what it is handed, failing the first `fail` calls,
    /// each call taking `delay`.
    #[derive(Clone, Default)]
    struct Collect {
        records: Arc<Mutex<Vec<EventRecord>>>,
        calls: Arc<AtomicU64>,
    }

    impl Collect {
        fn handler(&self, fail: u64, delay: Duration) -> impl RecordsHandler {
            let this = self.clone();
            move |records: Vec<EventRecord>| {
                let this = this.clone();
                async move {
                    tokio::time::sleep(delay).await;
                    if this.calls.fetch_add(1, Ordering::SeqCst) < fail {
                        return Err(HandlerError::transient("store down"));
                    }
                    this.records.lock().unwrap().extend(records);
                    Ok(())
                }
            }
        }

        fn keys(&self) -> Vec<String> {
            let mut k: Vec<String> = self
                .records
                .lock()
                .unwrap()
                .iter()
                .map(|r| r.decoded_key().unwrap())
                .collect();
            k.sort();
            k
        }
    }

    /// Runs `source` until `until` holds (30 s at most), then stops it.
    async fn run_until(source: &SqsSource, until: impl Fn(SqsStats) -> bool) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(source.clone().run(async move {
            let _ = rx.await;
        }));
        let start = Instant::now();
        while !until(source.stats()) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "condition not reached: {:?}",
                source.stats()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tx.send(()).unwrap();
        task.await.unwrap();
    }

    fn records_body(key: &str) -> String {
        serde_json::json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-12-06T10:00:00.000Z", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "photos", "arn": "arn:aws:s3:::photos"},
                   "object": {"key": key, "size": 3}}
        }]})
        .to_string()
    }

    #[tokio::test]
    async fn plain_sns_and_eventbridge_bodies_are_handed_on_and_deleted() {
        let url = queue("kinds").await;
        send(&url, &records_body("red+flower.jpg")).await;
        let sns = serde_json::json!({
            "Type": "Notification", "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:uploads",
            "Message": records_body("via%2Fsns.txt"),
            "Timestamp": "2026-12-06T10:00:00.000Z", "SignatureVersion": "2",
            "Signature": "AAAA", "SigningCertURL": "https://sns.us-east-1.amazonaws.com/x.pem"
        });
        send(&url, &sns.to_string()).await;
        let eb = serde_json::json!({
            "version": "0", "id": "e-1", "detail-type": "Object Created", "source": "aws.s3",
            "account": "123456789012", "time": "2026-12-06T10:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:s3:::photos"],
            "detail": {"version": "0", "bucket": {"name": "photos"},
                       "object": {"key": "event bridge.txt", "size": 1},
                       "request-id": "R", "requester": "123456789012", "reason": "PutObject"}
        });
        send(&url, &eb.to_string()).await;
        let test_event = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-12-06T10:00:00.000Z","Bucket":"photos","RequestId":"R","HostId":"H"}"#;
        send(&url, test_event).await;
        let c = Collect::default();
        let mut cfg = config(&url, 30);
        cfg.receivers = 2;
        let source = SqsSource::new(cfg, c.handler(0, Duration::ZERO)).unwrap();
        run_until(&source, |s| s.deleted == 4).await;
        assert_eq!(
            c.keys(),
            ["event bridge.txt", "red flower.jpg", "via/sns.txt"]
        );
        let s = source.stats();
        assert_eq!((s.records, s.test_events, s.rejected), (3, 1, 0), "{s:?}");
        assert_eq!(left(&url).await, 0);
    }

    #[tokio::test]
    async fn an_unparseable_body_is_counted_and_left_in_the_queue() {
        let url = queue("bad").await;
        send(&url, "{\"hello\": 1}").await;
        send(&url, &records_body("good.txt")).await;
        let c = Collect::default();
        let source = SqsSource::new(config(&url, 1), c.handler(0, Duration::ZERO)).unwrap();
        // Rejected twice: it came back after its visibility timeout.
        run_until(&source, |s| s.rejected >= 2 && s.deleted == 1).await;
        assert_eq!(c.keys(), ["good.txt"]);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let out = client()
            .receive_message()
            .queue_url(&url)
            .wait_time_seconds(2)
            .send()
            .await
            .unwrap();
        let bodies: Vec<_> = out.messages().iter().filter_map(|m| m.body()).collect();
        assert_eq!(bodies, ["{\"hello\": 1}"]);
    }

    #[tokio::test]
    async fn a_handler_error_leaves_the_message_to_come_back() {
        let url = queue("retry").await;
        send(&url, &records_body("again.txt")).await;
        let c = Collect::default();
        let source = SqsSource::new(config(&url, 1), c.handler(1, Duration::ZERO)).unwrap();
        run_until(&source, |s| s.deleted == 1).await;
        let s = source.stats();
        assert_eq!(
            (s.handler_failed, s.records, s.messages),
            (1, 1, 2),
            "{s:?}"
        );
        assert_eq!(c.keys(), ["again.txt"]);
        assert_eq!(left(&url).await, 0);
    }

    #[tokio::test]
    async fn visibility_is_renewed_while_a_message_is_handled() {
        let url = queue("slow").await;
        send(&url, &records_body("slow.txt")).await;
        let c = Collect::default();
        let mut cfg = config(&url, 1);
        cfg.receivers = 3;
        // Four visibility timeouts long: without renewal another receiver
        // would get the message meanwhile.
        let source = SqsSource::new(cfg, c.handler(0, Duration::from_secs(4))).unwrap();
        run_until(&source, |s| s.deleted == 1).await;
        let s = source.stats();
        assert_eq!((s.messages, s.records, s.errors), (1, 1, 0), "{s:?}");
        assert_eq!(c.calls.load(Ordering::SeqCst), 1);
        assert_eq!(left(&url).await, 0);
    }

    #[tokio::test]
    async fn shutdown_finishes_and_deletes_the_batch_in_hand() {
        let url = queue("stop").await;
        send(&url, &records_body("in-flight.txt")).await;
        let c = Collect::default();
        let source =
            SqsSource::new(config(&url, 30), c.handler(0, Duration::from_secs(2))).unwrap();
        // Stop as soon as the message is received, long before it is handled.
        run_until(&source, |s| s.messages == 1).await;
        let s = source.stats();
        assert_eq!((s.records, s.deleted), (1, 1), "{s:?}");
        assert_eq!(left(&url).await, 0);
    }
}
