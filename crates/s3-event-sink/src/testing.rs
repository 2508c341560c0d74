//! The stores this crate's tests run against (feature `testing`, and in
//! this crate's tests), for tests in other crates: memory, a local
//! directory and (feature `integration`) the real S3-compatible server from
//! `scripts/services.sh` (SeaweedFS on 127.0.0.1:18333, bucket `s3e-test`;
//! override with `S3E_S3_ENDPOINT`, `S3E_S3_BUCKET`, `S3E_S3_ACCESS_KEY`,
//! `S3E_S3_SECRET_KEY`), each with a prefix of its own; a store that fails
//! on request ([`Flaky`]); and a listing of what was stored ([`objects`]).
//! They panic on errors: they are for tests.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::StoreConfig;

/// Which store.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// [`StoreConfig::Memory`].
    Memory,
    /// Memory, with gzip compressed in the background
    /// ([`SinkBuilder::with_background_compression`](crate::SinkBuilder::with_background_compression)).
    MemoryBackground,
    /// [`StoreConfig::Local`] over a temporary directory.
    Local,
    /// The real S3-compatible server (`s3_config`).
    #[cfg(feature = "integration")]
    S3,
    /// The same server through the AWS SDK store, with the upload options
    /// Amberflo's buckets need.
    #[cfg(all(feature = "integration", feature = "aws-sdk"))]
    AwsSdk,
}

/// A store under test, with a prefix of its own.
pub struct Env {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// A prefix no other test uses (ends with `/`).
    pub prefix: String,
    /// Which store it is.
    pub kind: Kind,
    _dir: Option<tempfile::TempDir>,
}

fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{nanos:x}-{}", std::process::id())
}

/// The S3-compatible server of `scripts/services.sh`, from the environment.
#[cfg(feature = "integration")]
pub fn s3_config() -> crate::S3Config {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    crate::S3Config {
        bucket: var("S3E_S3_BUCKET", "s3e-test"),
        region: Some("us-east-1".into()),
        endpoint: Some(var("S3E_S3_ENDPOINT", "http://127.0.0.1:18333")),
        access_key_id: Some(var("S3E_S3_ACCESS_KEY", "testkey")),
        secret_access_key: Some(var("S3E_S3_SECRET_KEY", "testsecret")),
        session_token: None,
        allow_http: true,
        virtual_hosted_style: false,
    }
}

/// The same server through the AWS SDK store, with `upload` on every put.
#[cfg(all(feature = "integration", feature = "aws-sdk"))]
pub fn aws_sdk_config(upload: crate::UploadOptions) -> crate::AwsSdkConfig {
    let c = s3_config();
    crate::AwsSdkConfig {
        bucket: c.bucket,
        region: c.region,
        endpoint: c.endpoint,
        access_key_id: c.access_key_id,
        secret_access_key: c.secret_access_key,
        session_token: None,
        allow_http: true,
        virtual_hosted_style: false,
        upload,
    }
}

/// A store of `kind` and a prefix of its own for test `test`.
pub fn env(kind: Kind, test: &str) -> Env {
    let prefix = format!("{}/", unique(test));
    match kind {
        Kind::Memory | Kind::MemoryBackground => Env {
            store: StoreConfig::Memory.build().unwrap(),
            prefix,
            kind,
            _dir: None,
        },
        Kind::Local => {
            let dir = tempfile::tempdir().unwrap();
            Env {
                store: StoreConfig::Local {
                    dir: dir.path().into(),
                }
                .build()
                .unwrap(),
                prefix,
                kind,
                _dir: Some(dir),
            }
        }
        #[cfg(feature = "integration")]
        Kind::S3 => Env {
            store: StoreConfig::S3(s3_config()).build().unwrap(),
            prefix,
            kind,
            _dir: None,
        },
        // With the options Amberflo's buckets need, so every conformance
        // test also shows the server takes them.
        #[cfg(all(feature = "integration", feature = "aws-sdk"))]
        Kind::AwsSdk => Env {
            store: StoreConfig::AwsSdk(aws_sdk_config(crate::UploadOptions {
                acl: Some("bucket-owner-full-control".into()),
                tags: vec![("source".into(), "conformance".into())],
                ..crate::UploadOptions::default()
            }))
            .build()
            .unwrap(),
            prefix,
            kind,
            _dir: None,
        },
    }
}

impl Env {
    /// The directory of a [`Kind::Local`] store.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(|d| d.path())
    }

    /// Every object under the prefix, sorted by key, with its bytes.
    pub async fn objects(&self) -> Vec<(String, Vec<u8>)> {
        objects(&*self.store, &self.prefix).await
    }
}

/// Stops `sink` as a crash would: its tasks die, nothing is flushed;
/// returns once the spool (and its lock) is released.
pub async fn crash(sink: crate::Sink) {
    sink.crash().await
}

/// Every object under `prefix`, sorted by key, with its bytes.
pub async fn objects(store: &dyn ObjectStore, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let p = Path::from(prefix.trim_end_matches('/'));
    let metas: Vec<ObjectMeta> = store.list(Some(&p)).try_collect().await.unwrap();
    let mut out = Vec::new();
    for m in metas {
        let b = store.get(&m.location).await.unwrap().bytes().await.unwrap();
        out.push((m.location.to_string(), b.to_vec()));
    }
    out.sort();
    out
}

/// A store that can be switched to fail every put, or to store and then
/// report a failure (as when a response is lost after the write).
#[derive(Debug)]
pub struct Flaky {
    inner: Arc<dyn ObjectStore>,
    mode: AtomicU8,
}

/// [`Flaky`] mode: every call passes through.
pub const OK: u8 = 0;
/// [`Flaky`] mode: every put fails as a store that is down fails.
pub const DOWN: u8 = 1;
/// [`Flaky`] mode: every put is stored, then reported failed.
pub const LOSE_REPLY: u8 = 2;
/// [`Flaky`] mode: every put refused as a bucket policy refuses it (access denied).
pub const DENIED: u8 = 3;

impl Flaky {
    /// `inner`, failing as `mode` says ([`OK`], [`DOWN`], [`LOSE_REPLY`],
    /// [`DENIED`]).
    pub fn new(inner: Arc<dyn ObjectStore>, mode: u8) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner,
            mode: AtomicU8::new(mode),
        })
    }

    /// Switches to `mode`.
    pub fn set_mode(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn fail() -> object_store::Error {
        object_store::Error::Generic {
            store: "Flaky",
            source: "the store is down".into(),
        }
    }
}

impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flaky({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Flaky {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match self.mode.load(Ordering::SeqCst) {
            DOWN => Err(Self::fail()),
            DENIED => Err(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: "AccessDenied".into(),
            }),
            LOSE_REPLY => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(Self::fail())
            }
            _ => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        match self.mode.load(Ordering::SeqCst) {
            OK => self.inner.put_multipart_opts(location, opts).await,
            _ => Err(Self::fail()),
        }
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
