//! `s3-event subscribe`: the reading side of the README's target
//! walkthroughs (AMQP, NATS, Kafka, MQTT), one message body per line.

use super::Exit;

/// AMQP: binds a fresh exclusive queue to the (fanout) exchange, declaring
/// the exchange as the target does if it is missing, so start this before
/// sending. NATS: a core subscription to the subject (JetStream publishes
/// reach it too). Kafka: reads what arrives on every partition of the topic,
/// creating the topic (3 partitions) when it is missing, as the target does
/// not create topics. MQTT: subscribes with QoS 1. Runs until Ctrl-C, or
/// exits after --count N messages.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The broker type.
    #[arg(value_enum)]
    kind: Kind,
    /// amqp: a URL (amqp://guest:guest@127.0.0.1:5672); nats: a URL
    /// (nats://127.0.0.1:4222); kafka: a broker (127.0.0.1:19092); mqtt:
    /// HOST:PORT.
    address: String,
    /// The exchange (amqp), subject (nats) or topic (kafka, mqtt).
    name: String,
    /// Exit after this many messages.
    #[arg(long)]
    count: Option<usize>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Kind {
    Amqp,
    Nats,
    Kafka,
    Mqtt,
}

pub fn run(args: Args) -> Exit {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Exit::Failed(format!("cannot start the runtime: {e}")),
    };
    let count = args.count.unwrap_or(usize::MAX);
    let (addr, name) = (args.address.as_str(), args.name.as_str());
    let result = rt.block_on(async {
        match args.kind {
            Kind::Amqp => amqp(addr, name, count).await,
            Kind::Nats => nats(addr, name, count).await,
            Kind::Kafka => kafka(addr, name, count).await,
            Kind::Mqtt => mqtt(addr, name, count).await,
        }
    });
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => Exit::Failed(e),
    }
}

fn print_body(body: &[u8]) {
    println!("{}", String::from_utf8_lossy(body));
}
async fn amqp(url: &str, exchange: &str, count: usize) -> Result<(), String> {
    use futures::StreamExt;
    use lapin::options::{
        BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{Connection, ConnectionProperties, ExchangeKind};

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

async fn nats(url: &str, subject: &str, count: usize) -> Result<(), String> {
    use futures::StreamExt;
    let client = async_nats::connect(url)
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

async fn kafka(broker: &str, topic: &str, count: usize) -> Result<(), String> {
    use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
    use rskafka::client::ClientBuilder;

    let client = ClientBuilder::new(vec![broker.to_owned()])
        .build()
        .await
        .map_err(|e| format!("connecting to {broker}: {e}"))?;
    let listed = |topics: &[rskafka::topic::Topic]| {
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

async fn mqtt(addr: &str, topic: &str, count: usize) -> Result<(), String> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
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
