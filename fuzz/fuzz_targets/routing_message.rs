//! Fuzzes the link-state message decoder (LSA / LSA_ACK bodies from neighbours): never a panic;
//! whatever decodes re-encodes to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_routing::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let bytes = m.to_bytes().expect("a decoded message re-encodes");
        assert_eq!(Message::decode(&bytes).expect("round trip"), m);
    }
});
