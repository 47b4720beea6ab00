//! Fuzzes the streaming frame decoder: arbitrary bytes, split at a point the input chooses,
//! must yield frames or a typed error, never a panic, and every frame returned must re-validate
//! and stay within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_wire::{Decoder, Frame, Limits, MetaLimits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let (split, bytes) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s), rest),
        None => return,
    };
    let mut d = Decoder::with_read_chunk_len(limits, 64);
    let cut = split.min(bytes.len());
    for piece in [&bytes[..cut], &bytes[cut..]] {
        d.handle_bytes(piece);
        loop {
            match d.poll_frame() {
                Ok(Some(f)) => {
                    assert!(f.len() <= limits.max_frame_len as usize);
                    let again = Frame::new_checked(f.as_bytes(), &limits).expect("re-validates");
                    assert_eq!(again.payload(), f.payload());
                    let _ = f.meta(&MetaLimits::default());
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = e.close_reason();
                    return;
                }
            }
        }
    }
});
