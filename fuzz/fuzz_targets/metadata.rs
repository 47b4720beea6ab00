//! Fuzzes CBOR metadata decoding: never a panic; whatever decodes re-encodes to bytes that
//! decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_wire::{MetaLimits, Metadata};

fuzz_target!(|data: &[u8]| {
    let limits = MetaLimits::default();
    if let Ok(m) = Metadata::decode(data, &limits) {
        let bytes = m.encode(&limits).expect("decoded metadata re-encodes");
        assert_eq!(Metadata::decode(&bytes, &limits).expect("round trip"), m);
    }
});
