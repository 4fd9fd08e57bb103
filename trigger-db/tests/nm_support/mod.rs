//! Test support for the NetworkManager source: a private "system" bus
//! (dbus-daemon with a config of its own, listening on a socket in the
//! test's temporary directory), real NetworkManager in a network namespace
//! on that bus, and python3-dbusmock's NetworkManager template on it. Each is
//! a guard that kills its process when dropped, also when the test fails.
//!
//! NetworkManager runs under `ip netns exec` + `unshare -m` with tmpfs over
//! /run and /var/lib/NetworkManager, /sys read-only (else it waits for udevd
//! forever) and auth-polkit off; every path it writes is in the test's
//! directory. Nothing of the host's NetworkManager, bus or interfaces is
//! touched. Needs: dbus-daemon (dbus), dbus-send (dbus-bin), NetworkManager
//! and nmcli (network-manager), python3-dbusmock, iproute2, util-linux
//! (unshare).

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use system_tests::{process, wait};

fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// How often the helpers here poll what they wait for.
const POLL: Duration = Duration::from_millis(50);

/// A dbus-daemon acting as the system bus, private to one test.
#[derive(Debug)]
pub struct Bus {
    child: Option<Child>,
    pub socket: PathBuf,
    pub address: String,
}

impl Bus {
    /// The bus's address before it runs (to start clients first).
    pub fn address_in(dir: &Path) -> String {
        format!("unix:path={}", dir.join("system_bus_socket").display())
    }

    pub fn start(dir: &Path) -> Self {
        let socket = dir.join("system_bus_socket");
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let log = dir.join("dbus.log");
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile"])
            .stdin(Stdio::null())
            .stdout(log_file(&log))
            .stderr(log_file(&log))
            .spawn()
            .expect("spawn dbus-daemon (Debian package dbus)");
        let bus = Self {
            child: Some(child),
            address: format!("unix:path={}", socket.display()),
            socket,
        };
        wait::until(
            "the private bus socket",
            Duration::from_secs(10),
            POLL,
            || bus.socket.exists(),
        );
        bus
    }

    /// A command with DBUS_SYSTEM_BUS_ADDRESS pointing at this bus.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DBUS_SYSTEM_BUS_ADDRESS", &self.address);
        c
    }

    /// Whether `name` has an owner on this bus.
    pub fn has_owner(&self, name: &str) -> bool {
        Command::new("dbus-send")
            .arg(format!("--bus={}", self.address))
            .args([
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
            ])
            .arg(format!("string:{name}"))
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::stop(&mut c, Duration::from_secs(2));
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Real NetworkManager in network namespace `netns`, on `bus`.
#[derive(Debug)]
pub struct NetworkManager {
    child: Option<Child>,
    dir: PathBuf,
    netns: String,
    bus_address: String,
    pub log: PathBuf,
}

impl NetworkManager {
    /// Starts NetworkManager with its files under `dir` (profiles in
    /// `dir/conns` survive a restart) and waits until it runs.
    pub fn start(bus: &Bus, netns: &str, dir: &Path) -> Self {
        for d in ["conf.d", "sysconf.d", "conns", "state"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(
            dir.join("NetworkManager.conf"),
            format!(
                "[main]\nplugins=keyfile\nauth-polkit=false\ndhcp=internal\ndns=none\n\
                 rc-manager=unmanaged\nsystemd-resolved=false\nhostname-mode=none\n\
                 no-auto-default=*\n[keyfile]\npath={}\n[connectivity]\nenabled=false\n\
                 [logging]\nlevel=INFO\n",
                dir.join("conns").display()
            ),
        )
        .unwrap();
        let mut nm = Self {
            child: None,
            dir: dir.to_owned(),
            netns: netns.to_owned(),
            bus_address: bus.address.clone(),
            log: dir.join("nm.log"),
        };
        nm.spawn(bus);
        nm
    }

    fn spawn(&mut self, bus: &Bus) {
        let d = self.dir.display();
        // `ip netns exec`, `unshare` and `sh` all exec: the child is
        // NetworkManager itself, so signals reach it.
        let script = format!(
            "mount -o remount,bind,ro /sys && \
             mount -t tmpfs tmpfs /run && mkdir -p /var/lib/NetworkManager && \
             mount -t tmpfs tmpfs /var/lib/NetworkManager && \
             exec NetworkManager --debug --config={d}/NetworkManager.conf \
               --config-dir={d}/conf.d --system-config-dir={d}/sysconf.d \
               --intern-config={d}/state/intern.conf --state-file={d}/state/NM.state \
               --pid-file={d}/state/nm.pid"
        );
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "unshare",
                "-m",
                "sh",
                "-c",
                &script,
            ])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .stdin(Stdio::null())
            .stdout(log_file(&self.log))
            .stderr(log_file(&self.log))
            .spawn()
            .expect("spawn NetworkManager (Debian package network-manager)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = bus
                .command("nmcli")
                .args(["-t", "-f", "RUNNING", "general"])
                .output();
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("running")) {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("NetworkManager exited ({st}): {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "NetworkManager did not come up: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM and wait: NetworkManager leaves the bus.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::stop(&mut c, Duration::from_secs(10));
        }
    }

    /// A new NetworkManager process with the same files.
    pub fn restart(&mut self, bus: &Bus) {
        self.stop();
        self.spawn(bus);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `nmcli ARGS...` on this instance's bus, which must succeed.
    pub fn nmcli(&self, args: &[&str]) -> String {
        let out = Command::new("nmcli")
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .output()
            .expect("nmcli");
        assert!(
            out.status.success(),
            "nmcli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// NMDeviceState of `device` as nmcli shows it (e.g. 100), if known.
    pub fn device_state(&self, device: &str) -> Option<u32> {
        let out = Command::new("nmcli")
            .args(["-g", "GENERAL.STATE", "device", "show", device])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

impl Drop for NetworkManager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// NetworkManager's bus name and object, and the interfaces the mock's
/// tests drive.
pub const NM: &str = "org.freedesktop.NetworkManager";
pub const NM_PATH: &str = "/org/freedesktop/NetworkManager";
pub const MOCK: &str = "org.freedesktop.DBus.Mock";
pub const WIRELESS: &str = "org.freedesktop.NetworkManager.Device.Wireless";
pub const AP_IFACE: &str = "org.freedesktop.NetworkManager.AccessPoint";

/// Sets a property of a mock object (`Mock.SetProperty`, which emits
/// PropertiesChanged as NetworkManager would).
pub async fn set_property(
    conn: &zbus::Connection,
    path: &str,
    iface: &str,
    name: &str,
    value: zbus::Variant<'_>,
) -> zbus::Result<()> {
    conn.call_method(
        Some(NM),
        NM_PATH,
        Some(MOCK),
        "SetProperty",
        &(path, iface, name, value),
    )
    .await
    .map(drop)
}

/// Adds to the mock a Wi-Fi device `ifname` with one access point ("ap1",
/// Strength `strength`) that is not yet its ActiveAccessPoint (the
/// template has no such property: it is added, unset), and activates the
/// device. Returns the device's and the access point's object paths.
pub async fn add_active_wifi(
    conn: &zbus::Connection,
    ifname: &str,
    strength: u8,
) -> zbus::Result<(String, String)> {
    let mock = |method: &'static str| (Some(NM), NM_PATH, Some(MOCK), method);
    let (dest, path, iface, method) = mock("AddWiFiDevice");
    let dev: String = conn
        .call_method(
            dest,
            path,
            iface,
            method,
            &(format!("{ifname}dev"), ifname, 30i32),
        )
        .await?
        .body()
        .deserialize()?;
    let (dest, path, iface, method) = mock("AddAccessPoint");
    let ap: String = conn
        .call_method(
            dest,
            path,
            iface,
            method,
            &(
                dev.as_str(),
                "ap1",
                "mobike",
                "00:11:22:33:44:55",
                2u32,
                2412u32,
                54000u32,
                strength,
                0u32,
            ),
        )
        .await?
        .body()
        .deserialize()?;
    let unset = zbus::Variant::from(zbus::ObjectPath::try_from("/")?);
    conn.call_method(
        Some(NM),
        dev.as_str(),
        Some(MOCK),
        "AddProperty",
        &(WIRELESS, "ActiveAccessPoint", unset),
    )
    .await?;
    let (dest, path, iface, method) = mock("SetDeviceActive");
    conn.call_method(
        dest,
        path,
        iface,
        method,
        &(
            dev.as_str(),
            "/org/freedesktop/NetworkManager/ActiveConnection/fake",
        ),
    )
    .await?;
    Ok((dev, ap))
}

/// python3-dbusmock's NetworkManager template on `bus`.
#[derive(Debug)]
pub struct NmMock {
    child: Option<Child>,
    pub log: PathBuf,
}

impl NmMock {
    pub fn start(bus: &Bus, dir: &Path) -> Self {
        let log = dir.join("mock.log");
        // Debian's python3, where python3-dbusmock is installed.
        let child = bus
            .command("/usr/bin/python3")
            .args(["-m", "dbusmock", "--system", "--template", "networkmanager"])
            .stdin(Stdio::null())
            .stdout(log_file(&log))
            .stderr(log_file(&log))
            .spawn()
            .expect("spawn python3 -m dbusmock (Debian package python3-dbusmock)");
        let mock = Self {
            child: Some(child),
            log,
        };
        wait::until(
            "the NetworkManager mock",
            Duration::from_secs(20),
            POLL,
            || bus.has_owner("org.freedesktop.NetworkManager"),
        );
        mock
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::stop(&mut c, Duration::from_secs(5));
        }
    }
}

impl Drop for NmMock {
    fn drop(&mut self) {
        self.stop();
    }
}
