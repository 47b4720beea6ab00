//! One preallocated segment file: opened through glommio (io_uring), preallocated with
//! `fallocate`, zero-filled where it is new, and mapped shared and writable with memmap2.
//!
//! **Why zero-fill.** `fallocate` leaves *unwritten* extents (ext4, xfs): reads return zeros,
//! but the first store into each page of the mapping takes the filesystem's `page_mkwrite`
//! path that converts the extent under a journal handle (it can wait for a journal commit:
//! 20 ms stalls of an append were measured), and every `fdatasync` must then commit that
//! metadata too (a second flush: its p99 was 2 to 3 times that of a written file). Writing
//! zeros once, when a file is created or grown, and syncing them, turns the extents into
//! written ones, as PostgreSQL does for new WAL segments; recycled files are written already.
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
    /// Opens (creating if needed) `path`, preallocates `len` bytes, zero-fills (and syncs)
    /// what was beyond the file's end, and maps them. Refuses when the space cannot be
    /// allocated: a sparse file would raise SIGBUS on a full disk when a page of the mapping
    /// is first written.
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
        let size_before = file.file_size().await.map_err(io_error("stat"))?;
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
        if size_before < len_u64 {
            zero_fill(path, size_before, len_u64)
                .await
                .map_err(|source| StorageError::Io {
                    op: "zero-fill",
                    path: path.to_path_buf(),
                    source,
                })?;
            file.fdatasync().await.map_err(io_error("fdatasync"))?;
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

/// Writes zeros over `from..to` of the file at `path`, one page per write, on glommio's
/// blocking thread pool (start-up only; the executor thread keeps running).
///
/// One page per write, not large writes: the page cache sizes its folios after the writes
/// that create them, and on a kernel with large folios for the filesystem (ext4 since Linux
/// 6.16) a 1 MiB write leaves 1 MiB folios behind. Storing one record into such a folio
/// through the mapping dirties all of it, so every `fdatasync` writes the whole folio back:
/// 1055 MB reached the disk for 25 MB of 256-byte appends synced every 100 records, against
/// 28 MB with one-page folios. (Through io_uring, one op per page costs ~50 µs of io-wq time;
/// plain `pwrite`s fill 1 GiB in under a second.)
async fn zero_fill(path: &Path, from: u64, to: u64) -> std::io::Result<()> {
    let path = path.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let file = std::fs::OpenOptions::new().write(true).open(&path)?;
            let page = [0_u8; ZERO_FILL_PAGE];
            let mut position = from;
            while position < to {
                // Up to the next page boundary, so that every later write is one whole page.
                let len = ZERO_FILL_CHUNK - position % ZERO_FILL_CHUNK;

                let len = usize::try_from((to - position).min(len)).unwrap_or(page.len());
                file.write_all_at(&page[..len], position)?;
                position += len as u64;
            }
            Ok(())
        })
        .await
}

/// Size of one zero-filling write: a page.
const ZERO_FILL_PAGE: usize = 4096;
const ZERO_FILL_CHUNK: u64 = ZERO_FILL_PAGE as u64;

/// Maps the first `len` bytes of `file`, shared and writable.
#[allow(unsafe_code)]
fn map_file(file: &BufferedFile, len: usize) -> std::io::Result<MmapMut> {
    // SAFETY: memmap2 requires that the mapped file is not truncated or modified by anyone
    // else while the mapping lives, or reads through it are undefined behaviour. The file is
    // one of this core's segment files: opened read-write by this log only (one node and one
    // core own a WAL directory), allocated to at least `len` bytes by `fallocate` just above
    // (so every page of the mapping is backed by allocated blocks: no SIGBUS on access, even
    // on a full disk), and this crate never truncates it, nor writes it other than through
    // this mapping once it exists (the zero-fill runs before). The mapping is dropped with the `SegmentFile`, before the file is closed.
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

    #[test]
    fn growing_a_file_zero_fills_only_the_new_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        std::fs::write(&path, [7_u8; 5000]).unwrap();
        let path_for_executor = path.clone();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(512 << 10)
            .spawn(move || async move {
                let segment = SegmentFile::open(&path_for_executor, 3 << 20)
                    .await
                    .unwrap();
                assert!(segment.map[..5000].iter().all(|&byte| byte == 7));
                assert!(segment.map[5000..].iter().all(|&byte| byte == 0));
            })
            .unwrap()
            .join()
            .unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.len(), 3 << 20);
    }
}
