//! Running another process inside a live container (`exec`): it enters every namespace and the
//! cgroup of the container's init, then becomes the user and gets the limits its spec asks for.
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use crate::container::{Container, PidNamespaceSwitch};
use crate::error::{Context, Error, Result};
use crate::namespaces::{proc_name, Joined};
use crate::process;
use crate::seccomp::SeccompFilter;
use crate::state::{write_atomic, Status};
use crate::stdio::Stdio;
use crate::sync::{self, Channel, GO, IN_CGROUP};
use crate::{clone, console};

#[derive(Debug, Default)]
pub struct ExecOptions {
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub stdio: Stdio,
}

/// The order in which namespaces are entered: the mount namespace last, because entering it
/// changes how every later path would resolve.
const ORDER: [LinuxNamespaceType; 5] = [
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Mount,
];

impl Container {
    /// Start `process` inside the container. The new process is a child of the caller (which must
    /// be single-threaded); the caller waits for it.
    pub fn exec(&self, process: &Process, opts: ExecOptions) -> Result<Pid> {
        let status = self.status()?;
        if !matches!(status, Status::Created | Status::Running) {
            return Err(Error::WrongState {
                id: self.id().to_string(),
                status: status.to_string(),
                action: "can only exec into a created or running container".into(),
            });
        }
        let pid = self.pid();
        let open = |kind| {
            let path = PathBuf::from(format!("/proc/{pid}/ns/{}", proc_name(kind)));
            Joined::open(kind, &path)
        };
        let pid_ns = open(LinuxNamespaceType::Pid)?;
        let others = ORDER.iter().map(|k| open(*k)).collect::<Result<Vec<_>>>()?;
        let cgroup = self.cgroup()?;
        let seccomp = self
            .record()
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().clone());
        let console = opts
            .console_socket
            .as_deref()
            .map(console::connect)
            .transpose()?;

        let (parent, child) = sync::pair()?;
        let switch = PidNamespaceSwitch::enter(&pid_ns)?;
        // SAFETY: the runtime binaries are single-threaded.
        let Some(exec_pid) = (unsafe { clone::clone(nix::sched::CloneFlags::empty())? }) else {
            drop(parent);
            let err = match enter_and_exec(
                &cgroup,
                process,
                &others,
                seccomp.as_ref(),
                console.as_ref(),
                &opts.stdio,
                &child,
            ) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            child.send_error(&err);
            // SAFETY: leave without running the parent's destructors.
            unsafe { libc::_exit(127) }
        };
        drop(switch);
        drop(child);
        drop(console);
        drop(opts.stdio);
        let result = parent.expect(IN_CGROUP).and_then(|()| {
            parent.send(GO)?;
            // The sync socket is close-on-exec: a clean close means execve succeeded.
            match parent.recv()? {
                None => Ok(()),
                Some(msg) => Err(Error::Child(
                    String::from_utf8_lossy(msg.strip_prefix(b"E").unwrap_or(&msg)).into_owned(),
                )),
            }
        });
        if let Err(e) = result {
            let _ = nix::sys::signal::kill(exec_pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(exec_pid, None);
            return Err(e);
        }
        if let Some(pid_file) = &opts.pid_file {
            write_atomic(pid_file, exec_pid.to_string().as_bytes())?;
        }
        Ok(exec_pid)
    }
}

fn enter_and_exec(
    cgroup: &crate::cgroups::Cgroup,
    process: &Process,
    namespaces: &[Joined],
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
    console: Option<&std::os::unix::net::UnixStream>,
    stdio: &Stdio,
    sync: &Channel,
) -> Result<std::convert::Infallible> {
    stdio.install()?;
    // Into the container's cgroup first: the parent waits for that before saying go.
    cgroup.add_self()?;
    sync.send(IN_CGROUP)?;
    sync.expect(GO)?;
    for ns in namespaces {
        ns.enter()?;
    }
    if let Some(adj) = process.oom_score_adj() {
        process::set_oom_score_adj(adj)?;
    }
    let filter = seccomp.map(SeccompFilter::from_spec).transpose()?;
    let (program, late_seccomp) = process::become_process(process, console, filter)?;
    if let Some(f) = late_seccomp {
        f.load()?;
    }
    Err(program.exec())
}

/// Read a `process.json` as `runc exec --process` takes it.
pub fn load_process(path: &Path) -> Result<Process> {
    let file = File::open(path).context(|| format!("opening {}", path.display()))?;
    serde_json::from_reader(file).context(|| format!("parsing {}", path.display()))
}
