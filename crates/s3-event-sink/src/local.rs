//! The local-directory store: `object_store`'s [`LocalFileSystem`], plus an
//! fsync of every object it stores (the file, then each directory from the
//! file's up to the root) before the put returns, so that an object the
//! sink has marked uploaded, and whose spool segments it then deletes,
//! survives a power cut. `LocalFileSystem` writes a temporary file and
//! renames it into place but never fsyncs; the wrapper adds that.
//!
//! `LocalFileSystem` also refuses object attributes (content type, user
//! metadata such as the sink's [delivery manifest](crate::manifest)). The
//! wrapper keeps them in a sidecar file beside the object,
//! `{file}.s3e-attributes.json` (a JSON object: `Content-Type`,
//! `Content-Encoding`, …, and `meta:{key}` per user metadata key), written
//! and fsynced with the object, returned by `get`, copied and deleted with
//! it, and left out of listings. A create-only put that finds the key taken
//! by the same bytes (a re-upload after a crash between the object and its
//! sidecar) writes the missing sidecar before reporting the key taken.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, CopyOptions, GetOptions, GetResult, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, UploadPart,
};

/// The suffix of an object's attributes sidecar file.
pub const ATTRIBUTES_SUFFIX: &str = ".s3e-attributes.json";

/// A [`LocalFileSystem`] rooted at a directory whose puts are fsynced.
#[derive(Debug)]
pub struct LocalDir {
    inner: LocalFileSystem,
    root: PathBuf,
    hook: Option<Hook>,
}

/// Called with every path fsynced (tests).
type HookFn = dyn Fn(&FsPath) + Send + Sync;

#[derive(Clone)]
struct Hook(Arc<HookFn>);

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hook")
    }
}

impl fmt::Display for LocalDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalFileSystem({}, fsynced)", self.root.display())
    }
}

impl LocalDir {
    /// The store rooted at `root`, which must exist.
    pub fn new(root: impl Into<PathBuf>) -> object_store::Result<LocalDir> {
        let root: PathBuf = root.into();
        let root = std::fs::canonicalize(&root).map_err(|e| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })?;
        Ok(LocalDir {
            inner: LocalFileSystem::new_with_prefix(&root)?,
            root,
            hook: None,
        })
    }

    /// Calls `hook` with every path fsynced (tests check the order of
    /// fsyncs against the spool's).
    #[cfg(test)]
    pub(crate) fn with_hook(mut self, hook: Arc<HookFn>) -> Self {
        self.hook = Some(Hook(hook));
        self
    }

    async fn fsync(&self, location: &Path) -> object_store::Result<()> {
        let file = self.inner.path_to_filesystem(location)?;
        let root = self.root.clone();
        let hook = self.hook.clone();
        tokio::task::spawn_blocking(move || fsync_up(&file, &root, hook.as_ref().map(|h| &*h.0)))
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })?
            .map_err(|e| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })
    }
}

/// Fsyncs `file` and its attributes sidecar, if any, then every directory from its parent up to `root`
/// (directories created for the object's partition must survive too).
fn fsync_up(file: &FsPath, root: &FsPath, hook: Option<&HookFn>) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    if let Some(h) = hook {
        h(file);
    }
    let attributes = sidecar(file);
    match std::fs::File::open(&attributes) {
        Ok(f) => {
            f.sync_all()?;
            if let Some(h) = hook {
                h(&attributes);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut dir = file.parent();
    while let Some(d) = dir {
        std::fs::File::open(d)?.sync_all()?;
        if let Some(h) = hook {
            h(d);
        }
        if d == root || !d.starts_with(root) {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

/// The sidecar file of the object stored in `file`.
fn sidecar(file: &FsPath) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(ATTRIBUTES_SUFFIX);
    PathBuf::from(s)
}

fn is_sidecar(location: &Path) -> bool {
    location.as_ref().ends_with(ATTRIBUTES_SUFFIX)
}

fn attribute_name(a: &Attribute) -> String {
    match a {
        Attribute::ContentDisposition => "Content-Disposition".into(),
        Attribute::ContentEncoding => "Content-Encoding".into(),
        Attribute::ContentLanguage => "Content-Language".into(),
        Attribute::ContentType => "Content-Type".into(),
        Attribute::CacheControl => "Cache-Control".into(),
        Attribute::StorageClass => "Storage-Class".into(),
        Attribute::Metadata(k) => format!("meta:{k}"),
        other => format!("{other:?}"),
    }
}

fn attribute_of(name: &str) -> Option<Attribute> {
    Some(match name {
        "Content-Disposition" => Attribute::ContentDisposition,
        "Content-Encoding" => Attribute::ContentEncoding,
        "Content-Language" => Attribute::ContentLanguage,
        "Content-Type" => Attribute::ContentType,
        "Cache-Control" => Attribute::CacheControl,
        "Storage-Class" => Attribute::StorageClass,
        _ => Attribute::Metadata(name.strip_prefix("meta:")?.to_owned().into()),
    })
}

fn io_err(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    }
}

/// Writes `attributes` to `file`'s sidecar (a temporary file renamed into
/// place; [`fsync_up`] fsyncs it with the object); an empty set removes the
/// sidecar.
fn write_sidecar(file: &FsPath, attributes: &Attributes) -> std::io::Result<()> {
    let path = sidecar(file);
    if attributes.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let map: std::collections::BTreeMap<String, &str> = attributes
        .iter()
        .map(|(k, v)| (attribute_name(k), v.as_ref()))
        .collect();
    let json = serde_json::to_vec(&map).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    // `#` and digits: a name `LocalFileSystem` leaves out of listings, as
    // its own temporary files.
    tmp.push(format!("#{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, &path)
}

/// The attributes in `file`'s sidecar (none when there is no sidecar).
fn read_sidecar(file: &FsPath) -> std::io::Result<Attributes> {
    let bytes = match std::fs::read(sidecar(file)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Attributes::new()),
        Err(e) => return Err(e),
    };
    let map: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
    Ok(map
        .into_iter()
        .filter_map(|(k, v)| Some((attribute_of(&k)?, AttributeValue::from(v))))
        .collect())
}

/// Runs `f` on a blocking thread, mapping its errors to the store's.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> object_store::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io_err)?
        .map_err(io_err)
}

/// After a create-only put found `file` taken: when it holds `payload`
/// and has no sidecar (a crash came between the two), writes the sidecar.
fn heal_sidecar(file: &FsPath, payload: &[u8], attributes: &Attributes) -> std::io::Result<()> {
    if sidecar(file).exists() || std::fs::read(file)? != payload {
        return Ok(());
    }
    write_sidecar(file, attributes)?;
    std::fs::File::open(sidecar(file))?.sync_all()?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[derive(Debug)]
struct SyncedUpload {
    inner: Box<dyn MultipartUpload>,
    store: Arc<LocalDirRef>,
    location: Path,
}

/// What a multipart upload needs of its store to fsync on completion.
#[derive(Debug)]
struct LocalDirRef {
    file: PathBuf,
    root: PathBuf,
    hook: Option<Hook>,
    /// Written to the sidecar on completion.
    attributes: Attributes,
}

#[async_trait]
impl MultipartUpload for SyncedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let r = self.inner.complete().await?;
        let (file, root) = (self.store.file.clone(), self.store.root.clone());
        let hook = self.store.hook.clone();
        let attributes = self.store.attributes.clone();
        tokio::task::spawn_blocking(move || {
            write_sidecar(&file, &attributes)?;
            fsync_up(&file, &root, hook.as_ref().map(|h| &*h.0))
        })
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })?
        .map_err(|e| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!("fsync {}: {e}", self.location).into(),
        })?;
        Ok(r)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for LocalDir {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if is_sidecar(location) {
            return Err(io_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{location}: names ending in {ATTRIBUTES_SUFFIX} hold the attributes of objects"),
            )));
        }
        let attributes = std::mem::take(&mut opts.attributes);
        let create = matches!(opts.mode, PutMode::Create);
        let file = self.inner.path_to_filesystem(location)?;
        let r = match self.inner.put_opts(location, payload.clone(), opts).await {
            Ok(r) => r,
            Err(e @ object_store::Error::AlreadyExists { .. }) if create => {
                if !attributes.is_empty() {
                    let bytes: bytes::Bytes = payload.into();
                    blocking(move || heal_sidecar(&file, &bytes, &attributes)).await?;
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        blocking(move || write_sidecar(&file, &attributes)).await?;
        self.fsync(location).await?;
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        mut opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let attributes = std::mem::take(&mut opts.attributes);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(SyncedUpload {
            inner,
            store: Arc::new(LocalDirRef {
                file: self.inner.path_to_filesystem(location)?,
                root: self.root.clone(),
                hook: self.hook.clone(),
                attributes,
            }),
            location: location.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let mut r = self.inner.get_opts(location, options).await?;
        let file = self.inner.path_to_filesystem(location)?;
        r.attributes = blocking(move || read_sidecar(&file)).await?;
        Ok(r)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        use futures_util::StreamExt;
        let root = self.root.clone();
        self.inner
            .delete_stream(locations)
            .then(move |deleted| {
                let root = root.clone();
                async move {
                    let path = deleted?;
                    let file =
                        LocalFileSystem::new_with_prefix(&root)?.path_to_filesystem(&path)?;
                    blocking(move || write_sidecar(&file, &Attributes::new())).await?;
                    Ok(path)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        use futures_util::StreamExt;
        self.inner
            .list(prefix)
            .filter(|m| std::future::ready(!m.as_ref().is_ok_and(|m| is_sidecar(&m.location))))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut r = self.inner.list_with_delimiter(prefix).await?;
        r.objects.retain(|m| !is_sidecar(&m.location));
        Ok(r)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        let (src, dst) = (
            self.inner.path_to_filesystem(from)?,
            self.inner.path_to_filesystem(to)?,
        );
        blocking(move || write_sidecar(&dst, &read_sidecar(&src)?)).await?;
        self.fsync(to).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;
    use object_store::ObjectStoreExt;

    fn with_meta(mode: PutMode) -> PutOptions {
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, "application/x-ndjson".into());
        attributes.insert(Attribute::Metadata("s3e-records".into()), "2".into());
        PutOptions {
            attributes,
            mode,
            ..PutOptions::default()
        }
    }

    /// Attributes live in a sidecar: returned by `get`, carried by `copy`,
    /// removed by `delete`, never listed; a put without attributes leaves
    /// none behind.
    #[tokio::test]
    async fn attributes_live_in_a_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path()).unwrap();
        let key = Path::from("p/a.ndjson");
        let body = PutPayload::from_static(b"{}\n{}\n");
        store
            .put_opts(&key, body.clone(), with_meta(PutMode::Create))
            .await
            .unwrap();
        let side = sidecar(&dir.path().canonicalize().unwrap().join("p/a.ndjson"));
        assert!(side.exists());
        let got = store.get(&key).await.unwrap().attributes;
        assert_eq!(got, with_meta(PutMode::Create).attributes);
        let copy = Path::from("p/b.ndjson");
        store.copy(&key, &copy).await.unwrap();
        assert_eq!(store.get(&copy).await.unwrap().attributes, got);
        let listed: Vec<ObjectMeta> = store.list(None).try_collect().await.unwrap();
        let mut names: Vec<String> = listed.iter().map(|m| m.location.to_string()).collect();
        names.sort();
        assert_eq!(names, ["p/a.ndjson", "p/b.ndjson"]);
        let flat = store
            .list_with_delimiter(Some(&Path::from("p")))
            .await
            .unwrap();
        assert_eq!(flat.objects.len(), 2);
        store.delete(&copy).await.unwrap();
        assert!(!sidecar(&side.with_file_name("b.ndjson")).exists());
        store.put(&key, body).await.unwrap();
        assert!(!side.exists(), "an overwrite without attributes drops them");
        assert!(store.get(&key).await.unwrap().attributes.is_empty());
        let e = store
            .put(
                &Path::from("p/x.s3e-attributes.json"),
                PutPayload::from_static(b"{}"),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains(ATTRIBUTES_SUFFIX), "{e}");
    }

    /// A crash between an object and its sidecar: the create-only re-upload
    /// of the same bytes finds the key taken and writes the sidecar; other
    /// bytes do not.
    #[tokio::test]
    async fn a_reupload_restores_a_missing_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path()).unwrap();
        let key = Path::from("k.ndjson");
        let body = PutPayload::from_static(b"{}\n{}\n");
        store
            .put_opts(&key, body.clone(), with_meta(PutMode::Create))
            .await
            .unwrap();
        let side = sidecar(&dir.path().canonicalize().unwrap().join("k.ndjson"));
        std::fs::remove_file(&side).unwrap();
        let other = PutPayload::from_static(b"{}\n");
        let e = store
            .put_opts(&key, other, with_meta(PutMode::Create))
            .await
            .unwrap_err();
        assert!(
            matches!(e, object_store::Error::AlreadyExists { .. }),
            "{e}"
        );
        assert!(!side.exists(), "other bytes: not this object's attributes");
        let e = store
            .put_opts(&key, body, with_meta(PutMode::Create))
            .await
            .unwrap_err();
        assert!(
            matches!(e, object_store::Error::AlreadyExists { .. }),
            "{e}"
        );
        assert_eq!(
            store.get(&key).await.unwrap().attributes,
            with_meta(PutMode::Create).attributes
        );
    }
}
