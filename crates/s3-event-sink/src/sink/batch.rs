//! Open batches: appending records, closing batches by the flush policy,
//! and handing closed batches (with their close frames) to the uploader.

use super::*;

/// An open batch's bytes: encoded in `push`, or gzip compressed in the
/// background ([`SinkBuilder::with_background_compression`]).
pub(super) enum Body {
    Inline(BatchEncoder),
    Piped(GzipPipe),
}

/// A closed batch's object: ready, or being compressed.
pub(super) enum Payload {
    Ready(bytes::Bytes),
    Compressing(crate::pipe::Finished),
}

impl Body {
    pub(super) fn len(&self) -> usize {
        match self {
            Body::Inline(e) => e.len(),
            Body::Piped(p) => p.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn encoded_len(&self) -> usize {
        match self {
            Body::Inline(e) => e.encoded_len(),
            Body::Piped(p) => p.encoded_len(),
        }
    }

    pub(super) fn push_checked(&mut self, record: &[u8]) -> Result<()> {
        match self {
            Body::Inline(e) => e.push_checked(record),
            Body::Piped(p) => {
                p.push_checked(record);
                Ok(())
            }
        }
    }

    pub(super) fn finish(self) -> Result<Payload> {
        Ok(match self {
            Body::Inline(e) => Payload::Ready(e.finish()?.into()),
            Body::Piped(p) => Payload::Compressing(p.finish()),
        })
    }
}

pub(super) struct OpenBatch {
    /// Encoded as the batch's sink says; the batch's own encoding and
    /// compression are the sink's.
    pub(super) encoder: Body,
    pub(super) deadline: Instant,
    pub(super) opened: u64,
    /// Spool sequence numbers of the events, in order (empty without a spool).
    pub(super) seqs: Vec<u64>,
}

/// One independently locked set of open batches. Concurrent pushers take
/// different shards, so their encoding (gzip) runs in parallel; each shard
/// keeps its own batch per partition.
#[derive(Default)]
pub(super) struct Shard {
    pub(super) batches: HashMap<String, OpenBatch>,
    pub(super) next_opened: u64,
    /// Closed batches waiting for the spool write that covers their close
    /// frame (in [`Job::close`], numbered when written).
    pub(super) outbox: Vec<Job>,
}

impl Inner {
    /// A shard for a pusher whose first event goes to `partition`: the
    /// partition's own shard when it is free (so a partition's events, and
    /// its deflate state, stay on one shard and objects fill up), else the
    /// next free one, else the partition's shard once it is free.
    pub(super) fn pick_shard(&self, partition: &str) -> (usize, MutexGuard<'_, Shard>) {
        let n = self.shards.len();
        if n == 1 {
            return (0, relock(&self.shards[0]));
        }
        let home = {
            use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
            BuildHasherDefault::<DefaultHasher>::default().hash_one(partition) as usize % n
        };
        for k in 0..n {
            let id = (home + k) % n;
            if let Ok(g) = self.shards[id].try_lock() {
                return (id, g);
            }
        }
        (home, relock(&self.shards[home]))
    }

    pub(super) fn key(&self, partition: &str, seq: u64, ext: &str) -> Result<Path> {
        let key = match self.naming {
            KeyNaming::Sequence => format!(
                "{}{}{}-{:020}{}",
                self.prefix, partition, self.instance_id, seq, ext
            ),
            KeyNaming::Uuid => {
                let name = format!("{}-{seq}", self.instance_id);
                let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes());
                format!("{}{}{}{}", self.prefix, partition, id, ext)
            }
        };
        Path::parse(&key).map_err(|source| Error::InvalidKey { key, source })
    }

    /// The key of a spooled batch whose first delivery number is `number`
    /// (the close frame's own key, which named it by its first event, if
    /// that could not be made: it cannot, the partition passed before).
    pub(super) fn numbered_key(&self, c: &CloseFrame, number: u64) -> String {
        let ext = format!("{}{}", c.encoding.extension(), c.compression.extension());
        self.key(&c.partition, number, &ext)
            .map_or_else(|_| c.key.clone(), |p| p.to_string())
    }

    /// Closes `partition`'s batch in `shard` (if open): puts it and its close
    /// frame in the shard's outbox. [`Inner::commit`] writes and sends them.
    pub(super) fn close(&self, shard_id: usize, shard: &mut Shard, partition: &str) -> Result<()> {
        let Some(batch) = shard.batches.remove(partition) else {
            return Ok(());
        };
        if batch.encoder.is_empty() {
            return Ok(());
        }
        let (encoding, compression) = (self.encoding, self.compression);
        let ext = format!("{}{}", encoding.extension(), compression.extension());
        let spooled = self.spool.is_some();
        let seq = match batch.seqs.first() {
            Some(&s) if spooled => s,
            _ => self.batch_seq.fetch_add(1, Ordering::Relaxed),
        };
        let path = self.key(partition, seq, &ext)?;
        let content_type = encoding.content_type();
        let content_encoding = compression.content_encoding();
        let records = batch.encoder.len() as u64;
        let payload = batch.encoder.finish()?;
        let close = spooled.then(|| CloseFrame {
            number: None,
            records,
            key_seq: seq,
            last_seq: *batch.seqs.last().expect("a spooled batch has events"),
            shard: shard_id as u16,
            encoding,
            compression,
            partition: partition.to_owned(),
            key: path.to_string(),
        });
        shard.outbox.push(Job {
            key: path,
            ext,
            payload,
            content_type,
            content_encoding,
            records,
            spooled: spooled.then_some((seq, batch.seqs)),
            close,
            durable_at: 0,
        });
        Ok(())
    }

    /// Writes the shard's close frames to the spool and sends its outbox to
    /// the uploader; returns the token that makes the frames durable. If the
    /// write fails, the close frames and their batches stay in the shard, to
    /// be written and sent by a later call (the background task retries).
    pub(super) fn commit(&self, shard: &mut Shard) -> Result<u64> {
        let mut pos = 0;
        if let Some(spool) = &self.spool {
            if !shard.outbox.is_empty() {
                let closes = shard.outbox.iter_mut().filter_map(|j| j.close.as_mut());
                pos = relock(spool)
                    .write_closes(closes, |c, n| self.numbered_key(c, n))
                    .map_err(|e| self.spool_err(e))?;
                for job in &mut shard.outbox {
                    if let Some(c) = &job.close {
                        job.key = Path::parse(&c.key).map_err(|source| Error::InvalidKey {
                            key: c.key.clone(),
                            source,
                        })?;
                    }
                }
            }
        }
        for mut job in shard.outbox.drain(..) {
            job.durable_at = pos;
            self.pending.send_modify(|n| *n += 1);
            if self.tx.send(job).is_err() {
                // The background task is gone (shutdown): nothing will upload it.
                self.pending.send_modify(|n| *n -= 1);
                return Err(Error::Shutdown);
            }
        }
        Ok(pos)
    }

    /// Appends one record (already in the spool as `seq`) to its
    /// partition's batch in `shard`, closing batches as the flush policy says.
    pub(super) fn append(
        &self,
        shard_id: usize,
        shard: &mut Shard,
        partition: &str,
        record: &[u8],
        seq: Option<u64>,
    ) -> Result<()> {
        // Uncompressed, the size is exact: close first if this record would
        // take the batch past max_bytes. Compressed, the record's share is
        // unknown until written, so the check after the append decides.
        if self.exact_size() {
            if let Some(b) = shard
                .batches
                .get(partition)
                .filter(|b| !b.encoder.is_empty())
            {
                if b.encoder.encoded_len() + record.len() + 1 > self.max_bytes {
                    self.close(shard_id, shard, partition)?;
                }
            }
        }
        if !shard.batches.contains_key(partition) {
            if shard.batches.len() >= self.max_open_batches {
                let oldest = shard
                    .batches
                    .iter()
                    .min_by_key(|(_, b)| b.opened)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.close(shard_id, shard, &oldest)?;
                }
            }
            let opened = shard.next_opened;
            shard.next_opened += 1;
            shard.batches.insert(
                partition.to_owned(),
                OpenBatch {
                    encoder: match self.compression {
                        Compression::Gzip { level } if self.background_compression => {
                            Body::Piped(GzipPipe::new(self.encoding, level, self.max_bytes))
                        }
                        _ => Body::Inline(self.encoder()),
                    },
                    deadline: Instant::now() + self.flush_interval,
                    opened,
                    seqs: Vec::new(),
                },
            );
            self.wake.notify_one();
        }
        let batch = shard
            .batches
            .get_mut(partition)
            .expect("batch was just inserted");
        batch.encoder.push_checked(record)?;
        if let Some(s) = seq {
            batch.seqs.push(s);
        }
        // Compressed, `encoded_len` is an estimate of what `finish` will
        // produce; keep a record's worth (plus a margin) of headroom for it.
        let limit = if self.exact_size() {
            self.max_bytes
        } else {
            self.max_bytes
                .saturating_sub(record.len() + GZIP_HEADROOM)
                .max(1)
        };
        if batch.encoder.len() >= self.flush_size || batch.encoder.encoded_len() >= limit {
            self.close(shard_id, shard, partition)?;
        }
        Ok(())
    }

    /// Checks what `BatchEncoder::push_raw` would reject, before the record
    /// goes into the spool.
    pub(super) fn check_record(&self, index: usize, record: &[u8]) -> Result<()> {
        let res = match crate::encode::invalid_record(self.encoding, record) {
            Some(reason) => Err(Error::InvalidRecord { index, reason }),
            None => self.check_parquet(index, record),
        };
        if res.is_err() {
            self.counters
                .records_refused
                .fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    /// Parquet: whether the record fits the schema (an inferred schema is
    /// inferred here, from the first record, which the spool keeps).
    #[cfg(feature = "parquet")]
    fn check_parquet(&self, index: usize, record: &[u8]) -> Result<()> {
        let Encoding::Parquet(opts) = self.encoding else {
            return Ok(());
        };
        let mismatch = |reason| Error::RecordMismatch { index, reason };
        let inferred = match opts.schema {
            crate::ParquetSchema::Inferred => Some(match self.parquet_schema.get() {
                Some(s) => s,
                None => self.infer_schema(index, record)?,
            }),
            _ => None,
        };
        crate::columnar::check(opts.schema, inferred.map(|s| &**s), record).map_err(mismatch)
    }

    /// Infers the Parquet schema from `record` and, with a spool, keeps the
    /// record there first (under the spool's lock, so that concurrent
    /// pushers keep one record and set one schema).
    #[cfg(feature = "parquet")]
    fn infer_schema(&self, index: usize, record: &[u8]) -> Result<&arrow_schema::SchemaRef> {
        let mismatch = |reason| Error::RecordMismatch { index, reason };
        let mut sp = self.spool.as_ref().map(relock);
        if let Some(s) = self.parquet_schema.get() {
            return Ok(s);
        }
        let obj = match serde_json::from_slice(record) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return Err(mismatch("not a JSON object".to_owned())),
        };
        let s = crate::columnar::infer(&obj).map_err(mismatch)?;
        if let Some(sp) = &mut sp {
            sp.keep_schema_record(record)
                .map_err(|e| self.spool_err(e))?;
        }
        let _ = self.parquet_schema.set(Arc::new(s));
        Ok(self.parquet_schema.get().expect("the schema was just set"))
    }

    #[cfg(not(feature = "parquet"))]
    fn check_parquet(&self, _index: usize, _record: &[u8]) -> Result<()> {
        Ok(())
    }

    /// Whether `encoded_len` is exact: no compression, not Parquet.
    pub(super) fn exact_size(&self) -> bool {
        self.compression == Compression::None && !self.encoding.is_parquet()
    }

    /// A new batch's encoder.
    pub(super) fn encoder(&self) -> BatchEncoder {
        let enc =
            BatchEncoder::new(self.encoding, self.compression).with_target_size(self.max_bytes);
        #[cfg(feature = "parquet")]
        let enc = enc.with_parquet_schema(self.parquet_schema.get().cloned());
        enc
    }

    pub(super) fn close_all(&self) -> Result<()> {
        for (id, shard) in self.shards.iter().enumerate() {
            let mut shard = relock(shard);
            let keys: Vec<String> = shard.batches.keys().cloned().collect();
            for k in keys {
                self.close(id, &mut shard, &k)?;
            }
            self.commit(&mut shard)?;
        }
        Ok(())
    }

    /// Closes the batches whose deadline has passed; returns the earliest
    /// remaining deadline.
    pub(super) fn close_expired(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut earliest: Option<Instant> = None;
        for (id, shard) in self.shards.iter().enumerate() {
            let mut shard = relock(shard);
            let expired: Vec<String> = shard
                .batches
                .iter()
                .filter(|(_, b)| b.deadline <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for k in expired {
                // A key error here would also have failed at push time.
                if let Err(e) = self.close(id, &mut shard, &k) {
                    tracing::error!(partition = %k, error = %e, "sink: closing a batch failed");
                }
            }
            let mut next = shard.batches.values().map(|b| b.deadline).min();
            if let Err(e) = self.commit(&mut shard) {
                tracing::error!(error = %e, "sink: writing close frames failed; retrying");
                let retry = now + COMMIT_RETRY;
                next = Some(next.map_or(retry, |n| n.min(retry)));
            }
            earliest = match (earliest, next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        earliest
    }
}
