//! `import-coturn`: for any text, `config::coturn::import` returns TOML and notes and
//! never panics; the TOML is always a well-formed ferroturn file (every key known, every
//! value of its type), whether or not `check-config` accepts its values; every note about
//! a line names a line of the input.
#![no_main]

use ferroturn::config::RawConfig;
use ferroturn::config::coturn::{Host, import};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let host = Host {
        addresses: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        placeholder_secret: "fuzz-placeholder-secret".into(),
    };
    let result = import(&text, "fuzz.conf", &host);
    if let Err(e) = RawConfig::from_toml_str(&result.toml) {
        panic!("the import is not a ferroturn file: {e}\n{}", result.toml);
    }
    let lines = text.lines().count();
    for note in &result.notes {
        if let Some(line) = note.line {
            assert!((1..=lines).contains(&line), "{note}");
        }
    }
});
