//! Writing one object: create-only puts, telling a re-upload of the same
//! batch from a collision, and which store errors retrying cannot fix.
//!
//! An object, once stored, is never overwritten with different content:
//! every put is create-only where the store supports it (`PutMode::Create`:
//! `If-None-Match: *` on S3 and SeaweedFS, a no-replace rename on a local
//! directory, the in-memory store). A put that finds its key taken reads the
//! stored object back: the same bytes mean this batch was stored by an
//! earlier attempt (a reply lost, a crash after the upload), so it is done;
//! other bytes mean another batch owns the key (a wiped spool, a fixed
//! instance id reused without its spool), and the batch goes to the next
//! free alternate key `{name}-r{n}{ext}`, probed in order, so a retry of
//! that batch finds its own object again. Multipart uploads (objects over
//! the part size) have no create-only mode in `object_store`: the key is
//! checked with a HEAD first, which leaves a window only for a concurrent
//! writer of the same key.

use bytes::Bytes;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions,
    PutPayload,
};
use s3_event_core::retry::Retry;

/// What one put needs to know.
pub(crate) struct Put<'a> {
    pub store: &'a dyn ObjectStore,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
    pub part_size: usize,
    /// Send `Content-Type`/`Content-Encoding` (off for stores that refuse
    /// attributes).
    pub attributes: bool,
    /// Create-only (off for stores that do not support it).
    pub create: bool,
    /// The delivery manifest, sent as user metadata with the other
    /// attributes.
    pub manifest: Option<&'a crate::Manifest>,
}

/// The key `n` collisions after `key`: `{name}-r{n}{ext}`.
pub(crate) fn alternate(key: &Path, ext: &str, n: u32) -> Path {
    if n == 0 {
        return key.clone();
    }
    let s = key.as_ref();
    let stem = s.strip_suffix(ext).unwrap_or(s);
    Path::from(format!("{stem}-r{n}{ext}"))
}

impl Put<'_> {
    /// One attempt at storing `bytes` under `key`: a single put, or a
    /// multipart upload above the part size. Fails with
    /// `AlreadyExists` when create-only and the key is taken.
    pub async fn put(&self, key: &Path, bytes: &Bytes) -> object_store::Result<()> {
        let mut attributes = Attributes::new();
        if self.attributes {
            attributes.insert(Attribute::ContentType, self.content_type.into());
            if let Some(ce) = self.content_encoding {
                attributes.insert(Attribute::ContentEncoding, ce.into());
            }
            if let Some(m) = self.manifest {
                m.add_to(&mut attributes);
            }
        }
        if bytes.len() <= self.part_size {
            let opts = PutOptions {
                attributes,
                mode: if self.create {
                    PutMode::Create
                } else {
                    PutMode::Overwrite
                },
                ..PutOptions::default()
            };
            self.store
                .put_opts(key, PutPayload::from_bytes(bytes.clone()), opts)
                .await?;
            return Ok(());
        }
        if self.create {
            match self.store.head(key).await {
                Ok(_) => {
                    return Err(object_store::Error::AlreadyExists {
                        path: key.to_string(),
                        source: "the key exists (checked before a multipart upload)".into(),
                    })
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let opts = PutMultipartOptions {
            attributes,
            ..PutMultipartOptions::default()
        };
        let mut upload = self.store.put_multipart_opts(key, opts).await?;
        let mut parts = Vec::new();
        let mut offset = 0;
        while offset < bytes.len() {
            let end = (offset + self.part_size).min(bytes.len());
            parts.push(upload.put_part(PutPayload::from_bytes(bytes.slice(offset..end))));
            offset = end;
        }
        let mut failed = None;
        for part in parts {
            if let Err(e) = part.await {
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            let _ = upload.abort().await;
            return Err(e);
        }
        if let Err(e) = upload.complete().await {
            let _ = upload.abort().await;
            return Err(e);
        }
        Ok(())
    }

    /// Whether the object under `key` holds exactly `bytes`.
    pub async fn holds(&self, key: &Path, bytes: &Bytes) -> object_store::Result<bool> {
        let stored = self.store.get(key).await?.bytes().await?;
        Ok(stored == *bytes)
    }
}

/// How an upload that failed with `e` is retried: [`Retry::Permanent`]
/// (with the reason) when retrying will not help — a missing bucket,
/// refused credentials, an invalid key, a 4xx other than 408 and 429 — else
/// [`Retry::Transient`]. The sink retries both (the operator may fix the
/// bucket or the policy) but reports itself degraded on the first.
pub(crate) fn classify(e: &object_store::Error) -> Retry {
    match permanent_reason(e) {
        Some(reason) => Retry::Permanent(reason),
        None => Retry::Transient,
    }
}

fn permanent_reason(e: &object_store::Error) -> Option<String> {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => Some(format!("the bucket or path does not exist: {e}")),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            Some(format!("access denied (credentials or bucket policy): {e}"))
        }
        E::InvalidPath { .. } => Some(format!("invalid object key: {e}")),
        E::Generic { source, .. } => {
            #[cfg(feature = "aws-sdk")]
            if let Some(s) = source.downcast_ref::<crate::AwsSdkError>() {
                return (!s.is_transient()).then(|| s.to_string());
            }
            if let Some(io) = source.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind as K;
                return matches!(
                    io.kind(),
                    K::PermissionDenied | K::ReadOnlyFilesystem | K::InvalidInput
                )
                .then(|| format!("the store refuses the write: {e}"));
            }
            // object_store's HTTP error type is not public: its message
            // carries the status.
            client_status(&e.to_string())
                .filter(|s| (400..500).contains(s) && *s != 408 && *s != 429)
                .map(|s| format!("the store answers {s}: {e}"))
        }
        _ => None,
    }
}

/// The HTTP status in object_store's "Server returned non-2xx status code:
/// 400 Bad Request: …".
fn client_status(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[test]
    fn alternates_keep_the_extension() {
        let k = Path::from("p/2024/i-00000000000000000007.ndjson.gz");
        assert_eq!(alternate(&k, ".ndjson.gz", 0), k);
        assert_eq!(
            alternate(&k, ".ndjson.gz", 2).as_ref(),
            "p/2024/i-00000000000000000007-r2.ndjson.gz"
        );
    }

    #[test]
    fn store_errors_are_classified() {
        let nf = object_store::Error::NotFound {
            path: "k".into(),
            source: "NoSuchBucket".into(),
        };
        assert!(permanent_reason(&nf).unwrap().contains("does not exist"));
        let denied = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "AccessDenied".into(),
        };
        assert!(permanent_reason(&denied).unwrap().contains("access denied"));
        let generic = |msg: &str| object_store::Error::Generic {
            store: "S3",
            source: msg.to_owned().into(),
        };
        let too_long = generic(
            "Server returned non-2xx status code: 400 Bad Request: <Code>KeyTooLongError</Code>",
        );
        assert!(permanent_reason(&too_long).unwrap().contains("400"));
        for transient in [
            "Server returned non-2xx status code: 503 Service Unavailable: slow down",
            "Server returned non-2xx status code: 429 Too Many Requests: ",
            "error sending request: connection refused",
        ] {
            assert_eq!(permanent_reason(&generic(transient)), None, "{transient}");
        }
    }

    #[tokio::test]
    async fn a_taken_key_is_refused_and_read_back() {
        let store = InMemory::new();
        let put = Put {
            store: &store,
            content_type: "application/x-ndjson",
            content_encoding: None,
            part_size: 1 << 20,
            attributes: true,
            create: true,
            manifest: None,
        };
        let key = Path::from("a/b.ndjson");
        let one = Bytes::from_static(b"{\"n\":1}\n");
        put.put(&key, &one).await.unwrap();
        let e = put
            .put(&key, &Bytes::from_static(b"{}\n"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, object_store::Error::AlreadyExists { .. }),
            "{e}"
        );
        assert!(put.holds(&key, &one).await.unwrap());
        assert!(!put.holds(&key, &Bytes::from_static(b"{}\n")).await.unwrap());
        // Above the part size: checked with a HEAD first.
        let small_parts = Put {
            part_size: 4,
            ..put
        };
        let e = small_parts.put(&key, &one).await.unwrap_err();
        assert!(
            matches!(e, object_store::Error::AlreadyExists { .. }),
            "{e}"
        );
    }
}
