//! containerd-shim-eci-v2: Enhanced Container Isolation as a containerd shim v2.
//!
//! One binary, three roles: the shim (containerd's Task API over ttrpc), the create helper
//! (`containerd-shim-eci-v2 helper …`, a fresh single-threaded process in which libcontainer
//! may fork), and the admin commands (`containerd-shim-eci-v2 enforce …`, `leases sweep`).

mod bootstrap;
mod container;
mod enforce;
mod error;
mod events;
mod exits;
mod helper;
mod host;
mod info;
mod logging;
mod metrics;
mod options;
mod publisher;
mod service;
mod shim;
mod stdio;

/// The runtime name containerd knows this shim by.
pub const RUNTIME_NAME: &str = "io.containerd.eci.v2";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(helper::HELPER_ARG) {
        // Before any thread exists: libcontainer forks from here.
        std::process::exit(helper::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some(eci_emulation::workers::AGENT_ARG) {
        std::process::exit(eci_emulation::agent::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("enforce") {
        std::process::exit(enforce::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("leases")
        && args.get(2).map(String::as_str) == Some("sweep")
    {
        // What the next create does anyway: release the blocks parked for deleted containers.
        if let Err(e) = eci_core::ops::sweep_parked_leases() {
            eprintln!("{RUNTIME_NAME}: leases sweep: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.get(1).map(String::as_str) == Some("--version")
        || args.get(1).map(String::as_str) == Some("version")
    {
        println!("containerd-shim-eci-v2 {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    // The flags containerd passes (`-namespace`, `-id`, `-address`, `-debug`, `-bundle`, `-info`…)
    // and the action (`start`, `delete`, or none: the server `start` spawned).
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{RUNTIME_NAME}: {e}");
            std::process::exit(1);
        }
    };
    if flags.info {
        std::process::exit(info::main());
    }
    if flags.version {
        println!("containerd-shim-eci-v2 {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    match flags.action.as_str() {
        "start" => match bootstrap::start(&flags) {
            Ok(answer) => {
                use std::io::Write;
                let mut out = std::io::stdout();
                if out.write_all(&answer).and_then(|_| out.flush()).is_err() {
                    std::process::exit(1);
                }
            }
            Err(e) => {
                eprintln!("{RUNTIME_NAME}: start: {e}");
                std::process::exit(1);
            }
        },
        "delete" => {
            if let Err(e) = shim::delete(&flags) {
                eprintln!("{RUNTIME_NAME}: delete: {e}");
                std::process::exit(1);
            }
        }
        "" => {
            // Taken before any thread exists (the env is read once and dropped).
            let listener = bootstrap::inherited_listener();
            std::env::remove_var(bootstrap::LISTEN_FD_ENV);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .max_blocking_threads(8)
                .enable_all()
                .build()
                .expect("tokio runtime");
            let served = runtime.block_on(shim::serve(flags, listener));
            // Shut down means exit: a blocking task still running (a helper's, a teardown's)
            // must not keep the process alive after containerd has let it go.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            if let Err(e) = served {
                // `start` relays what the server says on stdout before it serves.
                println!("{e}");
                eprintln!("{RUNTIME_NAME}: {e}");
                std::process::exit(1);
            }
        }
        other => {
            eprintln!("{RUNTIME_NAME}: unknown action {other:?} (start, delete)");
            std::process::exit(1);
        }
    }
}
