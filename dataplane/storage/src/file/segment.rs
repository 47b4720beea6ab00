//! One preallocated segment file: opened through glommio (io_uring), preallocated with
//! `fallocate`, and mapped shared and writable with memmap2.
//!
//! This is the only place of the crate with `unsafe`: creating the mapping. Appends write into
//! the mapping (the dirty pages belong to the file's page cache) and an `fdatasync` of the
//! file descriptor, issued through io_uring by glommio, writes those pages to stable storage.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{BufferedFile, OpenOptions};
use memmap2::{MmapMut, MmapOptions};

use crate::error::StorageError;

/// A segment file of one core's log, preallocated and mapped.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    pub(crate) path: PathBuf,
    /// The open file: what `fdatasync` is issued on. Shared with the driver task, which syncs
    /// without holding the log's state borrowed.
    pub(crate) file: Rc<BufferedFile>,
    /// The whole file, `segment_len` bytes.
    pub(crate) map: MmapMut,
}

impl SegmentFile {
    /// Opens (creating if needed) `path`, preallocates `len` bytes and maps them. Refuses when
    /// the space cannot be allocated: a sparse file would raise SIGBUS on a full disk when
    /// a page of the mapping is first written.
    pub(crate) async fn open(path: &Path, len: usize) -> Result<Self, StorageError> {
        let io_error = |op: &'static str| {
            move |error: glommio::GlommioError<()>| StorageError::Io {
                op,
                path: path.to_path_buf(),
                source: error.into(),
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .buffered_open(path)
            .await
            .map_err(io_error("open"))?;
        let len_u64 = u64::try_from(len).unwrap_or(u64::MAX);
        // fallocate(mode 0): allocates every block of 0..len (existing data is untouched) and
        // sets the size to len; fails with ENOSPC rather than leaving holes.
        file.pre_allocate(len_u64, false)
            .await
            .map_err(|error| StorageError::NoSpace {
                path: path.to_path_buf(),
                len: len_u64,
                source: error.into(),
            })?;
        let size = file.file_size().await.map_err(io_error("stat"))?;
        if size < len_u64 {
            return Err(StorageError::Io {
                op: "preallocate",
                path: path.to_path_buf(),
                source: std::io::Error::other(format!(
                    "file is {size} bytes after fallocate of {len}"
                )),
            });
        }
        let map = map_file(&file, len).map_err(|source| StorageError::Io {
            op: "mmap",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Rc::new(file),
            map,
        })
    }
}

/// Maps the first `len` bytes of `file`, shared and writable.
#[allow(unsafe_code)]
fn map_file(file: &BufferedFile, len: usize) -> std::io::Result<MmapMut> {
    // SAFETY: memmap2 requires that the mapped file is not truncated or modified by anyone
    // else while the mapping lives, or reads through it are undefined behaviour. The file is
    // one of this core's segment files: opened read-write by this log only (one node and one
    // core own a WAL directory), allocated to at least `len` bytes by `fallocate` just above
    // (so every page of the mapping is backed by allocated blocks: no SIGBUS on access, even
    // on a full disk), and this crate never truncates or writes it other than through this
    // mapping. The mapping is dropped with the `SegmentFile`, before the file is closed.
    // Exercised by every test of the `file` backend (`tests/file_backend.rs`).
    unsafe { MmapOptions::new().len(len).map_mut(file) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preallocated_mapping_writes_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let path_for_executor = path.clone();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(512 << 10)
            .spawn(move || async move {
                let mut segment = SegmentFile::open(&path_for_executor, 8192).await.unwrap();
                assert_eq!(segment.map.len(), 8192);
                assert!(segment.map.iter().all(|&byte| byte == 0));
                segment.map[4096..4100].copy_from_slice(b"mesh");
                segment.file.fdatasync().await.unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 8192);
        assert_eq!(&bytes[4096..4100], b"mesh");
    }
}
