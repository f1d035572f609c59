//! The leader's watchdog device (`watchdog` section): Linux's watchdog API on `/dev/watchdog`
//! (a hardware watchdog or the `softdog` module).
//!
//! When to feed, let run down or disarm is decided by the pure rule in
//! [`rampart_core::watchdog`]; this adapter only does it: open and set the timeout when arming,
//! a keepalive ioctl when feeding, and the magic close (`V`, then close) when disarming.
//!
//! Invariants:
//! * a disarm always writes the magic character before closing, so a member that steps down
//!   cleanly never resets its machine; dropping an armed [`Device`] any other way (the agent
//!   panicking or being killed) leaves it armed on purpose: a leader that died without stepping
//!   down must not keep a writable primary once the timeout has passed;
//! * the timeout the kernel actually applied is read back and used, since drivers round it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use rampart_config::{Watchdog as WatchdogConfig, WatchdogMode};
use rampart_core::watchdog::WatchdogStep;
use tracing::{info, warn};

use super::ports::WatchdogDevice;

// Linux's <linux/watchdog.h>: ioctl numbers on type 'W'.
nix::ioctl_read!(wdioc_keepalive, b'W', 5, libc_int);
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc_int);
nix::ioctl_read!(wdioc_gettimeout, b'W', 7, libc_int);

#[allow(non_camel_case_types)]
type libc_int = std::os::raw::c_int;

/// An open, armed watchdog device.
#[derive(Debug)]
pub struct Device {
    file: File,
    path: PathBuf,
    /// The timeout the driver applied (drivers round).
    applied_secs: u64,
}

impl Device {
    /// Opens `path` (which arms it) and sets its timeout.
    pub fn arm(path: &Path, timeout_secs: u64) -> Result<Device, String> {
        let file = OpenOptions::new().write(true).open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        let mut dev = Device { file, path: path.to_path_buf(), applied_secs: timeout_secs };
        let mut t = libc_int::try_from(timeout_secs).unwrap_or(libc_int::MAX);
        // SAFETY: the fd is open for the duration of the call and `t` outlives it.
        let set = unsafe { wdioc_settimeout(dev.file.as_raw_fd(), &mut t) };
        if let Err(e) = set {
            // Not a watchdog (or one without a settable timeout): close it with the magic
            // character, since opening may have armed it.
            let why = format!("{} is not a usable watchdog: setting its timeout: {e}", path.display());
            dev.disarm();
            return Err(why);
        }
        let mut applied: libc_int = 0;
        // SAFETY: as above.
        if unsafe { wdioc_gettimeout(dev.file.as_raw_fd(), &mut applied) }.is_ok() && applied > 0 {
            dev.applied_secs = applied as u64;
        }
        Ok(dev)
    }

    /// Feeds the watchdog.
    pub fn keepalive(&mut self) -> Result<(), String> {
        let mut dummy: libc_int = 0;
        // SAFETY: the fd is open and `dummy` outlives the call.
        unsafe { wdioc_keepalive(self.file.as_raw_fd(), &mut dummy) }
            .map(|_| ())
            .map_err(|e| format!("feeding {}: {e}", self.path.display()))
    }

    /// The timeout the device applies, in seconds.
    pub fn timeout_secs(&self) -> u64 {
        self.applied_secs
    }

    /// Disarms with the magic close.
    pub fn disarm(mut self) {
        if let Err(e) = self.file.write_all(b"V").and_then(|()| self.file.flush()) {
            warn!("disarming {}: {e} (it may still reset the machine)", self.path.display());
        }
    }
}

/// The Linux watchdog device as the [`WatchdogDevice`] port: the open [`Device`] while armed.
#[derive(Debug, Default)]
pub struct LinuxWatchdog {
    open: Option<Device>,
}

impl WatchdogDevice for LinuxWatchdog {
    fn writable(&self, path: &Path) -> Result<(), String> {
        nix::unistd::access(path, nix::unistd::AccessFlags::W_OK)
            .map_err(|e| format!("{} is not writable: {e}", path.display()))
    }

    fn arm(&mut self, path: &Path, timeout_secs: u64) -> Result<u64, String> {
        let dev = Device::arm(path, timeout_secs)?;
        let applied = dev.timeout_secs();
        if let Some(old) = self.open.replace(dev) {
            old.disarm();
        }
        Ok(applied)
    }

    fn keepalive(&mut self) -> Result<(), String> {
        match &mut self.open {
            Some(dev) => dev.keepalive(),
            None => Err("the watchdog is not armed".into()),
        }
    }

    fn disarm(&mut self) {
        if let Some(dev) = self.open.take() {
            dev.disarm();
        }
    }
}

/// The timeouts of an armed device.
#[derive(Clone, Copy, Debug)]
struct Armed {
    /// The timeout asked for (what a changed ttl is compared with).
    requested_secs: u64,
    /// The timeout the driver applied (drivers round): what the safety rule must use.
    applied_secs: u64,
}

/// The watchdog as the driver uses it: configuration plus the device port, armed or not.
#[derive(Debug)]
pub struct Watchdog<W> {
    cfg: WatchdogConfig,
    device: W,
    armed: Option<Armed>,
    /// The last arming error, reported once until it changes.
    reported: Option<String>,
    /// When the device last failed to arm (or failed the check at start), and why: with
    /// `mode: required` the member counts as unable to lead for a ttl after it.
    failed: Option<(Instant, String)>,
}

impl<W: WatchdogDevice> Watchdog<W> {
    /// A disarmed watchdog for this configuration, over `device`.
    pub fn new(cfg: WatchdogConfig, device: W) -> Watchdog<W> {
        Watchdog { cfg, device, armed: None, reported: None, failed: None }
    }

    /// Whether the device is armed now.
    pub fn is_armed(&self) -> bool {
        self.armed.is_some()
    }

    /// `mode: required`.
    pub fn required(&self) -> bool {
        self.cfg.mode == WatchdogMode::Required
    }

    /// Takes a reloaded configuration: an armed device that is no longer wanted (mode off, or
    /// another device) is disarmed; a required one is checked again.
    pub fn reconfigure(&mut self, cfg: WatchdogConfig, ttl: u64) {
        if cfg == self.cfg {
            return;
        }
        if cfg.mode == WatchdogMode::Off || cfg.device != self.cfg.device {
            self.apply(WatchdogStep::Disarm, ttl);
        }
        self.cfg = cfg;
        self.failed = None;
        self.check_at_start(ttl);
    }

    /// With `mode: required`, tries the device once at start (armed and disarmed again at
    /// once), so that a member without a usable watchdog never takes the lock in the first place.
    pub fn check_at_start(&mut self, ttl: u64) {
        // An armed device is in use by this agent: it is usable, and opening it a second time
        // would fail.
        if !self.required() || self.armed.is_some() {
            return;
        }
        if let Err(e) = self.check(ttl) {
            warn!("watchdog is required but unusable ({e}): this member will not become leader");
            self.failed = Some((Instant::now(), e));
        }
    }

    /// Why this member may not lead, with `mode: required`: the device is missing or not
    /// writable, or it failed to arm less than a ttl ago. `None` in other modes and while armed.
    /// Only cheap checks run here, every cycle: opening the device would arm it.
    pub fn unusable(&self, now: Instant, ttl: u64) -> Option<String> {
        if !self.required() || self.armed.is_some() {
            return None;
        }
        if let Err(e) = self.device.writable(&self.cfg.device) {
            return Some(e);
        }
        match &self.failed {
            Some((at, why)) if now.saturating_duration_since(*at) < Duration::from_secs(ttl) => Some(why.clone()),
            _ => None,
        }
    }

    /// The timeout for a cluster with this ttl.
    pub fn timeout_secs(&self, ttl: u64) -> u64 {
        self.cfg.timeout_secs(ttl)
    }

    /// The timeout the safety rule must assume: the configured one, or the device's when it
    /// rounded it up.
    pub fn effective_timeout_secs(&self, ttl: u64) -> u64 {
        let want = self.timeout_secs(ttl);
        self.armed.as_ref().map_or(want, |d| d.applied_secs.max(want))
    }

    /// Whether the device can be armed now (tried and disarmed again at once). Used at start:
    /// with `mode: required` a member without a usable watchdog never becomes leader.
    pub fn check(&mut self, ttl: u64) -> Result<(), String> {
        let t = self.timeout_secs(ttl);
        self.device.arm(&self.cfg.device, t)?;
        self.device.disarm();
        Ok(())
    }

    /// Carries out `step`.
    pub fn apply(&mut self, step: WatchdogStep, ttl: u64) {
        if self.cfg.mode == WatchdogMode::Off {
            return;
        }
        match step {
            WatchdogStep::Disarm => {
                if self.armed.take().is_some() {
                    self.device.disarm();
                    info!("watchdog disarmed");
                }
            }
            WatchdogStep::RunDown => {}
            WatchdogStep::Keepalive => {
                let want = self.timeout_secs(ttl);
                if self.armed.is_some_and(|d| d.requested_secs != want) {
                    // The ttl changed: re-arm with the new timeout.
                    self.armed = None;
                    self.device.disarm();
                }
                if self.armed.is_none() {
                    match self.device.arm(&self.cfg.device, want) {
                        Ok(applied) => {
                            info!(device = %self.cfg.device.display(), timeout = applied, "watchdog armed");
                            self.armed = Some(Armed { requested_secs: want, applied_secs: applied });
                            self.reported = None;
                        }
                        Err(e) => {
                            if self.reported.as_deref() != Some(e.as_str()) {
                                warn!("watchdog ({} mode) not armed: {e}", self.cfg.mode.as_str());
                                self.reported = Some(e.clone());
                            }
                            self.failed = Some((Instant::now(), e));
                            return;
                        }
                    }
                }
                if let Err(e) = self.device.keepalive() {
                    warn!("{e}");
                }
            }
        }
    }

    /// Disarms on a clean shutdown.
    pub fn shutdown(&mut self) {
        self.apply(WatchdogStep::Disarm, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(device: &Path, mode: WatchdogMode) -> WatchdogConfig {
        WatchdogConfig { mode, device: device.to_path_buf(), safety_margin: 5 }
    }

    #[test]
    fn a_missing_device_is_reported_with_its_path() {
        let mut w =
            Watchdog::new(cfg(Path::new("/nonexistent/watchdog"), WatchdogMode::Required), LinuxWatchdog::default());
        let e = w.check(30).unwrap_err();
        assert!(e.starts_with("opening /nonexistent/watchdog: "), "{e}");
    }

    #[test]
    fn a_file_that_is_not_a_watchdog_is_refused_and_left_as_it_was_but_for_the_magic_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-watchdog");
        std::fs::write(&path, "").unwrap();
        let mut w = Watchdog::new(cfg(&path, WatchdogMode::Automatic), LinuxWatchdog::default());
        let e = w.check(30).unwrap_err();
        assert!(e.contains("is not a usable watchdog: setting its timeout"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"V", "closed with the magic character");
    }

    #[test]
    fn off_never_touches_the_device() {
        let mut w = Watchdog::new(cfg(Path::new("/nonexistent/watchdog"), WatchdogMode::Off), LinuxWatchdog::default());
        w.apply(WatchdogStep::Keepalive, 30);
        assert!(w.armed.is_none() && w.reported.is_none());
    }

    #[test]
    fn a_required_device_that_failed_keeps_the_member_from_leading_for_a_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-watchdog");
        std::fs::write(&path, "").unwrap();
        let mut w = Watchdog::new(cfg(&path, WatchdogMode::Required), LinuxWatchdog::default());
        let t0 = Instant::now();
        assert_eq!(w.unusable(t0, 10), None, "writable and never tried");
        w.check_at_start(10);
        let why = w.unusable(Instant::now(), 10).expect("failed the check at start");
        assert!(why.contains("is not a usable watchdog"), "{why}");
        assert_eq!(w.unusable(Instant::now() + Duration::from_secs(11), 10), None, "tried again after a ttl");
        let mut auto = Watchdog::new(cfg(&path, WatchdogMode::Automatic), LinuxWatchdog::default());
        auto.check_at_start(10);
        auto.apply(WatchdogStep::Keepalive, 10);
        assert_eq!(auto.unusable(Instant::now(), 10), None, "only `required` keeps a member from leading");
        let missing =
            Watchdog::new(cfg(Path::new("/nonexistent/watchdog"), WatchdogMode::Required), LinuxWatchdog::default());
        let why = missing.unusable(Instant::now(), 10).unwrap();
        assert!(why.starts_with("/nonexistent/watchdog is not writable"), "{why}");
    }

    #[test]
    fn an_unusable_device_is_reported_once_and_nothing_is_armed() {
        let mut w =
            Watchdog::new(cfg(Path::new("/nonexistent/watchdog"), WatchdogMode::Automatic), LinuxWatchdog::default());
        w.apply(WatchdogStep::Keepalive, 30);
        let first = w.reported.clone();
        assert!(first.is_some() && w.armed.is_none());
        w.apply(WatchdogStep::Keepalive, 30);
        assert_eq!(w.reported, first);
        w.apply(WatchdogStep::Disarm, 30);
        assert!(w.armed.is_none());
    }
}
