//! The uploader: a background task that closes batches on time and runs
//! bounded concurrent uploads, each retried until its object is stored.

use super::*;
use s3_event_core::retry::Retry;

pub(super) struct Job {
    pub(super) key: Path,
    /// The key's extension (`.ndjson.gz`), for alternate keys.
    pub(super) ext: String,
    pub(super) payload: Payload,
    pub(super) content_type: &'static str,
    pub(super) content_encoding: Option<&'static str>,
    /// The number of records.
    pub(super) records: u64,
    /// The spool batch: its key sequence number and events.
    pub(super) spooled: Option<(u64, Vec<u64>)>,
    /// Its close frame, written again if the fsync that covered it failed;
    /// its delivery numbers go into the manifest.
    pub(super) close: Option<CloseFrame>,
    /// The logical spool position the close frame must be durable to.
    pub(super) durable_at: u64,
}

pub(super) async fn background(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut uploads = tokio::task::JoinSet::new();
    loop {
        let next = inner.close_expired();
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let room = uploads.len() < inner.max_concurrent_uploads;
        tokio::select! {
            () = sleep => {}
            () = inner.wake.notified() => {
                if inner.stop.load(Ordering::Acquire) && *inner.pending.borrow() == 0 {
                    break;
                }
            }
            job = rx.recv(), if room => match job {
                Some(job) => {
                    uploads.spawn(upload(Arc::clone(&inner), job));
                }
                None => break,
            },
            Some(_) = uploads.join_next(), if !uploads.is_empty() => {}
        }
    }
    while uploads.join_next().await.is_some() {}
}

/// Stores `job` once: create-only under its key, or, when another batch's
/// object holds that key, under the next free alternate key (see
/// [`crate::upload`]). Returns the key it is stored under.
pub(super) async fn store_job(
    inner: &Inner,
    job: &Job,
    bytes: &bytes::Bytes,
    manifest: &crate::Manifest,
) -> object_store::Result<Path> {
    let mut n = 0;
    loop {
        let key = crate::upload::alternate(&job.key, &job.ext, n);
        let put = crate::upload::Put {
            store: &*inner.store,
            content_type: job.content_type,
            content_encoding: job.content_encoding,
            part_size: inner.part_size,
            attributes: inner.attributes_supported.load(Ordering::Relaxed),
            create: inner.create_supported.load(Ordering::Relaxed),
            manifest: Some(manifest),
        };
        match put.put(&key, bytes).await {
            Ok(()) => return Ok(key),
            Err(object_store::Error::NotImplemented { operation, .. }) => {
                if put.attributes {
                    // The store keeps no attributes: no content type, no
                    // manifest.
                    tracing::warn!(%operation, "sink: the store keeps no object attributes; objects go up without their delivery manifest");
                    inner.attributes_supported.store(false, Ordering::Relaxed);
                } else if put.create {
                    tracing::warn!(%operation, "sink: the store has no create-only puts; a key reused by another batch would be overwritten");
                    inner.create_supported.store(false, Ordering::Relaxed);
                } else {
                    return Err(object_store::Error::NotImplemented {
                        operation,
                        implementer: inner.store.to_string(),
                    });
                }
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                if put.holds(&key, bytes).await? {
                    // Stored by an earlier attempt (a lost reply, or before
                    // a crash): done.
                    return Ok(key);
                }
                inner
                    .counters
                    .key_collisions
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    key = %key,
                    "sink: the key holds another batch's object (a reused instance id or a wiped spool?); not overwriting it, trying the next alternate key"
                );
                n += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Uploads one closed batch: waits for its close frame to be durable,
/// stores it (retrying until it is stored), then marks it uploaded in the
/// spool.
pub(super) async fn upload(inner: Arc<Inner>, mut job: Job) {
    let Some(bytes) = take_payload(&mut job).await else {
        inner.pending.send_modify(|n| *n -= 1);
        return;
    };
    let len = bytes.len() as u64;
    await_close_frame(&inner, &job).await;
    let number = job.close.as_ref().and_then(|c| c.number);
    let manifest = match number {
        Some(first) => crate::Manifest::numbered(&bytes, job.records, first, &inner.instance_id),
        // Without a spool: no numbers; a batch closed by an older version:
        // its event sequence numbers.
        None => {
            let seqs = job.spooled.as_ref().map_or(&[][..], |(_, s)| &s[..]);
            crate::Manifest::new(&bytes, job.records, seqs, &inner.instance_id)
        }
    };
    let key = store_until_done(&inner, &job, &bytes, &manifest).await;
    tracing::info!(key = %key, bytes = len, "upload file {} completed", key);
    if let Some((key_seq, seqs)) = &job.spooled {
        let end = job.close.as_ref().and_then(|c| Some(c.number? + c.records));
        inner.uploaded(*key_seq, seqs, end).await;
    }
    let c = &inner.counters;
    c.objects_uploaded.fetch_add(1, Ordering::Relaxed);
    c.bytes_uploaded.fetch_add(len, Ordering::Relaxed);
    inner.pending.send_modify(|n| *n -= 1);
}

/// The object's bytes, once compressed; `None` if compression failed,
/// which cannot happen short of a deflate bug or the runtime going away
/// (the events stay in the spool, if any, and are uploaded on restart).
async fn take_payload(job: &mut Job) -> Option<bytes::Bytes> {
    match std::mem::replace(&mut job.payload, Payload::Ready(bytes::Bytes::new())) {
        Payload::Ready(b) => Some(b),
        Payload::Compressing(rx) => match rx.await {
            Ok(Ok(v)) => Some(v.into()),
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the compression task did not finish".to_owned(),
                };
                tracing::error!(key = %job.key, %error, "sink: compressing a batch failed; not uploaded");
                None
            }
        },
    }
}

/// Returns once the job's close frame is on disk: the object must not exist
/// before it. If the fsync round that covered the frame failed, the frame
/// may be lost whatever later rounds say, so it is written again.
async fn await_close_frame(inner: &Inner, job: &Job) {
    let (Some(log), Some(_)) = (&inner.log, &job.spooled) else {
        return;
    };
    let mut at = job.durable_at;
    let mut attempt: u32 = 0;
    while let Err(e) = inner.synced(log, at).await {
        tracing::error!(error = %e, key = %job.key, "spool: fsync failed before an upload; writing the close frame again");
        tokio::time::sleep(inner.backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
        if let (Some(spool), Some(c)) = (&inner.spool, &job.close) {
            // It was written once, so it keeps its numbers.
            let mut c = c.clone();
            match relock(spool).write_closes([&mut c], |c, _| c.key.clone()) {
                Ok(t) => at = t,
                Err(e) => {
                    tracing::error!(error = %e, "spool: writing a close frame failed; retrying")
                }
            }
        }
    }
}

/// Stores the job, retrying every failure with backoff: a failure retrying
/// cannot fix (refused credentials, a missing bucket) is counted and makes
/// the sink report itself degraded until an upload succeeds, but the batch
/// is kept and retried (the operator may fix the store). Returns the key.
async fn store_until_done(
    inner: &Inner,
    job: &Job,
    bytes: &bytes::Bytes,
    manifest: &crate::Manifest,
) -> Path {
    let mut attempt: u32 = 0;
    loop {
        match store_job(inner, job, bytes, manifest).await {
            Ok(key) => {
                if relock(&inner.degraded).take().is_some() {
                    tracing::info!(key = %key, "sink: uploads work again");
                }
                return key;
            }
            Err(e) => {
                let c = &inner.counters;
                c.upload_retries.fetch_add(1, Ordering::Relaxed);
                match crate::upload::classify(&e) {
                    Retry::Permanent(reason) => {
                        c.upload_permanent_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            key = %job.key, attempt, %reason,
                            "sink: upload failed and retrying will not help until the store's configuration is fixed; the batch is kept and retried"
                        );
                        *relock(&inner.degraded) = Some(reason);
                    }
                    _ => {
                        tracing::warn!(key = %job.key, attempt, error = %e, "sink: upload failed; retrying")
                    }
                }
                tokio::time::sleep(inner.backoff(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}
