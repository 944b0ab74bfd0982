//! The create helper. The shim is a multi-threaded tokio process, where forking and changing
//! the process's cwd or environment (which libcontainer does) is unsound. So the shim starts
//! its own binary again for each create and exec: the new process is single-threaded, does
//! the work, prints one JSON line and exits. The container's init is created as a sibling
//! (CLONE_PARENT), so it is the shim's child and reaped by the shim's one reaper.

use eci_core::{CreateRequest, ExecRequest};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::process::{Command, Stdio};

pub const HELPER_ARG: &str = "helper";
/// The mount agent's sub-command (see `eci_emulation::agent`).
pub const AGENT_ARG: &str = "agent";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Create(CreateRequest),
    Exec(ExecRequest),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Created {
        pid: i32,
        block: u32,
        supervised: bool,
    },
    Execed {
        pid: i32,
    },
    Error(String),
}

/// Helper side: the request is the argument, the process's stdin (fd 0) is the container
/// process's stdin, and the answer goes to stdout.
pub fn main(args: &[String]) -> i32 {
    // Whatever the shim held that was not close-on-exec stops here, and the container's
    // processes start with default signal dispositions, not the shim's.
    if let Err(e) = eci_core::hygiene::close_on_exec_from(3) {
        println!(
            "{}",
            serde_json::to_string(&Reply::Error(format!("helper: close inherited fds: {e}")))
                .expect("reply serializes")
        );
        return 1;
    }
    eci_core::hygiene::reset_signals();
    // libcontainer reports through `tracing`; when asked, send it to a file for debugging.
    if let Some(path) = std::env::var_os("ECI_HELPER_LOG") {
        if let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = tracing_subscriber::fmt()
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .try_init();
        }
    }
    let input = args.first().map(String::as_str).unwrap_or("");
    let reply = match Ok::<(), ()>(()) {
        Err(()) => unreachable!(),
        Ok(()) => match serde_json::from_str::<Request>(input) {
            Err(e) => Reply::Error(format!("helper: bad request: {e}")),
            Ok(Request::Create(req)) => match eci_core::create(&req) {
                Ok(c) => Reply::Created {
                    pid: c.pid,
                    block: c.block,
                    supervised: c.supervised,
                },
                Err(e) => Reply::Error(e.to_string()),
            },
            Ok(Request::Exec(req)) => match eci_core::exec(&req) {
                Ok(pid) => Reply::Execed { pid },
                Err(e) => Reply::Error(e.to_string()),
            },
        },
    };
    let failed = matches!(reply, Reply::Error(_));
    println!(
        "{}",
        serde_json::to_string(&reply).expect("reply serializes")
    );
    i32::from(failed)
}

/// Shim side: run the helper on a blocking thread and return its reply. The helper's exit
/// status is not awaited (the shim's reaper owns all children); its reply is the result.
pub async fn call(request: Request, stdin: Option<std::os::fd::OwnedFd>) -> Reply {
    let run = move || -> std::io::Result<Reply> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg(HELPER_ARG)
            .arg(serde_json::to_string(&request).expect("request serializes"))
            .stdin(stdin.map(Stdio::from).unwrap_or_else(Stdio::null))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("piped stdout")
            .read_to_string(&mut out)?;
        Ok(serde_json::from_str(out.trim()).unwrap_or_else(|_| {
            Reply::Error(if out.is_empty() {
                "create helper died without an answer".to_string()
            } else {
                format!("create helper: {}", out.trim())
            })
        }))
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => Reply::Error(format!("cannot run create helper: {e}")),
        Err(e) => Reply::Error(format!("create helper task: {e}")),
    }
}
