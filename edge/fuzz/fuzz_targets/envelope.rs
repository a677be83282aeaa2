//! The signed-command envelope on arbitrary bytes (what any client allowed to write /cmd sends):
//! it must be accepted or named malformed, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = vakt_core::command::parse_envelope(data) {
        // what the verifier canonicalises must serialise
        let _ = serde_json::to_vec(&e.signed_part);
    }
});
