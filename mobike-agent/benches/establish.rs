//! IKE SA + CHILD_SA establishments per second and memory per IKE SA:
//! mobike-agent to mobike-agent against charon to charon in the same run
//! (`testdata/bench-establish.sh`: two network namespaces joined by a veth
//! pair, N connections initiated at once, the real binaries). Needs root,
//! iproute2 and strongSwan (charon, swanctl, kernel-libipsec); without
//! them it says why and exits 0.
//!
//! `[AUTH=ecdsa] cargo bench -p mobike-agent --bench establish [-- N [RUNS]]`
//! (default 1000 IKE SAs, 3 runs; `AUTH=ecdsa`: ECDSA P-256 certificates
//! instead of the PSK, both pairs).

use std::process::Command;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n = args.first().map_or("1000", String::as_str);
    let runs = args.get(1).map_or("3", String::as_str);
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !root || !std::path::Path::new("/usr/lib/ipsec/charon").exists() {
        eprintln!("establish: skipped (needs root and strongSwan's /usr/lib/ipsec/charon)");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/bench-establish.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_mobike-agent"))
        .args([n, runs])
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!("establish: {script} failed: {s}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("establish: cannot run {script}: {e}");
            std::process::exit(1);
        }
    }
}
