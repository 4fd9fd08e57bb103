//! Telling systemd the daemon's state (`Type=notify`, sd_notify(3)) through
//! the `sd-notify` crate: READY=1 once the daemon serves, STATUS= lines,
//! RELOADING=1 (with MONOTONIC_USEC, as `Type=notify-reload` wants) and
//! READY=1 around a configuration reload, STOPPING=1, and WATCHDOG=1 pings
//! at half the `WatchdogSec` the service manager set.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd) every call does
//! nothing. A failed send is logged once at warning level and otherwise
//! ignored: the daemon's work does not depend on systemd hearing it.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use sd_notify::NotifyState;
use tracing::warn;

/// The daemon's end of the notify socket.
#[derive(Debug)]
pub struct Notifier {
    watchdog: Option<Duration>,
    warned: AtomicBool,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (left in the environment:
    /// the daemon may notify from any thread for its whole life).
    pub fn from_env() -> Self {
        let mut usec = 0;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec))
            .filter(|d| !d.is_zero());
        Self {
            watchdog,
            warned: AtomicBool::new(false),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(false, states)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET); going on without");
        }
    }

    /// Serving: READY=1 with a first status line.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A status line (`systemctl status` shows the last one).
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// A reload starts; [`Notifier::ready`] when it is done.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// How often to call [`Notifier::watchdog`]: half the watchdog timeout,
    /// or `None` when the service has no watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// WATCHDOG=1: the daemon's loop is alive.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}
