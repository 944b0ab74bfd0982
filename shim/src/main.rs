//! containerd-shim-eci-v2: Enhanced Container Isolation as a containerd shim v2.
//!
//! One binary, three roles: the shim (containerd's Task API over ttrpc), the create helper
//! (`containerd-shim-eci-v2 helper …`, a fresh single-threaded process in which libcontainer
//! may fork), and the admin commands (`containerd-shim-eci-v2 enforce …`).

mod enforce;
mod helper;
mod logging;
mod metrics;
mod options;
mod process;
mod service;
mod shim;
mod stdio;

use containerd_shim::asynchronous::run;

pub const RUNTIME_NAME: &str = "io.containerd.eci.v2";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(helper::HELPER_ARG) {
        // Before any thread exists: libcontainer forks from here.
        std::process::exit(helper::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some(helper::AGENT_ARG) {
        std::process::exit(eci_emulation::agent::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("enforce") {
        std::process::exit(enforce::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("--version")
        || args.get(1).map(String::as_str) == Some("version")
    {
        println!("containerd-shim-eci-v2 {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run::<shim::EciShim>(RUNTIME_NAME, None));
    // Shut down means exit: a blocking task still running (a helper's, a teardown's) must not
    // keep the process alive after containerd has let it go, as dropping the runtime would.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
}
