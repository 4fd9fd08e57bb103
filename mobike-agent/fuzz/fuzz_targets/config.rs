//! Fuzzes the agent's TOML configuration loader: any text must parse into
//! an `AgentConfig` or fail with an error, never panic (durations,
//! proposals, identities, selectors, pools, the `[ike]`, `[kernel]` and
//! `[mobility]` sections).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mobike_agent::config_file::FileConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = FileConfig::parse(text) {
        // psk_file is read from disk: keep the fuzzer off the filesystem.
        if f.connections.values().any(|c| c.psk_file.is_some()) {
            return;
        }
        let _ = f.to_agent_config();
    }
});
