//! Attach: the client's streams joined to the container's main process, through its shim.
//! The session ends when the process exits or the client leaves; the process keeps running
//! after a detach.

use peapod_cri_proto::v1;

use super::remotecommand::{self, Outcome};
use super::streams::RemoteCommandStreams;
use crate::daemon::Daemon;

/// Attaches the client's `streams` as `request` asked and reports the outcome.
pub async fn run(daemon: &Daemon, request: v1::AttachRequest, streams: RemoteCommandStreams) {
    let RemoteCommandStreams {
        protocol,
        stdin,
        stdout,
        stderr,
        resize,
        error,
    } = streams;
    let shim = daemon.containers.shim(&request.container_id);
    let attached = match shim.attach_session(request.stdin).await {
        Ok(session) => remotecommand::relay(session, stdin, stdout, stderr, resize)
            .await
            .map(drop),
        Err(e) => Err(e),
    };
    // An attach has no exit code to report: the container's status tells it.
    let outcome = match attached {
        Ok(()) => Outcome::Success,
        Err(e) => Outcome::Internal(format!("error attaching to container: {e}")),
    };
    tracing::debug!(container = %request.container_id, ?outcome, "attach session ended");
    remotecommand::report(error, protocol, &outcome).await;
}
