//! Running one CNI plugin, as the CNI spec defines it: the parameters in CNI_*
//! environment variables, the network configuration as JSON on stdin, the result or an
//! error object as JSON on stdout.

use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::CniError;

/// The CNI_* parameters of one invocation.
pub(super) struct Invocation<'a> {
    /// ADD, DEL or CHECK.
    pub(super) command: &'static str,
    pub(super) container_id: &'a str,
    pub(super) netns: &'a Path,
    pub(super) ifname: &'a str,
    /// CNI_ARGS: "K=V;K=V".
    pub(super) args: &'a str,
    /// CNI_PATH: where plugins find the plugins they delegate to (e.g. IPAM).
    pub(super) path: &'a str,
    /// A plugin still running after this long is killed.
    pub(super) timeout: Duration,
}

/// Runs `binary` and returns its stdout (the result; DEL and CHECK print nothing).
pub(super) fn run(
    binary: &Path,
    invocation: &Invocation,
    config: &Value,
) -> Result<Vec<u8>, CniError> {
    let plugin = binary
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    tracing::debug!(
        plugin,
        command = invocation.command,
        container = invocation.container_id,
        "running CNI plugin"
    );
    let exec_error = |source| CniError::Exec {
        plugin: binary.to_path_buf(),
        source,
    };
    let stdin = serde_json::to_vec(config).map_err(|e| exec_error(io::Error::other(e)))?;
    // The daemon's environment (PATH above all: plugins run iptables) plus the CNI ones.
    let mut child = Command::new(binary)
        .env("CNI_COMMAND", invocation.command)
        .env("CNI_CONTAINERID", invocation.container_id)
        .env("CNI_NETNS", invocation.netns)
        .env("CNI_IFNAME", invocation.ifname)
        .env("CNI_ARGS", invocation.args)
        .env("CNI_PATH", invocation.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timed-out plugin is killed with whatever it started
        // (a shell wrapper's children hold the output pipes too).
        .process_group(0)
        .spawn()
        .map_err(exec_error)?;
    // The pipes are served by threads while this one waits, so that neither side can
    // block the other on a full pipe, and a hung plugin can be killed.
    let (stdin_pipe, stdout_pipe, stderr_pipe) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (status, written, stdout, stderr) = thread::scope(|scope| {
        let writer = scope.spawn(|| write_all(stdin_pipe, &stdin));
        let stdout = scope.spawn(|| read_all(stdout_pipe));
        let stderr = scope.spawn(|| read_all(stderr_pipe));
        let status = wait(&mut child, invocation.timeout);
        (
            status,
            writer.join().unwrap_or(Ok(())),
            stdout.join().unwrap_or_default(),
            stderr.join().unwrap_or_default(),
        )
    });
    let Some(status) = status.map_err(exec_error)? else {
        return Err(CniError::Timeout {
            plugin,
            command: invocation.command,
            timeout: invocation.timeout,
        });
    };
    if status.success() {
        written.map_err(exec_error)?;
        return Ok(stdout);
    }
    Err(plugin_error(
        plugin,
        invocation.command,
        &stdout,
        &stderr,
        status.to_string(),
    ))
}

/// Waits for the plugin to exit; `None` if it had to be killed after `timeout`.
fn wait(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    if let Some(status) = peapod_runtime::pidfd::wait_child(child, timeout)? {
        return Ok(Some(status));
    }
    // The child is not reaped yet, so its pid (= its group id) cannot be reused.
    let group = Pid::from_raw(child.id() as i32);
    killpg(group, Signal::SIGKILL).map_err(io::Error::from)?;
    child.wait()?;
    Ok(None)
}

/// A plugin that fails early may exit without reading its stdin: its exit status and
/// output say why, not the broken pipe.
fn write_all(pipe: Option<ChildStdin>, bytes: &[u8]) -> io::Result<()> {
    let Some(mut pipe) = pipe else {
        return Ok(());
    };
    match pipe.write_all(bytes) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    }
}

fn read_all(pipe: Option<impl Read>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        if let Err(e) = pipe.read_to_end(&mut bytes) {
            tracing::debug!(error = %e, "reading a CNI plugin's output");
        }
    }
    bytes
}

/// The spec's error object `{"code", "msg", "details"}`, or failing that what the plugin
/// printed.
fn plugin_error(
    plugin: String,
    command: &'static str,
    stdout: &[u8],
    stderr: &[u8],
    status: String,
) -> CniError {
    if let Ok(error) = serde_json::from_slice::<Value>(stdout) {
        if let Some(msg) = error.get("msg").and_then(Value::as_str) {
            return CniError::Plugin {
                plugin,
                command,
                code: error.get("code").and_then(Value::as_u64).unwrap_or(0),
                msg: msg.to_string(),
                details: error
                    .get("details")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            };
        }
    }
    let output = [stderr, stdout]
        .iter()
        .map(|bytes| String::from_utf8_lossy(bytes).trim().to_string())
        .filter(|text| !text.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    CniError::PluginCrashed {
        plugin,
        command,
        status,
        output,
    }
}

/// The first of `dirs` that has an executable called `plugin`.
pub(super) fn find_plugin(plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    use std::os::unix::fs::PermissionsExt;
    dirs.iter()
        .map(|dir| dir.join(plugin))
        .find(|path| {
            path.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| CniError::PluginNotFound {
            plugin: plugin.to_string(),
            dirs: dirs.to_vec(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_objects_and_crashes() {
        let error = plugin_error(
            "bridge".into(),
            "ADD",
            br#"{"cniVersion":"1.0.0","code":7,"msg":"no such network","details":"eth9"}"#,
            b"",
            "exit status: 1".into(),
        );
        assert_eq!(
            error.to_string(),
            "CNI plugin bridge ADD failed: no such network: eth9 (code 7)"
        );
        let error = plugin_error("x".into(), "DEL", b"", b"panic: boom\n", "signal: 6".into());
        assert_eq!(
            error.to_string(),
            "CNI plugin x DEL failed (signal: 6): panic: boom"
        );
    }

    fn script(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("plugin");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn invocation(timeout: Duration) -> Invocation<'static> {
        Invocation {
            command: "ADD",
            container_id: "c1",
            netns: Path::new("/proc/self/ns/net"),
            ifname: "eth0",
            args: "",
            path: "/usr/lib/cni",
            timeout,
        }
    }

    #[test]
    fn a_plugin_gets_its_parameters_and_its_output_is_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = script(
            dir.path(),
            r#"read -r config; echo "$CNI_COMMAND $CNI_IFNAME $config""#,
        );
        let out = run(
            &plugin,
            &invocation(Duration::from_secs(10)),
            &serde_json::json!({"name": "n"}),
        )
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&out), "ADD eth0 {\"name\":\"n\"}\n");
    }

    #[test]
    fn a_hung_plugin_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        // A child that keeps the output pipes open must not keep us waiting either.
        let pid_file = dir.path().join("child");
        let plugin = script(
            dir.path(),
            &format!("sleep 30 & echo $! > {}; sleep 30", pid_file.display()),
        );
        let result = run(
            &plugin,
            &invocation(Duration::from_millis(300)),
            &Value::Null,
        );
        assert!(
            matches!(result, Err(CniError::Timeout { .. })),
            "{result:?}"
        );
        let child: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed with its group; a zombie waiting for its reaper no longer runs.
        let alive =
            peapod_runtime::state::process_start_time(child).is_some_and(|(_, zombie)| !zombie);
        assert!(!alive, "the plugin's child {child} still runs");
    }
}
