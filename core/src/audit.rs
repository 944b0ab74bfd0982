//! One JSON line per refusal, for the administrator, and one per configuration problem the
//! administrator must fix before refusals follow from it.

use eci_policy::Refusal;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(serde::Serialize)]
struct Entry<'a> {
    time: String,
    namespace: &'a str,
    container: &'a str,
    image: Option<&'a str>,
    rule: &'a str,
    detail: &'a str,
    fix: &'a str,
}

pub fn record(
    log: &Path,
    namespace: &str,
    container: &str,
    image: Option<&str>,
    refusal: &Refusal,
) {
    let line = serde_json::to_string(&Entry {
        time: rfc3339_now(),
        namespace,
        container,
        image,
        rule: refusal.rule.name(),
        detail: &refusal.detail,
        fix: &refusal.fix,
    })
    .expect("audit entry serializes");
    log::warn!("refused container {namespace}/{container}: {refusal}");
    append_line(log, &line);
}

#[derive(serde::Serialize)]
struct Warning<'a> {
    time: String,
    level: &'static str,
    rule: &'a str,
    detail: &'a str,
}

/// A warning about the host's configuration, once per boot for each distinct text: the first
/// shim to create the marker file `<marker_prefix>.<hash of the text>` (under the shim's state
/// directory, a tmpfs) writes it to its log (containerd's) and the audit log; every later shim
/// logs it at debug. A warning at every shim start would be one line of noise per container
/// for a condition `enforce status` reports anyway.
pub fn warn_once(log: &Path, marker_prefix: &Path, rule: eci_policy::Rule, detail: &str) {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same text gives the same name in every shim process.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    detail.hash(&mut h);
    let mut name = marker_prefix.as_os_str().to_owned();
    name.push(format!(".{:016x}", h.finish()));
    let marker = Path::new(&name);
    let claimed = marker
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(marker)
        });
    let Ok(mut claimed) = claimed else {
        // Written already (EEXIST) this boot; with no state directory to remember it in,
        // every shim says it.
        if marker.exists() {
            log::debug!("{detail} (rule {})", rule.name());
        } else {
            log::warn!("{detail} (rule {})", rule.name());
        }
        return;
    };
    log::warn!("{detail} (rule {})", rule.name());
    let _ = claimed.write_all(detail.as_bytes());
    let line = serde_json::to_string(&Warning {
        time: rfc3339_now(),
        level: "warning",
        rule: rule.name(),
        detail,
    })
    .expect("audit entry serializes");
    append_line(log, &line);
}

/// Append one JSON line to the audit log, making its directory; a failure is the shim's error
/// log's, never the container's.
fn append_line(log: &Path, line: &str) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        f.write_all(format!("{line}\n").as_bytes())
    };
    if let Err(e) = write() {
        log::error!("cannot write audit log {}: {e}", log.display());
    }
}

fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant), to avoid a date crate for one timestamp.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
