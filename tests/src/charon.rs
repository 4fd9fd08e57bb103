//! strongSwan's charon as an IKEv2 peer for interop tests: its own
//! strongswan.conf, swanctl.conf, VICI socket (`charon.vici`) and log
//! (`charon.log`, IKE at level 2) in a directory the caller owns, started
//! inside a [`Netns`] with a private /run (charon's pidfile path is fixed),
//! driven with swanctl, stopped on drop.
//!
//! charon uses kernel-libipsec (userspace ESP over a TUN device, for
//! kernels without ESP such as the CI host's), which needs ESP-in-UDP:
//! connections set `encap = yes`. Needs the Debian packages
//! strongswan-charon, strongswan-swanctl, libstrongswan-standard-plugins
//! and libcharon-extra-plugins.

use std::{
    path::{Path, PathBuf},
    process::{Child, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{netns::Netns, process, wait};

/// The charon binary of the Debian packages.
pub const CHARON: &str = "/usr/lib/ipsec/charon";

/// Whether charon and swanctl are installed.
pub fn available() -> bool {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).exists()))
    };
    Path::new(CHARON).exists() && on_path("swanctl")
}

/// A charon process, killed when dropped.
#[derive(Debug)]
pub struct Charon {
    dir: PathBuf,
    child: Option<Child>,
}

impl Charon {
    /// Starts charon in `ns` with its files under `dir` and the
    /// connections and secrets of `swanctl_conf` loaded, and waits until
    /// swanctl has loaded them.
    pub fn start(ns: &Netns, dir: &Path, swanctl_conf: &str) -> Self {
        Self::start_with(ns, dir, swanctl_conf, "")
    }

    /// [`Charon::start`] with `settings` added to the `charon { }` section
    /// of its strongswan.conf (e.g. `signature_authentication = no`).
    pub fn start_with(ns: &Netns, dir: &Path, swanctl_conf: &str, settings: &str) -> Self {
        // swanctl --load-all complains about missing credential dirs.
        for d in [
            "x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "pubkey", "private",
            "rsa", "ecdsa", "bliss", "pkcs8", "pkcs12",
        ] {
            std::fs::create_dir_all(dir.join(d)).expect("charon credential dir");
        }
        let mut c = Self {
            dir: dir.to_owned(),
            child: None,
        };
        write(&c.conf(), &strongswan_conf(dir, settings));
        write(&c.path("swanctl.conf"), swanctl_conf);
        let _ = std::fs::remove_file(c.vici());
        let script = format!(
            "mount -t tmpfs tmpfs /run && exec env STRONGSWAN_CONF={} {CHARON}",
            c.conf().display()
        );
        let out = std::fs::File::create(c.path("charon.stdout")).expect("charon.stdout");
        let child = ns
            .command("unshare")
            .args(["-m", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("charon.stdout"))
            .stderr(out)
            .spawn()
            .expect("spawn charon");
        c.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let _ = wait::poll(deadline, Duration::from_millis(100), || {
            c.vici().exists().then_some(())
        });
        let file = c.path("swanctl.conf");
        let file = file.to_str().expect("UTF-8 path");
        let deadline = Instant::now() + Duration::from_secs(5);
        wait::poll(deadline, Duration::from_millis(100), || {
            c.swanctl(&["--load-all", "--file", file])
                .status
                .success()
                .then_some(())
        })
        .unwrap_or_else(|| {
            let stdout = std::fs::read_to_string(c.path("charon.stdout")).unwrap_or_default();
            c.stop();
            panic!("swanctl --load-all failed: {stdout}")
        });
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn conf(&self) -> PathBuf {
        self.path("strongswan.conf")
    }

    fn vici(&self) -> PathBuf {
        self.path("charon.vici")
    }

    /// `swanctl ARGS --uri <its VICI socket>`.
    pub fn swanctl(&self, args: &[&str]) -> Output {
        std::process::Command::new("swanctl")
            .args(args)
            .arg("--uri")
            .arg(format!("unix://{}", self.vici().display()))
            .env("STRONGSWAN_CONF", self.conf())
            .output()
            .expect("run swanctl")
    }

    /// What `swanctl --list-sas` prints (nothing if it fails).
    pub fn list_sas(&self) -> String {
        let out = self.swanctl(&["--list-sas"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether `swanctl --list-sas` mentions `text`.
    pub fn has(&self, text: &str) -> bool {
        self.list_sas().contains(text)
    }

    /// The SPIs of the CHILD_SAs listed, inbound and outbound, in order.
    pub fn child_spis(&self) -> Vec<String> {
        self.list_sas()
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                match (w.next(), w.next()) {
                    (Some("in" | "out"), Some(spi)) => Some(spi.to_owned()),
                    _ => None,
                }
            })
            .collect()
    }

    /// SIGKILL: charon dies without a word to its peers.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and up to 10 s for the exit, then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::stop(&mut c, Duration::from_secs(10));
        }
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// charon with kernel-libipsec before kernel-netlink (the first IPsec
/// backend registered wins; kernel-netlink still does addresses and
/// routes), VICI on a socket in `dir`, IKE logged at level 2 to
/// `dir/charon.log`, 1 s retransmits, 3 tries; `settings` added to the
/// `charon` section.
fn strongswan_conf(dir: &Path, settings: &str) -> String {
    let d = dir.display();
    format!(
        "charon {{
  load = random nonce openssl pem pkcs1 x509 pubkey kdf kernel-libipsec kernel-netlink socket-default vici
  install_routes = yes
  retransmit_timeout = 1.0
  retransmit_tries = 3
  {settings}
  plugins {{ vici {{ socket = unix://{d}/charon.vici }} }}
  filelog {{ main {{ path = {d}/charon.log
    time_format = %T
    flush_line = yes
    default = 1
    ike = 2 }} }}
}}
swanctl {{ load = pem pkcs1 x509 pubkey openssl random nonce
  socket = unix://{d}/charon.vici }}
"
    )
}
