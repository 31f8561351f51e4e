//! Access to a dataset root through `object_store`: local paths, `file://`, and (with the `cloud`
//! feature) `s3://`, `gs://`, `az://`.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{DataError, Result};

/// A dataset root on some object store, with blocking accessors.
#[derive(Clone)]
pub struct Store {
    root: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    rt: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

fn runtime() -> Result<Arc<tokio::runtime::Runtime>> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("hr-data-io")
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| DataError::Config(format!("cannot start the I/O runtime: {e}")))
}

/// The kind of location a dataset root string names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootKind {
    /// A local directory (plain path or `file://`).
    Local(std::path::PathBuf),
    /// A cloud URL with its scheme (`s3`, `gs`, `az`, ...).
    Cloud(String),
}

/// Classifies a dataset root: local path, `file://` URL or cloud URL.
pub fn classify_root(root: &str) -> Result<RootKind> {
    if let Some((scheme, _)) = root.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        return match scheme.as_str() {
            "file" => {
                let url = url::Url::parse(root).map_err(|e| DataError::UnsupportedUrl {
                    url: root.to_string(),
                    detail: e.to_string(),
                })?;
                let p = url.to_file_path().map_err(|_| DataError::UnsupportedUrl {
                    url: root.to_string(),
                    detail: "not an absolute file:// URL".into(),
                })?;
                Ok(RootKind::Local(p))
            }
            "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "azure" => Ok(RootKind::Cloud(scheme)),
            other => Err(DataError::UnsupportedUrl {
                url: root.to_string(),
                detail: format!(
                    "unknown scheme `{other}` (use a local path, file://, s3://, gs:// or az://)"
                ),
            }),
        };
    }
    Ok(RootKind::Local(std::path::PathBuf::from(root)))
}

impl Store {
    /// Opens a dataset root given as a local path or URL.
    pub fn open(root: &str) -> Result<Self> {
        match classify_root(root)? {
            RootKind::Local(p) => Self::local(&p),
            RootKind::Cloud(_) => Self::cloud(root),
        }
    }

    /// Opens a local directory.
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(|e| DataError::MissingManifest {
            root: dir.display().to_string(),
            detail: e.to_string(),
        })?;
        Ok(Store {
            root: dir.display().to_string(),
            store: Arc::new(fs),
            prefix: ObjPath::default(),
            rt: runtime()?,
        })
    }

    /// A fresh in-memory store (tests, benchmarks).
    pub fn in_memory(name: &str) -> Result<Self> {
        Self::from_object_store(name, Arc::new(InMemory::new()), ObjPath::default())
    }

    /// Wraps any object store with a key prefix.
    pub fn from_object_store(
        root: &str,
        store: Arc<dyn ObjectStore>,
        prefix: ObjPath,
    ) -> Result<Self> {
        Ok(Store {
            root: root.to_string(),
            store,
            prefix,
            rt: runtime()?,
        })
    }

    #[cfg(not(feature = "cloud"))]
    fn cloud(root: &str) -> Result<Self> {
        Err(DataError::UnsupportedUrl {
            url: root.to_string(),
            detail:
                "this build has no cloud object-store support (built with --no-default-features); \
                     rebuild with the default features or copy the dataset to a local path"
                    .into(),
        })
    }

    #[cfg(feature = "cloud")]
    fn cloud(root: &str) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| DataError::UnsupportedUrl {
            url: root.to_string(),
            detail: e.to_string(),
        };
        let url = url::Url::parse(root).map_err(|e| bad(&e))?;
        // HTTPS through rustls with ring, installed once for the process (an error only means
        // another provider was installed first, which serves as well).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "s3" | "s3a" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(root)
                    .build()
                    .map_err(|e| bad(&e))?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(root)
                    .build()
                    .map_err(|e| bad(&e))?,
            ),
            _ => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(root)
                    .build()
                    .map_err(|e| bad(&e))?,
            ),
        };
        let prefix = ObjPath::from_url_path(url.path()).map_err(|e| bad(&e))?;
        Self::from_object_store(root, store, prefix)
    }

    /// The root as given by the user.
    pub fn root(&self) -> &str {
        &self.root
    }

    fn key(&self, rel: &str) -> ObjPath {
        rel.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |acc, part| acc.clone().join(part))
    }

    fn err(&self, rel: &str, e: object_store::Error) -> DataError {
        DataError::Store {
            path: format!("{}/{rel}", self.root),
            detail: e.to_string(),
        }
    }

    /// Reads a whole object.
    pub fn get(&self, rel: &str) -> Result<Bytes> {
        let key = self.key(rel);
        self.rt
            .block_on(async { self.store.get(&key).await?.bytes().await })
            .map_err(|e| self.err(rel, e))
    }

    /// Reads a byte range of an object.
    pub fn get_range(&self, rel: &str, range: Range<u64>) -> Result<Bytes> {
        let key = self.key(rel);
        self.rt
            .block_on(self.store.get_range(&key, range))
            .map_err(|e| self.err(rel, e))
    }

    /// Reads a byte range of an object (for async callers on this store's runtime).
    pub(crate) async fn get_range_async(&self, rel: &str, range: Range<u64>) -> Result<Bytes> {
        let key = self.key(rel);
        self.store
            .get_range(&key, range)
            .await
            .map_err(|e| self.err(rel, e))
    }

    /// Reads several byte ranges of an object, coalescing nearby ones into one request.
    pub(crate) async fn get_ranges_async(
        &self,
        rel: &str,
        ranges: &[Range<u64>],
    ) -> Result<Vec<Bytes>> {
        let key = self.key(rel);
        self.store
            .get_ranges(&key, ranges)
            .await
            .map_err(|e| self.err(rel, e))
    }

    /// Runs `fut` to completion on this store's I/O runtime (from a thread outside it).
    pub(crate) fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(fut)
    }

    /// Size of an object in bytes.
    pub fn size(&self, rel: &str) -> Result<u64> {
        let key = self.key(rel);
        self.rt
            .block_on(self.store.head(&key))
            .map(|m| m.size)
            .map_err(|e| self.err(rel, e))
    }

    /// Writes a whole object.
    pub fn put(&self, rel: &str, bytes: Bytes) -> Result<()> {
        let key = self.key(rel);
        self.rt
            .block_on(self.store.put(&key, PutPayload::from_bytes(bytes)))
            .map(|_| ())
            .map_err(|e| self.err(rel, e))
    }
}
