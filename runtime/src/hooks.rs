//! OCI lifecycle hooks: programs the spec asks to run at fixed points, each given the container's
//! state JSON on stdin. prestart/createRuntime run in the runtime's namespaces once the container's
//! namespaces exist but before its init continues (a network hook can configure the new netns);
//! poststart after `start`, poststop after `delete`.
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};
use crate::state::StateDoc;

/// Run `hooks` in order; the first failure stops the rest and is returned.
pub fn run(kind: &str, hooks: &[Hook], state: &StateDoc) -> Result<()> {
    let input = serde_json::to_vec(state).map_err(|e| hook_error(kind, "", e.to_string()))?;
    for hook in hooks {
        run_one(kind, hook, &input)?;
    }
    Ok(())
}

/// Run `hooks`, only warning about failures: after start and after delete there is nothing left
/// to undo, so the OCI spec says a failing hook must not fail the operation.
pub fn run_and_warn(kind: &str, hooks: &[Hook], state: &StateDoc) {
    if let Err(e) = run(kind, hooks, state) {
        tracing::warn!(error = %e, "{kind} hook failed");
    }
}

fn run_one(kind: &str, hook: &Hook, input: &[u8]) -> Result<()> {
    let path = hook.path().display().to_string();
    let err = |reason: String| hook_error(kind, &path, reason);
    let mut cmd = Command::new(hook.path());
    // args[0] is argv[0], as for execv.
    if let Some(args) = hook.args().as_ref().filter(|a| !a.is_empty()) {
        cmd.arg0(&args[0]).args(&args[1..]);
    }
    cmd.env_clear();
    for entry in hook.env().iter().flatten() {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(input);
    }
    let timeout = hook
        .timeout()
        .filter(|t| *t > 0)
        .map_or(Duration::MAX, |t| Duration::from_secs(t as u64));
    match crate::pidfd::wait_child(&mut child, timeout).map_err(|e| err(e.to_string()))? {
        Some(status) if status.success() => Ok(()),
        Some(status) => {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            Err(err(format!("{status}: {}", stderr.trim())))
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(err(format!(
                "timed out after {}s",
                hook.timeout().unwrap_or(0)
            )))
        }
    }
}

fn hook_error(kind: &str, path: &str, reason: String) -> Error {
    Error::Child(format!("{kind} hook {path}: {reason}"))
}
