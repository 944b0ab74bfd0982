//! Opt-in enforcement: make containerd resolve `io.containerd.runc.v2` to this shim as well, so
//! every container — including `docker run --runtime=runc` through dockerd, which always asks
//! containerd for the runc shim — runs under ECI.
//!
//! containerd maps the runtime name `io.containerd.runc.v2` to the binary
//! `containerd-shim-runc-v2` on its PATH. `enforce install` puts a link of that name to this
//! binary in a directory that comes before the real runc shim (default /usr/local/bin, which
//! precedes /usr/bin in every standard PATH). `status` reports what containerd would start;
//! `uninstall` removes the link, and only if it is ours.

use std::path::{Path, PathBuf};

const RUNC_SHIM: &str = "containerd-shim-runc-v2";
const USAGE: &str = "usage: containerd-shim-eci-v2 enforce install|status|uninstall [--bin-dir DIR] [--path PATH]\n\
  install    link DIR/containerd-shim-runc-v2 to this shim (DIR defaults to /usr/local/bin)\n\
  status     say whether containerd resolves io.containerd.runc.v2 to ECI (exit 0 if it does)\n\
  uninstall  remove the link, if it is this shim's\n\
  --path     the PATH containerd searches (default: read from the running containerd)";

struct Args {
    action: String,
    bin_dir: PathBuf,
    path: Option<String>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    let action = it.next().cloned().ok_or_else(|| USAGE.to_string())?;
    let mut parsed = Args {
        action,
        bin_dir: PathBuf::from("/usr/local/bin"),
        path: None,
    };
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--bin-dir" => parsed.bin_dir = PathBuf::from(value),
            "--path" => parsed.path = Some(value.clone()),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(parsed)
}

pub fn main(args: &[String]) -> i32 {
    let args = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let me = match std::env::current_exe().and_then(|p| p.canonicalize()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot find this binary: {e}");
            return 1;
        }
    };
    let link = args.bin_dir.join(RUNC_SHIM);
    let result = match args.action.as_str() {
        "install" => install(&link, &me),
        "uninstall" => uninstall(&link, &me),
        "status" => return status(args.path, &me),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(msg) => {
            println!("{msg}");
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn is_ours(link: &Path, me: &Path) -> bool {
    link.canonicalize().is_ok_and(|p| p == me)
}

fn install(link: &Path, me: &Path) -> Result<String, String> {
    if is_ours(link, me) {
        return Ok(format!(
            "enforcement already installed: {} -> {}",
            link.display(),
            me.display()
        ));
    }
    if link.symlink_metadata().is_ok() {
        return Err(format!(
            "{} exists and is not this shim; refusing to replace it. Move it away or choose another --bin-dir that comes earlier in containerd's PATH",
            link.display()
        ));
    }
    std::fs::create_dir_all(link.parent().unwrap_or(Path::new("/"))).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(me, link).map_err(|e| format!("link {}: {e}", link.display()))?;
    Ok(format!(
        "enforcement installed: {} -> {}\nrestart containerd (it caches which binary a runtime name resolves to); then new containers asking for io.containerd.runc.v2 run under ECI. Check with `containerd-shim-eci-v2 enforce status`",
        link.display(),
        me.display()
    ))
}

fn uninstall(link: &Path, me: &Path) -> Result<String, String> {
    if !is_ours(link, me) {
        return Err(format!(
            "{} is not this shim's link; nothing removed",
            link.display()
        ));
    }
    std::fs::remove_file(link).map_err(|e| format!("remove {}: {e}", link.display()))?;
    Ok(format!("enforcement removed: {} deleted; restart containerd to stop resolving io.containerd.runc.v2 to ECI", link.display()))
}

/// The PATH of the running containerd, or ours if none is found.
fn containerd_path() -> String {
    let from_proc = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            if comm.trim() != "containerd" {
                return None;
            }
            let environ = std::fs::read(e.path().join("environ")).ok()?;
            environ
                .split(|b| *b == 0)
                .find_map(|v| v.strip_prefix(b"PATH="))
                .map(|p| String::from_utf8_lossy(p).into_owned())
        });
    from_proc.unwrap_or_else(|| std::env::var("PATH").unwrap_or_default())
}

fn status(path: Option<String>, me: &Path) -> i32 {
    // Not part of the exit code, which says whether runc's name is enforced.
    // The policy containerd's shims use: ECI_POLICY in containerd's environment, else the default.
    let (_, pools) = eci_core::create::userns_pools_report(&crate::options::default_policy());
    println!("{pools}");
    let path = path.unwrap_or_else(containerd_path);
    let found = path
        .split(':')
        .map(|d| Path::new(d).join(RUNC_SHIM))
        .find(|p| p.exists());
    match found {
        Some(p) if is_ours(&p, me) => {
            println!(
                "enforcement active: io.containerd.runc.v2 resolves to {} -> {}",
                p.display(),
                me.display()
            );
            0
        }
        Some(p) => {
            println!(
                "enforcement inactive: io.containerd.runc.v2 resolves to {}",
                p.display()
            );
            1
        }
        None => {
            println!("enforcement inactive: no {RUNC_SHIM} on containerd's PATH {path}");
            1
        }
    }
}
