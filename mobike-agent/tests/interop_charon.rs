//! Interop with strongSwan's charon in network namespaces, through the
//! real binary: see `testdata/interop-charon.sh` for the scenarios (both
//! roles, both issue suites, CHILD_SA and IKE SA rekeys initiated by either
//! side, crossing rekeys (§2.8.1, §2.8.2), liveness checks, Delete on
//! SIGTERM, wrong PSK, proposal mismatch, IPv6 with PFS and an
//! INVALID_KE_PAYLOAD retry, a killed charon noticed by liveness checks,
//! a MOBIKE address update by charon that the agent follows).
//! Needs root, iproute2 and the Debian packages strongswan-charon
//! strongswan-swanctl libstrongswan-standard-plugins
//! libcharon-extra-plugins, so it is ignored by default:
//! `cargo test -p mobike-agent --test interop_charon -- --ignored`.

use std::process::Command;

#[test]
#[ignore = "needs root, network namespaces and strongSwan (see module doc)"]
fn agent_interoperates_with_charon_in_both_roles() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/interop-charon.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_mobike-agent"))
        .output()
        .expect("run interop script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("INTEROP-OK"),
        "interop failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}
