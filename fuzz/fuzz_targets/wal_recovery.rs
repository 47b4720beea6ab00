//! Fuzzes WAL recovery over arbitrary segment images (a corrupted or hostile data directory):
//! every parser of the recovery module runs, and none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mesh_wal::recovery::fuzz_scan(data);
});
