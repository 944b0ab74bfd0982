//! The shim's log, which containerd copies into its own: one line per record, at the level
//! containerd asked for, with the libraries' noise left out. libcgroups warns about every v1
//! controller this host lacks each time a cgroup manager is made (eight lines per container
//! operation), libcontainer reports at warning level what its caller handles, and fuser reports
//! a reply to a request the kernel had already dropped (an interrupted read, an unmounted
//! file system) as an error. Only their errors are kept, and not those.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

struct ShimLog {
    fifo: Mutex<File>,
}

/// Targets whose warnings are not an operator's business.
const QUIET: &[&str] = &["libcgroups", "libcontainer", "fuser"];

/// fuser's replies that found the request gone: ENOENT (interrupted) or ENODEV (unmounted).
fn harmless(record: &log::Record) -> bool {
    record.target().starts_with("fuser")
        && record
            .args()
            .to_string()
            .starts_with("Failed to send FUSE reply")
        && {
            let text = record.args().to_string();
            text.contains("os error 2)") || text.contains("os error 19)")
        }
}

fn keep(record: &log::Record) -> bool {
    let quiet = QUIET.iter().any(|t| {
        record
            .target()
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    });
    if quiet && record.level() > log::Level::Error {
        return false;
    }
    !harmless(record)
}

impl log::Log for ShimLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) || !keep(record) {
            return;
        }
        let message = record.args().to_string().replace('"', "\\\"");
        let line = format!(
            "time=\"{}\" level={} msg=\"{message}\"\n",
            rfc3339_now(),
            record.level().as_str().to_lowercase(),
        );
        if let Ok(mut fifo) = self.fifo.lock() {
            // containerd may have gone; a lost line is no reason to fail.
            let _ = fifo.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Log to containerd's `log` fifo in the bundle (the shim's working directory).
pub fn init(debug: bool) {
    let Ok(fifo) = OpenOptions::new().write(true).open("log") else {
        return;
    };
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    let level = if debug {
        level.max(log::LevelFilter::Debug)
    } else {
        level
    };
    if log::set_boxed_logger(Box::new(ShimLog {
        fifo: Mutex::new(fifo),
    }))
    .is_ok()
    {
        log::set_max_level(level);
    }
}

fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}
