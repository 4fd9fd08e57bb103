//! Fuzzes the daemon's TOML config loader: any text is a config that passed
//! every check or an error naming the file; never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trigger_db::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml") {
        Ok(c) => {
            assert!(c.limits.max_connections_per_uid <= c.limits.max_connections);
            assert!(c.subscribers.max >= 1);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
