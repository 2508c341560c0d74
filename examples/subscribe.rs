//! Prints what arrives on a broker: the reading side of the README's target
//! walkthroughs (AMQP, NATS, Kafka, MQTT), one message body per line.
//!
//! ```text
//! cargo run --example subscribe --features amqp  -- amqp  amqp://guest:guest@127.0.0.1:5672 bucketevents
//! cargo run --example subscribe --features nats  -- nats  nats://127.0.0.1:4222 bucketevents
//! cargo run --example subscribe --features kafka -- kafka 127.0.0.1:19092 bucketevents
//! cargo run --example subscribe --features mqtt  -- mqtt  127.0.0.1:1883 minio
//! ```
//!
//! AMQP: binds a fresh exclusive queue to the (fanout) exchange, declaring
//! the exchange as the target does if it is missing, so start this before
//! sending. NATS: a core subscription to the subject (JetStream publishes
//! reach it too). Kafka: reads what arrives on every partition of the topic,
//! creating the topic (3 partitions) when it is missing, as the target does
//! not create topics.
//! MQTT: subscribes with QoS 1. Runs until Ctrl-C, or exits after
//! `--count N` messages.

use std::process::ExitCode;

const USAGE: &str = "usage: subscribe (amqp URL EXCHANGE | nats URL SUBJECT | kafka BROKER TOPIC | mqtt HOST:PORT TOPIC) [--count N]";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut count = usize::MAX;
    if let Some(i) = args.iter().position(|a| a == "--count") {
        match args.get(i + 1).and_then(|n| n.parse().ok()) {
            Some(n) => count = n,
            None => {
                eprintln!("subscribe: --count needs a number\n{USAGE}");
                return ExitCode::from(2);
            }
        }
        args.drain(i..i + 2);
    }
    let [kind, addr, name] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match kind.as_str() {
        #[cfg(feature = "amqp")]
        "amqp" => amqp(addr, name, count).await,
        #[cfg(feature = "nats")]
        "nats" => nats(addr, name, count).await,
        #[cfg(feature = "kafka")]
        "kafka" => kafka(addr, name, count).await,
        #[cfg(feature = "mqtt")]
        "mqtt" => mqtt(addr, name, count).await,
        other => Err(format!(
            "`{other}` is not a broker this build knows (build with --features {other})\n{USAGE}"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("subscribe: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(dead_code)]
fn print_body(body: &[u8]) {
    println!("{}", String::from_utf8_lossy(body));
}

#[cfg(feature = "amqp")]
async fn amqp(url: &str, exchange: &str, count: usize) -> Result<(), String> {
    use futures::StreamExt;
    use s3_event::targets::amqp::lapin::options::{
        BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use s3_event::targets::amqp::lapin::types::FieldTable;
    use s3_event::targets::amqp::lapin::{Connection, ConnectionProperties, ExchangeKind};

    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ch.exchange_declare(
        exchange.into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("declaring exchange {exchange}: {e}"))?;
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    ch.queue_bind(
        q.name().clone(),
        exchange.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut consumer = ch
        .basic_consume(
            q.name().clone(),
            "subscribe".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("subscribe: queue {} bound to exchange {exchange}", q.name());
    let mut seen = 0;
    while seen < count {
        match consumer.next().await {
            Some(Ok(delivery)) => print_body(&delivery.data),
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
        seen += 1;
    }
    Ok(())
}

#[cfg(feature = "nats")]
async fn nats(url: &str, subject: &str, count: usize) -> Result<(), String> {
    use futures::StreamExt;
    let client = s3_event::targets::nats::async_nats::connect(url)
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    let mut sub = client
        .subscribe(subject.to_owned())
        .await
        .map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())?;
    eprintln!("subscribe: subscribed to {subject}");
    let mut seen = 0;
    while seen < count {
        let Some(msg) = sub.next().await else { break };
        print_body(&msg.payload);
        seen += 1;
    }
    Ok(())
}

#[cfg(feature = "kafka")]
async fn kafka(broker: &str, topic: &str, count: usize) -> Result<(), String> {
    use s3_event::targets::kafka::rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
    use s3_event::targets::kafka::rskafka::client::ClientBuilder;

    let client = ClientBuilder::new(vec![broker.to_owned()])
        .build()
        .await
        .map_err(|e| format!("connecting to {broker}: {e}"))?;
    let listed = |topics: &[s3_event::targets::kafka::rskafka::topic::Topic]| {
        topics
            .iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.iter().copied().collect::<Vec<i32>>())
    };
    let topics = client.list_topics().await.map_err(|e| e.to_string())?;
    let partitions = match listed(&topics) {
        Some(p) => p,
        None => {
            client
                .controller_client()
                .map_err(|e| e.to_string())?
                .create_topic(topic, 3, 1, 5_000)
                .await
                .map_err(|e| format!("creating topic {topic}: {e}"))?;
            eprintln!("subscribe: created topic {topic} (3 partitions)");
            loop {
                let topics = client.list_topics().await.map_err(|e| e.to_string())?;
                if let Some(p) = listed(&topics).filter(|p| p.len() == 3) {
                    break p;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    eprintln!(
        "subscribe: topic {topic}, {} partition(s)",
        partitions.len()
    );
    let mut clients = Vec::new();
    for p in partitions {
        let pc = client
            .partition_client(topic.to_owned(), p, UnknownTopicHandling::Retry)
            .await
            .map_err(|e| e.to_string())?;
        // Like the other brokers here: only what arrives from now on.
        let latest = pc
            .get_offset(OffsetAt::Latest)
            .await
            .map_err(|e| e.to_string())?;
        clients.push((pc, latest));
    }
    let mut seen = 0;
    while seen < count {
        let mut got = false;
        for (pc, offset) in &mut clients {
            let (records, _high) = pc
                .fetch_records(*offset, 1..1_000_000, 200)
                .await
                .map_err(|e| e.to_string())?;
            for r in records {
                *offset = r.offset + 1;
                print_body(&r.record.value.unwrap_or_default());
                seen += 1;
                got = true;
            }
        }
        if !got {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

#[cfg(feature = "mqtt")]
async fn mqtt(addr: &str, topic: &str, count: usize) -> Result<(), String> {
    use s3_event::targets::mqtt::rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("`{addr}` is not HOST:PORT"))?;
    let opts = MqttOptions::new(format!("subscribe-{}", std::process::id()), host, port);
    let (client, mut events) = AsyncClient::new(opts, 64);
    client
        .subscribe(topic, QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    let mut seen = 0;
    while seen < count {
        match events.poll().await.map_err(|e| e.to_string())? {
            Event::Incoming(Packet::SubAck(_)) => eprintln!("subscribe: subscribed to {topic}"),
            Event::Incoming(Packet::Publish(p)) => {
                print_body(&p.payload);
                seen += 1;
            }
            _ => {}
        }
    }
    Ok(())
}
