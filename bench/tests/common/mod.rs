//! What the bench's integration tests share: the `mesh` binary they run.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Flags for a small write-ahead log (4 MiB × 8 segments per core): the default, 64 MiB ×
/// 16, is written out in full when a node starts, and a few such nodes at once filled a CI
/// machine's disk.
pub(crate) const SMALL_WAL: [&str; 4] = ["--wal-segment-mib", "4", "--wal-segments", "8"];

/// The `mesh` binary: `$MESH_BIN`, else `target/debug/mesh` of this workspace (which
/// `cargo test --workspace` builds for mesh-node's tests), built here if it is missing.
pub(crate) fn mesh_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MESH_BIN") {
            return PathBuf::from(p);
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let bin = target.join("debug").join("mesh");
        if !bin.is_file() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "mesh-node", "--bin", "mesh"])
                .current_dir(&root)
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the mesh binary failed");
        }
        assert!(bin.is_file(), "no mesh binary at {}", bin.display());
        bin
    })
    .clone()
}
