//! The config parser on arbitrary text: it must return an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // a base directory that does not exist: files the config names cannot be read
        let _ = vakt_core::config::parse(text, std::path::Path::new("/nonexistent/vakt-fuzz"));
    }
});
