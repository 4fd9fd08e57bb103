//! An IKE_SA_INIT flood into the agent's namespace while it keeps an IKE
//! SA with charon alive (issue 12's load test). The agent (kernel backend
//! `none`) in netns A at 192.0.2.1 has an IKE SA with charon in netns B at
//! 192.0.2.2, both sending liveness checks every 2 s; a second connection
//! takes road warriors from anywhere, so the flood makes half-open SAs.
//! From 128 addresses:
//!
//! 1. for 5 s, IKE_SA_INIT requests at a few thousand per second that
//!    never echo a cookie (as spoofed sources would);
//! 2. for 5 s, one address that echoes every cookie demand, as fast as the
//!    answers come.
//!
//! Throughout, the agent's resident memory (VmRSS) stays under 100 MiB,
//! and afterwards the IKE SA with charon is the same one, established,
//! and neither end gave up on the other. The flood comes from netns C
//! (198.18.0.100-227) over a link of its own to the agent (198.18.0.1). Needs root, iproute2 and
//! strongSwan (see `interop_charon.rs`), so it is ignored by default:
//! `cargo test -p mobike-agent --test flood_charon -- --ignored`.

use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use mobike_agent::{
    config_file::FileConfig,
    engine::{Command, Endpoint},
    proto::{Message, Notify, NotifyType, Payload},
};
use system_tests::{
    charon::{self, Charon},
    netns::{self, Netns},
    process, wait,
};

const BIN: &str = env!("CARGO_BIN_EXE_mobike-agent");
const PSK: &str = "flood-psk-0123456789";
const SUITE: &str = "aes256gcm16-prfsha256-x25519";
/// The agent's resident memory must stay below this.
const RSS_LIMIT_KIB: u64 = 100 * 1024;

fn charon_conf() -> String {
    format!(
        "connections {{ c {{ version = 2
  remote_addrs = 192.0.2.1
  proposals = {SUITE}
  dpd_delay = 2s
  mobike = yes
  encap = yes
  local {{ auth = psk
          id = b.test }}
  remote {{ auth = psk
           id = a.test }}
  children {{ net {{ local_ts = 10.2.0.0/24
                   remote_ts = 10.1.0.0/24
                   esp_proposals = aes256gcm16 }} }} }} }}
secrets {{ ike-c {{ id-a = a.test
  id-b = b.test
  secret = \"{PSK}\" }} }}
"
    )
}

fn agent_conf() -> String {
    format!(
        "[kernel]
backend = \"none\"
[connections.c]
local_addrs = [\"192.0.2.1\"]
remote_addrs = [\"192.0.2.2\"]
local_id = \"a.test\"
remote_id = \"b.test\"
psk = \"{PSK}\"
proposals = [\"{SUITE}\"]
start = \"initiate\"
dpd_delay = \"2s\"
retransmit_timeout = \"1s\"
retransmit_tries = 3
[connections.c.children.net]
local_ts = [\"10.1.0.0/24\"]
remote_ts = [\"10.2.0.0/24\"]
esp_proposals = [\"aes256gcm16\"]
[connections.rw]
local_id = \"gw.test\"
remote_id = \"rw.test\"
psk = \"{PSK}\"
proposals = [\"{SUITE}\"]
[connections.rw.children.net]
local_ts = [\"10.1.0.0/24\"]
remote_ts = [\"10.9.0.0/24\"]
esp_proposals = [\"aes256gcm16\"]
"
    )
}

/// A road warrior's IKE_SA_INIT for the agent, made by the engine itself.
fn init_request() -> Vec<u8> {
    let text = format!(
        "[connections.rw]
local_addrs = [\"198.18.0.100\"]
remote_addrs = [\"198.18.0.1\"]
local_id = \"rw.test\"
remote_id = \"gw.test\"
psk = \"{PSK}\"
proposals = [\"{SUITE}\"]
mobike = false
[connections.rw.children.net]
local_ts = [\"10.9.0.0/24\"]
remote_ts = [\"10.1.0.0/24\"]
esp_proposals = [\"aes256gcm16\"]
"
    );
    let cfg = FileConfig::parse(&text)
        .and_then(|f| f.to_agent_config())
        .expect("road warrior config");
    let mut ep = Endpoint::new(cfg.endpoint).expect("endpoint");
    ep.handle_command(
        Instant::now(),
        Command::Initiate {
            connection: "rw".into(),
            local: None,
        },
    )
    .expect("initiate");
    ep.poll_transmit().expect("IKE_SA_INIT").payload
}

/// `template` with SPIi `spi` (a new IKE SA each time).
fn with_spi(template: &[u8], spi: u64) -> Vec<u8> {
    let mut m = template.to_vec();
    m[..8].copy_from_slice(&spi.to_be_bytes());
    m
}

/// `request` with the COOKIE notify of `answer` first (RFC 7296 §2.6).
fn echo_cookie(request: &[u8], answer: &[u8]) -> Option<Vec<u8>> {
    let a = Message::decode(answer).ok()?;
    let cookie = a.payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.ty == NotifyType::COOKIE => Some(n.data.clone()),
        _ => None,
    })?;
    let mut m = Message::decode(request).ok()?;
    m.payloads
        .insert(0, Payload::Notify(Notify::new(NotifyType::COOKIE, cookie)));
    Some(m.encode())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        process::stop(&mut self.child, Duration::from_secs(10));
    }
}

/// The IKE SPIs charon lists (`<spi_i>_i <spi_r>_r`, `*` marking its own).
fn ike_spis(list: &str) -> Option<String> {
    list.lines().find_map(|l| {
        l.split_once("ESTABLISHED, IKEv2, ")
            .map(|(_, spis)| spis.trim().to_owned())
    })
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan (see module doc)"]
fn the_agent_keeps_its_sa_and_bounded_memory_under_an_ike_sa_init_flood() {
    assert!(
        charon::available(),
        "charon and swanctl are not installed (see interop_charon.rs)"
    );
    let a = Netns::new("mbkflA");
    let b = Netns::new("mbkflB");
    let c = Netns::new("mbkflC");
    netns::veth(&a, "vA", &b, "vB");
    a.addr_add("vA", "192.0.2.1/24", &[]);
    b.addr_add("vB", "192.0.2.2/24", &[]);
    b.veth("lanB0", "lanB1");
    b.addr_add("lanB0", "10.2.0.1/24", &[]);
    // The flood comes from C, over a link of its own.
    netns::veth(&a, "vF", &c, "vC");
    a.addr_add("vF", "198.18.0.1/24", &[]);
    let flooders: Vec<String> = (100..228).map(|i| format!("198.18.0.{i}")).collect();
    for f in &flooders {
        c.addr_add("vC", &format!("{f}/24"), &[]);
    }
    for (ns, dev) in [
        (&a, "vA"),
        (&a, "vF"),
        (&b, "vB"),
        (&b, "lanB0"),
        (&b, "lanB1"),
        (&c, "vC"),
    ] {
        ns.up(dev);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("B")).expect("charon's dir");
    let charon = Charon::start(&b, &dir.path().join("B"), &charon_conf());

    let conf = dir.path().join("agent.toml");
    std::fs::write(&conf, agent_conf()).expect("agent config");
    let log = dir.path().join("agent.log");
    let child = a
        .command(BIN)
        .arg("--config")
        .arg(&conf)
        .env("MOBIKE_AGENT_LOG", "mobike_agent=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("agent log"))
        .spawn()
        .expect("spawn mobike-agent");
    let mut agent = Agent { child, log };
    let pid = agent.child.id();
    let established = wait::poll(
        Instant::now() + Duration::from_secs(20),
        Duration::from_millis(100),
        || ike_spis(&charon.list_sas()),
    );
    let Some(spis) = established else {
        panic!("no IKE SA with charon:\n{}", agent.log_text());
    };

    let template = init_request();
    let target: SocketAddr = "198.18.0.1:500".parse().unwrap();
    let mut peak = rss_kib(pid).expect("agent RSS");
    let sample = |peak: &mut u64| {
        if let Some(r) = rss_kib(pid) {
            *peak = (*peak).max(r);
        }
    };

    // 1: many sources that never echo a cookie.
    let sent = c.enter(|| {
        let socks: Vec<UdpSocket> = flooders
            .iter()
            .map(|f| UdpSocket::bind((f.as_str(), 0)).expect("flood socket"))
            .collect();
        let end = Instant::now() + Duration::from_secs(5);
        let mut n: u64 = 0;
        while Instant::now() < end {
            for s in &socks {
                n += 1;
                let _ = s.send_to(&with_spi(&template, 0x1000_0000 + n), target);
            }
            // 128 every 25 ms: about 5,000 a second.
            sample(&mut peak);
            std::thread::sleep(Duration::from_millis(25));
        }
        n
    });
    assert!(sent > 10_000, "the flood sent {sent} requests");

    // 2: one source that echoes every cookie demand. The agent answers
    // the echo with its IKE_SA_INIT response (a half-open SA) only while
    // that source has fewer than half_open_per_source (5) of them; the
    // rest it drops unanswered.
    let (echoed, accepted) = c.enter(|| {
        let s = UdpSocket::bind(("198.18.0.100", 0)).expect("echo socket");
        s.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let end = Instant::now() + Duration::from_secs(5);
        let (mut echoed, mut accepted, mut n) = (0u64, 0u64, 0u64);
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            n += 1;
            let req = with_spi(&template, 0x2000_0000 + n);
            let _ = s.send_to(&req, target);
            let Ok(len) = s.recv(&mut buf) else { continue };
            let Some(again) = echo_cookie(&req, &buf[..len]) else {
                continue;
            };
            let _ = s.send_to(&again, target);
            echoed += 1;
            // The answer to the echo, if any, for this SPIi.
            while let Ok(len) = s.recv(&mut buf) {
                let Ok(m) = Message::decode(&buf[..len]) else {
                    continue;
                };
                if m.header.spi_i == 0x2000_0000 + n
                    && m.payloads.iter().any(|p| matches!(p, Payload::Sa(_)))
                {
                    accepted += 1;
                    break;
                }
            }
            if n % 256 == 0 {
                sample(&mut peak);
            }
        }
        (echoed, accepted)
    });
    sample(&mut peak);
    assert!(echoed > 100, "cookies echoed {echoed}");
    assert!(
        (1..=5).contains(&accepted),
        "{accepted} half-open SAs for one source ({echoed} cookies echoed)"
    );

    // The liveness checks both ways go on after the flood: let two rounds
    // pass, then the IKE SA must be the same one.
    std::thread::sleep(Duration::from_secs(5));
    let log = agent.log_text();
    eprintln!(
        "flood: {sent} requests without cookies; {echoed} cookies echoed from one source, {accepted} accepted; agent RSS peak {peak} KiB"
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "agent RSS peaked at {peak} KiB\n{}",
        tail(&log)
    );
    assert!(
        !log.contains("giving up on the IKE SA"),
        "the agent gave up on charon:\n{}",
        tail(&log)
    );
    assert_eq!(
        ike_spis(&charon.list_sas()).as_deref(),
        Some(spis.as_str()),
        "charon's IKE SA changed or went:\n{}",
        tail(&log)
    );
    assert!(
        matches!(agent.child.try_wait(), Ok(None)),
        "the agent exited"
    );
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
