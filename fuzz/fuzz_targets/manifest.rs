//! The manifest parser on arbitrary text: it never panics, and a refusal always names
//! at least one problem with a message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("/nonexistent-panal-fuzz/panal.toml");
    let env = |name: &str| (name == "SET").then(|| "value".to_string());
    if let Err(e) = panal::manifest::Manifest::parse(path, text, &env) {
        assert!(!e.0.is_empty(), "a refusal without a problem");
        assert!(
            e.0.iter().all(|p| !p.message.is_empty()),
            "a problem without a message"
        );
    }
});
