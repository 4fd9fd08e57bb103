//! Fuzzes the JSON lines of `triggerctl add --from`: any line either parses
//! into a trigger the daemon's checks accept or is an error naming what is
//! wrong; never a panic.

#![no_main]
#![allow(dead_code)]

use libfuzzer_sys::fuzz_target;

/// triggerctl's parser, compiled in as it is (it is a binary's module).
#[path = "../../src/bin/triggerctl/add.rs"]
mod add;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        match add::parse_line(line) {
            Ok(_) => {}
            Err(e) => assert!(!e.is_empty(), "an error says what is wrong"),
        }
    }
});
