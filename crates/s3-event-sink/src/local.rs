//! The local-directory store: `object_store`'s [`LocalFileSystem`], plus an
//! fsync of every object it stores (the file, then each directory from the
//! file's up to the root) before the put returns, so that an object the
//! sink has marked uploaded, and whose spool segments it then deletes,
//! survives a power cut. `LocalFileSystem` writes a temporary file and
//! renames it into place but never fsyncs; the wrapper adds only that.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

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

/// Fsyncs `file`, then every directory from its parent up to `root`
/// (directories created for the object's partition must survive too).
fn fsync_up(file: &FsPath, root: &FsPath, hook: Option<&HookFn>) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    if let Some(h) = hook {
        h(file);
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
        tokio::task::spawn_blocking(move || fsync_up(&file, &root, hook.as_ref().map(|h| &*h.0)))
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
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await?;
        self.fsync(location).await?;
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(SyncedUpload {
            inner,
            store: Arc::new(LocalDirRef {
                file: self.inner.path_to_filesystem(location)?,
                root: self.root.clone(),
                hook: self.hook.clone(),
            }),
            location: location.clone(),
        }))
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
        self.inner.copy_opts(from, to, options).await?;
        self.fsync(to).await
    }
}
