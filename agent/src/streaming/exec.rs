//! Exec: runs a command in a running container through its shim, like ExecSync, but with the
//! client's streams attached and, on request, a terminal.

use peapod_cri_proto::v1;

use super::remotecommand::{self, Outcome};
use super::streams::{RemoteCommandStreams, TerminalSize};
use crate::daemon::Daemon;
use crate::shim::ShimSession;

/// Runs the exec `request` on the client's `streams` and reports its outcome.
pub async fn run(daemon: &Daemon, request: v1::ExecRequest, streams: RemoteCommandStreams) {
    let RemoteCommandStreams {
        protocol,
        stdin,
        stdout,
        stderr,
        mut resize,
        error,
    } = streams;
    // A client usually sends its terminal's size first: the terminal can start with it.
    let size = resize.as_mut().and_then(|sizes| sizes.try_recv().ok());
    let outcome = match start(daemon, &request, size).await {
        Ok(session) => match remotecommand::relay(session, stdin, stdout, stderr, resize).await {
            Ok(Some(exit)) => Outcome::of_exit(&exit, &request.cmd),
            // The shim ended the session without an exit, or the client left (and then
            // nobody reads this).
            Ok(None) => failed("the session ended without the command's exit status"),
            Err(e) => failed(e),
        },
        Err(e) => failed(e),
    };
    tracing::debug!(container = %request.container_id, ?outcome, "exec session ended");
    remotecommand::report(error, protocol, &outcome).await;
}

fn failed(error: impl std::fmt::Display) -> Outcome {
    Outcome::Internal(format!("error executing command in container: {error}"))
}

async fn start(
    daemon: &Daemon,
    request: &v1::ExecRequest,
    size: Option<TerminalSize>,
) -> Result<ShimSession, String> {
    let id = &request.container_id;
    let mut process = daemon
        .containers
        .process(id)
        .await
        .map_err(|e| e.to_string())?;
    process.set_args(Some(request.cmd.clone()));
    process.set_terminal(Some(request.tty));
    if let (true, Some(size)) = (request.tty, size) {
        let console = oci_spec::runtime::BoxBuilder::default()
            .width(size.width)
            .height(size.height)
            .build()
            .map_err(|e| e.to_string())?;
        process.set_console_size(Some(console));
    }
    daemon
        .containers
        .shim(id)
        .exec_session(process, request.stdin)
        .await
        .map_err(|e| e.to_string())
}
