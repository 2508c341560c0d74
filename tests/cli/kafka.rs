//! Process test of `s3-event sink --source kafka` against the Kafka-protocol
//! broker `scripts/services.sh` starts (`S3E_KAFKA_BROKERS`, default
//! tansu on `127.0.0.1:19092`): the program's command line, its
//! `/health` and `/metrics`, its shutdown on SIGTERM, and what it left in
//! its local directory.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::json;

use crate::util::{free_port, wait_for_port, ChildGuard};

const PARTITIONS: i32 = 3;

fn brokers() -> String {
    std::env::var("S3E_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn create_topic(topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let t = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    let rt = tokio::runtime::Runtime::new().unwrap();
    for r in rt
        .block_on(admin.create_topics([&t], &AdminOptions::new()))
        .expect("the broker at S3E_KAFKA_BROKERS creates the topic")
    {
        r.unwrap();
    }
}

/// `n` JSON values round robin over the partitions, then one value that is
/// not JSON on partition 0.
fn produce(topic: &str, n: usize) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    for i in 0..n {
        let v = json!({"n": i}).to_string();
        p.send(
            BaseRecord::<(), String>::to(topic)
                .partition((i % PARTITIONS as usize) as i32)
                .payload(&v),
        )
        .unwrap();
        p.poll(Duration::ZERO);
    }
    p.send(
        BaseRecord::<(), str>::to(topic)
            .partition(0)
            .payload("not json"),
    )
    .unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
}

fn get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.parse().unwrap_or(0), body.to_owned())
}

/// The value of the sample `name{labels}` (labels as Prometheus renders
/// them, or none) in a `/metrics` text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// One instance reads a 3-partition topic with a message that is not JSON;
/// `/metrics` shows every message taken, the failure report, commits and
/// lag 0 on each partition; SIGTERM stops it with exit 0 and its summary;
/// `verify` finds every offset once in the directory it wrote.
#[test]
fn kafka_source_serves_health_and_metrics_and_stores_every_message_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic = format!("s3e-cli-kafka-{}-{nanos}", std::process::id());
    create_topic(&topic);
    let n = 300;
    produce(&topic, n);
    let cfg = dir.join("config.json");
    std::fs::write(
        &cfg,
        json!({"store": "local", "localDir": dir.join("data"), "flushSize": "40", "scheduledInterval": "1"})
            .to_string(),
    )
    .unwrap();
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = crate::util::s3_event("sink");
    cmd.current_dir(dir)
        .env_remove("S3E_METRICS_ADDR")
        .args(["--source", "kafka", "--config"])
        .arg(&cfg)
        .args(["--group", &format!("{topic}-g"), "--topic", &topic])
        .args(["--brokers", &brokers()])
        .args(["--metrics-addr", &addr.to_string()])
        .args(["--kafka-option", "session.timeout.ms=6000"])
        .stdout(Stdio::piped());
    let mut child = ChildGuard::spawn(&mut cmd);
    wait_for_port(addr, Duration::from_secs(30));
    let metrics = format!("http://{addr}/metrics");
    let deadline = Instant::now() + Duration::from_secs(90);
    let text = loop {
        let (code, text) = get(&metrics);
        assert_eq!(code, 200, "{text}");
        let lag0 = (0..PARTITIONS).all(|p| {
            sample(
                &text,
                &format!("s3_kafka_source_partition_lag{{topic=\"{topic}\",partition=\"{p}\"}}"),
            ) == Some(0.0)
        });
        let taken = sample(&text, "s3_kafka_source_messages_total") == Some((n + 1) as f64);
        let committed = (0..PARTITIONS).all(|p| {
            let end = (n / PARTITIONS as usize) as f64 + if p == 0 { 1.0 } else { 0.0 };
            sample(
                &text,
                &format!(
                    "s3_kafka_source_partition_committed{{topic=\"{topic}\",partition=\"{p}\"}}"
                ),
            ) == Some(end)
        });
        if lag0 && taken && committed {
            break text;
        }
        assert!(Instant::now() < deadline, "after 90 s:\n{text}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        sample(&text, "s3_kafka_source_failure_reports_total"),
        Some(1.0)
    );
    assert!(sample(&text, "s3_kafka_source_commits_total").unwrap() >= 1.0);
    assert!(sample(&text, "s3_kafka_source_objects_total").unwrap() >= 3.0);
    assert!(
        sample(&text, "s3_kafka_source_bytes_total").unwrap() > 0.0,
        "{text}"
    );
    for p in 0..PARTITIONS {
        let assigned =
            format!("s3_kafka_source_partition_assigned{{topic=\"{topic}\",partition=\"{p}\"}}");
        assert_eq!(sample(&text, &assigned), Some(1.0), "{text}");
    }
    let (code, health) = get(&format!("http://{addr}/health"));
    assert_eq!(code, 200);
    let h: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["messages"], n + 1);
    assert_eq!(h["partitions"].as_array().map(Vec::len), Some(3), "{h}");

    let mut stdout = child.0.as_mut().unwrap().stdout.take().unwrap();
    let status = child.terminate();
    assert!(status.success(), "{status}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    assert!(
        out.contains(&format!("metrics on http://{addr}/metrics")),
        "{out}"
    );
    assert!(
        out.contains(&format!("stopped: {} messages", n + 1)),
        "{out}"
    );

    let store = s3_event::sink::LocalDir::new(dir.join("data")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt
        .block_on(s3_event::sink::verify(
            &store,
            &s3_event::sink::VerifyOptions::default(),
        ))
        .unwrap();
    assert!(report.is_complete(), "{:#?}", report.problems);
    assert_eq!(report.records, (n + 1) as u64);
    assert_eq!(report.instances.len(), PARTITIONS as usize);
}
