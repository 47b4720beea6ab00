//! Fuzzes HELLO decoding (the first thing an unauthenticated peer sends): never a panic, and
//! whatever decodes re-encodes to a HELLO that decodes to the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_session::Hello;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = Hello::decode(data) {
        if let Ok(bytes) = d.hello.encode(&d.signature) {
            let again = Hello::decode(&bytes).expect("a re-encoded HELLO decodes");
            assert_eq!(again.hello, d.hello);
        }
    }
});
