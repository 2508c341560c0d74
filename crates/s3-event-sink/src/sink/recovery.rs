//! On start: uploading what a previous process left in the spool.

use super::*;

/// Starts uploading what a previous process left in the spool: closed
/// batches under their recorded keys, unclosed events as new batches. Runs
/// on a blocking thread, reading the spool a chunk at a time and waiting for
/// room among the pending uploads, so memory stays bounded by a few encoded
/// batches however large the spool is; [`Sink::flush`] waits for it.
pub(super) fn start_replay(inner: &Arc<Inner>, recovered: Recovered) -> JoinHandle<()> {
    if recovered.torn_bytes > 0 {
        tracing::warn!(
            bytes = recovered.torn_bytes,
            "sink: cut a torn spool tail on start"
        );
    }
    inner.pending.send_modify(|n| *n += 1);
    let inner = Arc::clone(inner);
    let rt = tokio::runtime::Handle::current();
    let blocking = tokio::task::spawn_blocking(move || {
        if let Err(e) = inner.replay(recovered, &rt) {
            tracing::error!(error = %e, "sink: replaying the spool failed; its events stay there for the next start");
        }
        inner.pending.send_modify(|n| *n -= 1);
        inner.wake.notify_one();
    });
    tokio::spawn(async move {
        let _ = blocking.await;
    })
}

impl Inner {
    /// Closes the events a previous process left in no closed batch, before
    /// any new event is spooled: a close frame covers every earlier event of
    /// its shard and partition, so one written after new events of the same
    /// shard and partition would, on the next start, take those into the
    /// wrong batch. Counts the recovered events.
    /// First, with an inferred Parquet schema, loads the one the spool kept.
    pub(super) fn close_recovered(&self, mut recovered: Recovered) -> Result<Recovered> {
        #[cfg(feature = "parquet")]
        self.load_kept_schema()?;
        let events: u64 = recovered
            .closed
            .iter()
            .chain(&recovered.open)
            .map(|b| b.count)
            .sum();
        self.counters
            .events_recovered
            .store(events, Ordering::Relaxed);
        let Some(spool) = &self.spool else {
            return Ok(recovered);
        };
        if recovered.open.is_empty() {
            return Ok(recovered);
        }
        let ext = format!(
            "{}{}",
            self.encoding.extension(),
            self.compression.extension()
        );
        let mut closes = Vec::with_capacity(recovered.open.len());
        for b in &mut recovered.open {
            let key = self.key(&b.partition, b.key_seq, &ext)?;
            b.encoding = self.encoding;
            b.compression = self.compression;
            b.key = Some(key.to_string());
            closes.push(CloseFrame {
                number: None,
                records: b.count,
                key_seq: b.key_seq,
                last_seq: b.last_seq,
                // Closed under the shard that wrote the events, so a replay
                // of this frame finds them.
                shard: b.shard,
                encoding: b.encoding,
                compression: b.compression,
                partition: b.partition.clone(),
                key: key.to_string(),
            });
        }
        let token = relock(spool)
            .write_closes(&mut closes, |c, n| self.numbered_key(c, n))
            .map_err(|e| self.spool_err(e))?;
        for (b, c) in recovered.open.iter_mut().zip(closes) {
            b.durable_at = token;
            b.number = c.number;
            b.key = Some(c.key);
        }
        Ok(recovered)
    }

    pub(super) fn replay(&self, recovered: Recovered, rt: &tokio::runtime::Handle) -> Result<()> {
        let Some(spool) = &self.spool else {
            return Ok(());
        };
        let log = relock(spool).log();
        let segments = recovered.segments;
        let batches: Vec<PendingBatch> =
            recovered.closed.into_iter().chain(recovered.open).collect();
        let mut building: HashMap<usize, (BatchEncoder, Vec<u64>)> = HashMap::new();
        let mut failed = None;
        spool::replay(&log, &segments, &batches, |i, event| {
            let b = &batches[i];
            let (encoding, compression) = (b.encoding, b.compression);
            match event {
                Some((seq, record)) => {
                    let (enc, seqs) = building.entry(i).or_insert_with(|| {
                        (self.recovery_encoder(encoding, compression), Vec::new())
                    });
                    if let Err(e) = push_recovered(enc, record) {
                        failed.get_or_insert(e);
                    }
                    seqs.push(seq);
                }
                None => {
                    let Some((enc, seqs)) = building.remove(&i) else {
                        return;
                    };
                    if let Err(e) = self.requeue(b, enc, seqs, rt) {
                        failed.get_or_insert(e);
                    }
                }
            }
        })
        .map_err(|e| self.spool_err(e))?;
        failed.map_or(Ok(()), Err)
    }

    /// With an inferred Parquet schema: infers it from the record the spool
    /// kept, so this process writes the schema the last one did. A kept
    /// record that no longer gives a schema fails the start, naming the
    /// file (delete it to infer a new schema from the next event).
    #[cfg(feature = "parquet")]
    pub(super) fn load_kept_schema(&self) -> Result<()> {
        let (Encoding::Parquet(opts), Some(spool)) = (self.encoding, &self.spool) else {
            return Ok(());
        };
        if opts.schema != crate::ParquetSchema::Inferred {
            return Ok(());
        }
        let path = std::path::Path::new(&self.spool_dir).join(spool::SCHEMA_FILE);
        let bad = |source: std::io::Error| {
            self.spool_err(s3_event_core::log::Error::Io {
                op: "read the record the Parquet schema was inferred from",
                path: path.clone(),
                source,
            })
        };
        let Some(record) = relock(spool).kept_schema_record().map_err(bad)? else {
            return Ok(());
        };
        let invalid = |m: String| bad(std::io::Error::new(std::io::ErrorKind::InvalidData, m));
        let obj = match serde_json::from_slice(&record) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return Err(invalid("not a JSON object".to_owned())),
        };
        let schema = crate::columnar::infer(&obj).map_err(invalid)?;
        let _ = self.parquet_schema.set(Arc::new(schema));
        Ok(())
    }

    /// The encoder of a recovered batch: with an inferred Parquet schema,
    /// the one the spool kept (the records were checked against it), or,
    /// from a spool that kept none (written before it did), one inferred
    /// from all of the batch's records.
    fn recovery_encoder(&self, encoding: Encoding, compression: Compression) -> BatchEncoder {
        let enc = BatchEncoder::new(encoding, compression);
        #[cfg(feature = "parquet")]
        if let Some(s) = self.parquet_schema.get() {
            return enc.with_parquet_schema(Some(Arc::clone(s)));
        }
        enc.infer_from_all()
    }

    /// Queues one recovered batch for upload once there is room, writing
    /// its close frame first if it had none.
    pub(super) fn requeue(
        &self,
        b: &PendingBatch,
        enc: BatchEncoder,
        seqs: Vec<u64>,
        rt: &tokio::runtime::Handle,
    ) -> Result<()> {
        let limit = self.max_concurrent_uploads * 2 + 1;
        rt.block_on(async {
            let mut rx = self.pending.subscribe();
            let _ = rx.wait_for(|n| *n < limit).await;
        });
        let k = b
            .key
            .clone()
            .expect("recovered batches are closed on start");
        let key = Path::parse(&k).map_err(|source| Error::InvalidKey { key: k, source })?;
        let close = CloseFrame {
            number: b.number,
            records: b.count,
            key_seq: b.key_seq,
            last_seq: b.last_seq,
            shard: b.shard,
            encoding: enc.encoding(),
            compression: enc.compression(),
            partition: b.partition.clone(),
            key: key.to_string(),
        };
        let durable_at = b.durable_at;
        tracing::info!(key = %key, events = seqs.len(), "sink: re-uploading a spooled batch");
        let (content_type, content_encoding) = (enc.content_type(), enc.content_encoding());
        let records = enc.len() as u64;
        let job = Job {
            key,
            ext: enc.extension(),
            payload: Payload::Ready(enc.finish()?.into()),
            content_type,
            content_encoding,
            records,
            spooled: Some((b.key_seq, seqs)),
            close: Some(close),
            durable_at,
        };
        self.pending.send_modify(|n| *n += 1);
        if self.tx.send(job).is_err() {
            self.pending.send_modify(|n| *n -= 1);
            return Err(Error::Shutdown);
        }
        Ok(())
    }
}

/// Adds a recovered record to its batch. A record the current encoding
/// refuses (one with raw newlines, spooled while the sink wrote JSON arrays,
/// now NDJSON) is the same JSON with those newlines as spaces: a raw newline
/// can only be whitespace between JSON tokens.
pub(super) fn push_recovered(enc: &mut BatchEncoder, record: &[u8]) -> Result<()> {
    match crate::encode::invalid_record(enc.encoding(), record) {
        None => enc.push_raw(record),
        Some(_) if memchr::memchr(b'\n', record).is_some() => {
            let flat: Vec<u8> = record
                .iter()
                .map(|&b| if b == b'\n' { b' ' } else { b })
                .collect();
            enc.push_raw(&flat)
        }
        Some(reason) => {
            tracing::error!(reason, "sink: a spooled record cannot be encoded; skipped");
            Ok(())
        }
    }
}
