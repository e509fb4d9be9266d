//! The OCI lifecycle of one container: create → start → (kill) → delete, with its state on disk.
use std::fs;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::{mkfifo, Pid};
use oci_spec::runtime::LinuxResources;

use crate::cgroups::{Cgroup, CgroupStats};
use crate::error::{Context, Error, Result};
use crate::init::{self, Init, EXEC_FIFO};
use crate::namespaces::Plan;
use crate::spec::Bundle;
use crate::state::{process_alive, process_start_time, write_atomic, Record, StateDoc, Status};
use crate::stdio::Stdio;
use crate::{clone, console, hooks, sync};

/// How `create` should set the container up.
#[derive(Debug, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    /// The runtime's state root, e.g. /run/peapod-runtime.
    pub root: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub stdio: Stdio,
    /// Hold the init before exec until `start` (the OCI `create`); `run` passes false.
    pub wait_for_start: bool,
}

#[derive(Debug)]
pub struct Container {
    dir: PathBuf,
    record: Record,
}

impl Container {
    /// Create the container. Its init becomes a child of the calling process, which must be
    /// single-threaded (see ARCHITECTURE.md: never clone from a multi-threaded process).
    pub fn create(opts: CreateOptions) -> Result<Container> {
        validate_id(&opts.id)?;
        let bundle = Bundle::load(&opts.bundle)?;
        let linux = bundle.spec.linux().clone().unwrap_or_default();
        let plan = Plan::new(linux.namespaces().as_deref().unwrap_or_default())?;
        let cgroup_path = match linux.cgroups_path() {
            Some(p) if !p.as_os_str().is_empty() => p.to_string_lossy().into_owned(),
            _ => format!("/peapod/{}", opts.id),
        };
        let cgroup = Cgroup::new(&cgroup_path)?;
        let cgroup_mounts =
            crate::mounts::cgroup_hierarchies(bundle.spec.mounts().as_deref().unwrap_or_default())?;
        let console = opts
            .console_socket
            .as_deref()
            .map(console::connect)
            .transpose()?;

        fs::create_dir_all(&opts.root).context(|| format!("creating {}", opts.root.display()))?;
        let dir = opts.root.join(&opts.id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists(opts.id));
            }
            Err(e) => return Err(e).context(|| format!("creating {}", dir.display())),
        }
        // From here on, a failure must undo everything: the guard does so unless disarmed.
        let mut undo = Undo {
            dir: Some(dir.clone()),
            cgroup: None,
            pid: None,
        };

        cgroup.create()?;
        undo.cgroup = Some(cgroup.clone());
        if let Some(resources) = linux.resources() {
            cgroup.apply(resources)?;
        }
        if opts.wait_for_start {
            mkfifo(&dir.join(EXEC_FIFO), Mode::from_bits_truncate(0o622))
                .context(|| "creating the exec FIFO".into())?;
        }
        let (parent, child) = sync::pair()?;
        let _pid_ns = plan
            .join_pid
            .as_ref()
            .map(PidNamespaceSwitch::enter)
            .transpose()?;
        // SAFETY: the runtime binaries are single-threaded when they create containers.
        let pid = match unsafe { clone::clone(plan.clone_flags)? } {
            None => {
                drop(parent);
                init::run(
                    Init {
                        bundle: &bundle,
                        plan: &plan,
                        state_dir: &dir,
                        wait_for_start: opts.wait_for_start,
                        console,
                        stdio: opts.stdio,
                        cgroup_mounts,
                        cgroup: &cgroup,
                    },
                    child,
                )
            }
            Some(pid) => pid,
        };
        undo.pid = Some(pid);
        drop(_pid_ns);
        drop(child);
        drop(console);
        drop(opts.stdio);

        parent.expect(sync::IN_CGROUP)?;
        if let Some(hooks) = bundle.spec.hooks() {
            let state = StateDoc {
                oci_version: bundle.spec.version().clone(),
                id: opts.id.clone(),
                pid: pid.as_raw(),
                status: Status::Creating,
                bundle: bundle.path.clone(),
                rootfs: bundle.rootfs.clone(),
                created: String::new(),
                owner: owner(),
                annotations: bundle.spec.annotations().clone(),
            };
            let before: Vec<_> = hooks
                .prestart()
                .iter()
                .chain(hooks.create_runtime().iter())
                .flatten()
                .cloned()
                .collect();
            hooks::run("createRuntime", &before, &state)?;
        }
        parent.send(sync::GO)?;
        parent.expect(sync::READY)?;

        let (pid_start_time, _) = process_start_time(pid.as_raw())
            .ok_or_else(|| Error::Child("the container process exited during setup".into()))?;
        let record = Record {
            id: opts.id,
            bundle: bundle.path.clone(),
            rootfs: bundle.rootfs.clone(),
            pid: pid.as_raw(),
            pid_start_time,
            cgroup_path,
            created: now_rfc3339(),
            owner: owner(),
            config: bundle.spec.clone(),
        };
        record.save(&dir)?;
        if let Some(pid_file) = &opts.pid_file {
            write_atomic(pid_file, pid.to_string().as_bytes())?;
        }
        undo.disarm();
        Ok(Container { dir, record })
    }

    pub fn load(root: &Path, id: &str) -> Result<Container> {
        validate_id(id)?;
        let dir = root.join(id);
        if !dir.is_dir() {
            return Err(Error::NotFound(id.to_string()));
        }
        let record = Record::load(&dir)?;
        Ok(Container { dir, record })
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }

    pub fn pid(&self) -> i32 {
        self.record.pid
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    pub fn cgroup(&self) -> Result<Cgroup> {
        Ok(Cgroup::new(&self.record.cgroup_path)?)
    }

    pub fn status(&self) -> Result<Status> {
        if !process_alive(self.record.pid, self.record.pid_start_time) {
            return Ok(Status::Stopped);
        }
        if self.dir.join(EXEC_FIFO).exists() {
            return Ok(Status::Created);
        }
        if self.cgroup()?.is_frozen().unwrap_or(false) {
            return Ok(Status::Paused);
        }
        Ok(Status::Running)
    }

    pub fn state(&self) -> Result<StateDoc> {
        let status = self.status()?;
        Ok(StateDoc {
            oci_version: self.record.config.version().clone(),
            id: self.record.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.record.pid
            },
            status,
            bundle: self.record.bundle.clone(),
            rootfs: self.record.rootfs.clone(),
            created: self.record.created.clone(),
            owner: self.record.owner.clone(),
            annotations: self.record.annotations().cloned(),
        })
    }

    fn wrong_state(&self, status: Status, action: &str) -> Error {
        Error::WrongState {
            id: self.record.id.clone(),
            status: status.to_string(),
            action: action.into(),
        }
    }

    /// Release the init held by `create`: it executes the user's program.
    pub fn start(&self) -> Result<()> {
        let status = self.status()?;
        if status != Status::Created {
            return Err(self.wrong_state(status, "only a created container can be started"));
        }
        let fifo_path = self.dir.join(EXEC_FIFO);
        // Non-blocking, so that an init that died meanwhile cannot hang us; we poll instead.
        let fifo = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&fifo_path)
            .context(|| format!("opening {}", fifo_path.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut byte = [0u8; 1];
            match nix::unistd::read(&fifo, &mut byte) {
                Ok(1) => break,
                Ok(_) | Err(Errno::EAGAIN) => {}
                Err(e) => return Err(e).context(|| "reading the exec FIFO".into()),
            }
            if !process_alive(self.record.pid, self.record.pid_start_time) {
                return Err(Error::Child(
                    "the container process exited before it started".into(),
                ));
            }
            if Instant::now() > deadline {
                return Err(Error::Child(
                    "the container process did not answer start".into(),
                ));
            }
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&fifo),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10u8));
        }
        fs::remove_file(&fifo_path).context(|| format!("removing {}", fifo_path.display()))?;
        if let Some(poststart) = self
            .record
            .config
            .hooks()
            .as_ref()
            .and_then(|h| h.poststart().clone())
        {
            hooks::run_and_warn("poststart", &poststart, &self.state()?);
        }
        Ok(())
    }

    /// Send `signal` to the init, or with `all` to every process in the container's cgroup.
    pub fn kill(&self, signal: Signal, all: bool) -> Result<()> {
        let status = self.status()?;
        if status == Status::Stopped {
            return Err(self.wrong_state(status, "cannot signal a stopped container"));
        }
        if all {
            for pid in self.cgroup()?.procs()? {
                match kill(Pid::from_raw(pid), signal) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(e) => return Err(e).context(|| format!("signalling process {pid}")),
                }
            }
            return Ok(());
        }
        kill(Pid::from_raw(self.record.pid), signal)
            .context(|| format!("signalling container {}", self.record.id))
    }

    /// Remove the container: its cgroup, its state. A live container needs `force`.
    pub fn delete(self, force: bool) -> Result<()> {
        let status = self.status()?;
        if status != Status::Stopped {
            if !force {
                return Err(self.wrong_state(status, "stop it first or delete with --force"));
            }
            let cgroup = self.cgroup()?;
            if status == Status::Paused {
                cgroup.thaw()?;
            }
            let _ = kill(Pid::from_raw(self.record.pid), Signal::SIGKILL);
            wait_gone(self.record.pid, self.record.pid_start_time);
        }
        let state = self.state()?;
        remove_leftovers(&self.dir, Some(&self.record.cgroup_path))?;
        if let Some(poststop) = self
            .record
            .config
            .hooks()
            .as_ref()
            .and_then(|h| h.poststop().clone())
        {
            hooks::run_and_warn("poststop", &poststop, &state);
        }
        Ok(())
    }

    pub fn pause(&self) -> Result<()> {
        match self.status()? {
            Status::Running => Ok(self.cgroup()?.freeze()?),
            other => Err(self.wrong_state(other, "only a running container can be paused")),
        }
    }

    pub fn resume(&self) -> Result<()> {
        match self.status()? {
            Status::Paused => Ok(self.cgroup()?.thaw()?),
            other => Err(self.wrong_state(other, "only a paused container can be resumed")),
        }
    }

    pub fn update(&self, resources: &LinuxResources) -> Result<()> {
        match self.status()? {
            Status::Stopped => {
                Err(self.wrong_state(Status::Stopped, "cannot update a stopped container"))
            }
            _ => Ok(self.cgroup()?.apply(resources)?),
        }
    }

    pub fn stats(&self) -> Result<CgroupStats> {
        Ok(self.cgroup()?.stats()?)
    }

    pub fn processes(&self) -> Result<Vec<i32>> {
        Ok(self.cgroup()?.procs()?)
    }
}

/// Every container under `root`, in name order. Directories of containers whose creation never
/// finished are skipped.
pub fn list(root: &Path) -> Result<Vec<Container>> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context(|| format!("listing {}", root.display())),
    };
    let mut containers: Vec<Container> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Container::load(root, &e.file_name().to_string_lossy()).ok())
        .collect();
    containers.sort_by(|a, b| a.record.id.cmp(&b.record.id));
    Ok(containers)
}

/// Remove what a container whose record may be missing left behind (a crash during create).
pub fn remove_dir_of(root: &Path, id: &str) -> Result<()> {
    validate_id(id)?;
    let dir = root.join(id);
    if !dir.exists() {
        return Err(Error::NotFound(id.to_string()));
    }
    remove_leftovers(&dir, None)
}

fn remove_leftovers(dir: &Path, cgroup_path: Option<&str>) -> Result<()> {
    if let Some(path) = cgroup_path {
        Cgroup::new(path)?.delete()?;
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context(|| format!("removing {}", dir.display())),
    }
}

/// Wait (bounded) for a killed process to die. It is not reaped here: if the caller is its parent
/// (the shim), the exit status is the caller's to collect; a zombie already counts as gone.
pub(crate) fn wait_gone(pid: i32, start_time: u64) {
    crate::pidfd::wait_gone(pid, start_time, Duration::from_secs(10));
}

/// Container ids become directory and cgroup names, so they are kept to a safe alphabet.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn owner() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// Undo of a half-made container.
struct Undo {
    dir: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    pid: Option<Pid>,
}

impl Undo {
    fn disarm(&mut self) {
        self.dir = None;
        self.cgroup = None;
        self.pid = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(cgroup) = &self.cgroup {
            if let Err(e) = cgroup.delete() {
                tracing::warn!(error = %e, "removing the cgroup of a failed container");
            }
        }
        if let Some(dir) = &self.dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// Children created while this lives are born in another PID namespace; dropping it puts the
/// caller's own back, so a long-lived caller's later children are not affected.
pub(crate) struct PidNamespaceSwitch(std::fs::File);

impl PidNamespaceSwitch {
    pub(crate) fn enter(target: &crate::namespaces::Joined) -> Result<Self> {
        let own = fs::File::open("/proc/self/ns/pid_for_children")
            .context(|| "opening /proc/self/ns/pid_for_children".into())?;
        target.enter()?;
        Ok(PidNamespaceSwitch(own))
    }
}

impl Drop for PidNamespaceSwitch {
    fn drop(&mut self) {
        if let Err(e) = nix::sched::setns(&self.0, nix::sched::CloneFlags::CLONE_NEWPID) {
            tracing::warn!(error = %e, "restoring the PID namespace for children");
        }
    }
}
