use super::*;

const EXAMPLE: &str = include_str!("../../config/example.toml");

#[test]
fn example_config_parses_into_an_engine_config() {
    let a = FileConfig::parse(EXAMPLE)
        .unwrap()
        .to_agent_config()
        .unwrap();
    assert_eq!(a.backend, Backend::None);
    assert_eq!(a.initiate, vec!["home".to_string()]);
    let c = &a.endpoint.connections[0];
    assert_eq!(
        c.ike_proposals[0].to_string(),
        "aes256gcm16-prfsha256-x25519"
    );
    assert_eq!(c.children[0].name, "net");
    assert_eq!(c.timers.dpd_delay, Some(Duration::from_secs(30)));
    // The example's IKE rekey_time is 4h: 24m at random off it.
    assert_eq!(c.timers.ike_rekey_time, Some(Duration::from_secs(4 * 3600)));
    assert_eq!(c.timers.ike_rand_time, Some(Duration::from_secs(24 * 60)));
    assert_eq!(c.timers.retransmit_timeout, Duration::from_secs(2));
    assert_eq!(c.timers.retransmit_tries, 5);
    assert_eq!(a.listen, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
}

#[test]
fn routes_follow_the_backend_and_reserved_tables_are_refused() {
    let cfg = |extra: &str| {
        FileConfig::parse(&EXAMPLE.replace("backend = \"none\"", extra))
            .unwrap()
            .to_agent_config()
    };
    assert_eq!(cfg("backend = \"none\"").unwrap().routes, None);
    assert_eq!(
        cfg("backend = \"xfrm\"").unwrap().routes,
        Some(crate::routes::RouteConfig {
            table: 220,
            priority: 220
        })
    );
    let off = EXAMPLE
        .replace("backend = \"none\"", "backend = \"xfrm\"")
        .replace("install_routes = true", "install_routes = false");
    let off = FileConfig::parse(&off).unwrap().to_agent_config().unwrap();
    assert_eq!(off.routes, None);
    let main = EXAMPLE
        .replace("backend = \"none\"", "backend = \"xfrm\"")
        .replace("routing_table = 220", "routing_table = 254");
    let err = FileConfig::parse(&main)
        .unwrap()
        .to_agent_config()
        .unwrap_err();
    assert!(err.to_string().contains("routing_table = 254"), "{err}");
}

#[test]
fn the_deployed_example_is_valid() {
    let text = include_str!("../../../deploy/mobike-agent.toml");
    let dir = tempfile::tempdir().unwrap();
    let psk = dir.path().join("office.psk");
    std::fs::write(&psk, "a-long-random-secret\n").unwrap();
    let text = text.replace("/etc/mobike-agent/office.psk", &psk.display().to_string());
    let a = FileConfig::parse(&text).unwrap().to_agent_config().unwrap();
    assert_eq!(a.backend, Backend::Xfrm);
    assert!(a.routes.is_some());
    assert_eq!(
        a.endpoint.connections[0].recovery,
        Recovery {
            restart_on_dead_peer: true,
            restart_on_peer_close: true,
            keyingtries: 0
        }
    );
    assert_eq!(a.initiate, ["office"]);
    assert!(a.listen_any && a.endpoint.connections[0].local_addr.is_none());
    let child = &a.endpoint.connections[0].children[0];
    assert_eq!(child.remote_ts.len(), 2);
    assert_eq!(child.rekey_time, Some(Duration::from_secs(3600)));
}

#[test]
fn every_configured_address_is_kept() {
    let text = EXAMPLE
        .replace(
            "local_addrs = [\"192.0.2.1\"]",
            "local_addrs = [\"192.0.2.1\", \"198.51.100.1\", \"2001:db8::1\"]",
        )
        .replace(
            "remote_addrs = [\"192.0.2.2\"]",
            "remote_addrs = [\"192.0.2.2\", \"203.0.113.2\"]",
        );
    let a = FileConfig::parse(&text).unwrap().to_agent_config().unwrap();
    let c = &a.endpoint.connections[0];
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    // The first of each is the one to initiate with.
    assert_eq!(c.local_addr, Some(SocketAddr::new(ip("192.0.2.1"), 500)));
    assert_eq!(c.remote_addr, Some(SocketAddr::new(ip("192.0.2.2"), 500)));
    assert_eq!(
        c.local_addrs().collect::<Vec<_>>(),
        [ip("192.0.2.1"), ip("198.51.100.1"), ip("2001:db8::1")]
    );
    assert_eq!(
        c.remote_addrs().map(|a| a.ip()).collect::<Vec<_>>(),
        [ip("192.0.2.2"), ip("203.0.113.2")]
    );
    // A responder accepts any configured peer address, no other.
    assert!(c.accepts_peer(ip("203.0.113.2")) && c.accepts_peer(ip("192.0.2.2")));
    assert!(!c.accepts_peer(ip("203.0.113.3")));
    // All are listened on.
    assert!(a.listen.contains(&ip("2001:db8::1")));
}

#[test]
fn unknown_keys_are_rejected() {
    let bad = EXAMPLE.replace("mobike = true", "mobike = true\nmobikke = 1");
    let err = FileConfig::parse(&bad).unwrap_err();
    let text = format!("{:?}", err);
    assert!(text.contains("mobikke"), "{text}");
    let bad = EXAMPLE.replace("[kernel]", "[kernel]\nflavour = \"x\"");
    assert!(FileConfig::parse(&bad).is_err());
}

#[test]
fn bad_values_name_the_connection() {
    let bad = EXAMPLE.replace(
        "aes256gcm16-prfsha256-x25519",
        "aes256gcm16-prfsha256-modp768",
    );
    let err = FileConfig::parse(&bad)
        .unwrap()
        .to_agent_config()
        .unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Proposal { connection, .. } if connection == "home"),
        "{err}"
    );
    let both = EXAMPLE.replace("psk = ", "psk_file = \"/nonexistent\"\npsk = ");
    let err = FileConfig::parse(&both)
        .unwrap()
        .to_agent_config()
        .unwrap_err();
    assert!(
        err.to_string().contains("exactly one of psk and psk_file"),
        "{err}"
    );
}

#[test]
fn child_limits_default_as_swanctl_and_hard_ones_must_exceed_soft_ones() {
    let child = |lines: &str| {
        let text = EXAMPLE.replace("rekey_time = \"1h\"\n", lines);
        FileConfig::parse(&text)
            .unwrap()
            .to_agent_config()
            .map(|a| a.endpoint.connections[0].children[0].clone())
    };
    let min = |m: u64| Some(Duration::from_secs(60 * m));
    // Nothing said: rekey after 1h, the kernel drops the SA at 66m.
    let c = child("").unwrap();
    assert_eq!(c.rekey_time, min(60));
    assert_eq!(c.rand_time, min(6), "life_time - rekey_time");
    assert_eq!(
        c.limits,
        ChildLimits {
            life_time: min(66),
            ..ChildLimits::default()
        }
    );
    let c = child("rekey_time = \"20m\"\nrekey_bytes = 1000000\nrekey_packets = 5000\n").unwrap();
    assert_eq!(c.rekey_time, min(20));
    assert_eq!(c.rand_time, min(2));
    assert_eq!(
        c.limits,
        ChildLimits {
            life_time: min(22),
            rekey_bytes: Some(1_000_000),
            life_bytes: Some(1_100_000),
            rekey_packets: Some(5000),
            life_packets: Some(5500),
        }
    );
    // Hard limits alone, and 0 as "none".
    let c = child("rekey_time = \"0\"\nlife_time = \"8h\"\nlife_bytes = 7\nrekey_packets = 0\n")
        .unwrap();
    assert_eq!(c.rekey_time, None);
    assert_eq!(c.rand_time, None);
    assert_eq!(
        c.limits,
        ChildLimits {
            life_time: min(480),
            life_bytes: Some(7),
            ..ChildLimits::default()
        }
    );
    for (lines, says) in [
        (
            "life_time = \"30m\"\n",
            "life_time (30m) must be more than rekey_time (1h)",
        ),
        (
            "rekey_bytes = 100\nlife_bytes = 100\n",
            "life_bytes (100) must be more than rekey_bytes (100)",
        ),
        (
            "rekey_packets = 9\nlife_packets = 8\n",
            "life_packets (8) must be more than rekey_packets (9)",
        ),
    ] {
        let err = child(lines).unwrap_err().to_string();
        assert!(
            err.contains(says) && err.contains("child `net`"),
            "{lines}: {err}"
        );
    }
    // An explicit rand_time, and none.
    assert_eq!(
        child("rand_time = \"90s\"\n").unwrap().rand_time,
        Some(Duration::from_secs(90))
    );
    assert_eq!(child("rand_time = \"0\"\n").unwrap().rand_time, None);
    let err = FileConfig::parse(&EXAMPLE.replace("rekey_time = \"1h\"", "rekey_bytes = \"1G\""))
        .unwrap_err();
    assert!(format!("{:?}", err).contains("rekey_bytes"), "{err:?}");
}

#[test]
fn transport_mode_is_host_to_host_without_mobike() {
    let cfg = |mobike: &str, lts: &str| {
        let text = EXAMPLE
            .replace("mobike = true", &format!("mobike = {mobike}"))
            .replace("mode = \"tunnel\"", "mode = \"transport\"")
            .replace(
                "local_ts = [\"10.1.0.0/24\"]",
                &format!("local_ts = [\"{lts}\"]"),
            )
            .replace(
                "remote_ts = [\"10.2.0.0/24\"]",
                "remote_ts = [\"192.0.2.2\"]",
            );
        FileConfig::parse(&text).and_then(|f| f.to_agent_config())
    };
    let ok = cfg("false", "192.0.2.1/32").unwrap();
    assert_eq!(ok.endpoint.connections[0].children[0].mode, Mode::Transport);
    let err = cfg("true", "192.0.2.1/32").unwrap_err().to_string();
    assert!(
        err.contains("mode `transport` needs mobike = false"),
        "{err}"
    );
    let err = cfg("false", "10.1.0.0/24").unwrap_err().to_string();
    assert!(
        err.contains("selector `10.1.0.0/24` is more than one address"),
        "{err}"
    );
    let err = FileConfig::parse(&EXAMPLE.replace("mode = \"tunnel\"", "mode = \"beet\""))
        .and_then(|f| f.to_agent_config())
        .unwrap_err()
        .to_string();
    assert!(err.contains("mode `beet` is not supported"), "{err}");
}

#[test]
fn recovery_as_swanctl_names_it() {
    let conn = |lines: &str| {
        let text = EXAMPLE.replace("mobike = true\n", &format!("mobike = true\n{lines}"));
        FileConfig::parse(&text)
            .and_then(|f| f.to_agent_config())
            .map(|a| a.endpoint.connections[0].recovery)
    };
    assert_eq!(conn("").unwrap(), Recovery::default());
    assert_eq!(
        conn("dpd_action = \"restart\"\nclose_action = \"start\"\nkeyingtries = 0\n").unwrap(),
        Recovery {
            restart_on_dead_peer: true,
            restart_on_peer_close: true,
            keyingtries: 0,
        }
    );
    assert_eq!(
        conn("dpd_action = \"clear\"\nclose_action = \"clear\"\n").unwrap(),
        Recovery::default()
    );
    for (lines, key) in [
        ("dpd_action = \"trap\"\n", "trap"),
        ("close_action = \"restart\"\n", "restart"),
        ("keyingtries = -1\n", "keyingtries"),
    ] {
        let err = format!("{:?}", conn(lines).unwrap_err());
        assert!(err.contains(key), "{lines}: {err}");
    }
}

#[test]
fn mobike_verify_and_no_nats() {
    let conn = |lines: &str| {
        let text = EXAMPLE.replace("mobike = true\n", &format!("mobike = true\n{lines}"));
        FileConfig::parse(&text)
            .and_then(|f| f.to_agent_config())
            .map(|a| {
                let c = &a.endpoint.connections[0];
                (c.mobike_verify, c.no_nats)
            })
    };
    use engine::MobikeVerify as V;
    assert_eq!(conn("").unwrap(), (V::Unlisted, false));
    assert_eq!(
        conn("mobike_verify = \"always\"\nno_nats = true\n").unwrap(),
        (V::Always, true)
    );
    assert_eq!(
        conn("mobike_verify = \"never\"\n").unwrap(),
        (V::Never, false)
    );
    assert_eq!(
        conn("mobike_verify = \"unlisted\"\n").unwrap(),
        (V::Unlisted, false)
    );
    let err = format!("{:?}", conn("mobike_verify = \"sometimes\"\n").unwrap_err());
    assert!(err.contains("sometimes"), "{err}");
}

#[test]
fn psk_file_is_read_without_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("k.psk");
    std::fs::write(&f, "from-a-file\n").unwrap();
    let text = EXAMPLE.replace(
        "psk = \"example-psk-change-me\"",
        &format!("psk_file = {:?}", f.display().to_string()),
    );
    let a = FileConfig::parse(&text).unwrap().to_agent_config().unwrap();
    assert_eq!(a.endpoint.connections[0].psk, b"from-a-file");
}

#[test]
fn ike_section_sets_the_half_open_limits_and_absent_keys_keep_the_defaults() {
    let cfg = |section: &str| {
        FileConfig::parse(&format!("{EXAMPLE}\n{section}"))
            .and_then(|f| f.to_agent_config())
            .map(|a| a.endpoint)
    };
    let d = cfg("").unwrap();
    assert_eq!(d.half_open_limit, engine::DEFAULT_HALF_OPEN_LIMIT);
    assert_eq!(d.half_open_per_source, engine::DEFAULT_HALF_OPEN_PER_SOURCE);
    assert_eq!(d.cookie_threshold, engine::DEFAULT_COOKIE_THRESHOLD);
    assert_eq!(d.half_open_timeout, Duration::from_secs(30));
    assert_eq!(d.cookie_rotation, Duration::from_secs(120));
    let e = cfg(
        "[ike]\nhalf_open_timeout = \"10s\"\nhalf_open_limit = 50\nhalf_open_per_source = 2\n\
         cookie_threshold = 5\ncookie_rotation = \"1m\"",
    )
    .unwrap();
    assert_eq!(
        (
            e.half_open_timeout,
            e.half_open_limit,
            e.half_open_per_source,
            e.cookie_threshold,
            e.cookie_rotation
        ),
        (Duration::from_secs(10), 50, 2, 5, Duration::from_secs(60))
    );
    let err = |section: &str| errchain::chain(&cfg(section).unwrap_err()).to_string();
    assert!(err("[ike]\nhalf_open_timeout = \"0s\"").contains("half_open_timeout"));
    assert!(err("[ike]\ncookie_rotation = \"soon\"").contains("cookie_rotation"));
    assert!(
        err("[ike]\nhalf_open_limit = 10\ncookie_threshold = 20").contains("cookie_threshold = 20")
    );
    assert!(err("[ike]\nhalf_open = 1").contains("half_open"));
}

/// `send_cert` and `send_certreq` concern certificates: with a pre-shared
/// key each way they are refused by name, and values other than
/// swanctl's are refused when parsed. (What they do: pki::engine_tests.)
#[test]
fn send_cert_and_send_certreq_need_certificates() {
    let with = |line: &str| {
        FileConfig::parse(&EXAMPLE.replace("mobike = true", &format!("mobike = true\n{line}")))
    };
    for (line, what) in [
        (
            "send_cert = \"always\"",
            "send_cert needs local_auth = \"pubkey\"",
        ),
        (
            "send_certreq = false",
            "send_certreq needs remote_auth = \"pubkey\"",
        ),
    ] {
        let err = with(line).unwrap().to_agent_config().unwrap_err();
        assert!(err.to_string().contains(what), "{line}: {err}");
    }
    for v in ["ifasked", "always", "never"] {
        assert!(with(&format!("send_cert = \"{v}\"")).is_ok(), "{v}");
    }
    let err = with("send_cert = \"sometimes\"").unwrap_err();
    assert!(format!("{err:?}").contains("sometimes"), "{err:?}");
}
