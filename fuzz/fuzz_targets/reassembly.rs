//! Fuzzes the reassembler with frames decoded from arbitrary bytes: never a panic, and the
//! memory it reports holding never exceeds its limits.
#![no_main]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mesh_wire::{Decoder, Limits, ReassemblyLimits, Reassembler};

fuzz_target!(|data: &[u8]| {
    let limits = ReassemblyLimits {
        source_bytes_max: 4096,
        source_partials_max: 4,
        total_bytes_max: 8192,
        partials_max: 8,
        message_len_max: 4096,
        timeout: Duration::from_millis(10),
    };
    let mut r = Reassembler::new(limits);
    let mut d = Decoder::new(Limits::default());
    d.handle_owned(BytesMut::from(data));
    let t0 = Instant::now();
    let mut step = 0u64;
    while let Ok(Some(f)) = d.poll_frame() {
        step += 1;
        let now = t0 + Duration::from_millis(step);
        let _ = r.handle_chunk(f, now);
        assert!(r.held_bytes() <= limits.total_bytes_max);
        assert!(r.partial_count() <= limits.partials_max);
        r.handle_timeout(now);
    }
});
