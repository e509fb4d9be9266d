//! From a CRI `ContainerConfig` and the image's config to the OCI runtime spec the shim runs.
//!
//! The rules are Kubernetes' and containerd's: command/args against the image's
//! entrypoint/cmd, environment merged over the image's, the pod's namespaces joined by path, the
//! pod's /etc files bind-mounted, limits to cgroups, the security context to capabilities,
//! users, seccomp and read-only paths.
mod seccomp;
mod user;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use peapod_cri_proto::v1;
use peapod_rootfs::ImageConfig;
use serde_json::{json, Value};

pub use user::Identity;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Invalid(String),
    #[error("seccomp profile {path}: {reason}")]
    Seccomp { path: PathBuf, reason: String },
}

/// What a container needs to know of its pod.
#[derive(Debug, Clone, Default)]
pub struct PodView {
    pub hostname: String,
    /// Namespace files to join; `None` means the host's (hostNetwork, hostIPC).
    pub netns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    /// The PID namespace to join for a container whose PID mode is POD (the pod's shared
    /// one, when the pod has it) or TARGET (the target container's).
    pub pidns: Option<PathBuf>,
    pub etc_hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub hostname_file: Option<PathBuf>,
    pub shm: Option<PathBuf>,
    pub cgroup_parent: String,
}

pub struct Input<'a> {
    pub id: &'a str,
    pub config: &'a v1::ContainerConfig,
    pub pod: &'a PodView,
    pub image: &'a ImageConfig,
    /// The container's root filesystem, mounted: for the image's /etc/passwd.
    pub rootfs: &'a Path,
    /// The daemon's own oom_score_adj: nothing may go below it (containerd's
    /// restrict_oom_score_adj), since without CAP_SYS_RESOURCE it could not be set anyway.
    pub min_oom_score_adj: i32,
}

/// The default capabilities of a container, as containerd and CRI-O grant them.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux defines (linux/capability.h, 0 to 40), for privileged containers.
pub const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const DEFAULT_MASKED: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];
const DEFAULT_READONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub fn build(input: &Input) -> Result<Spec, SpecError> {
    let config = input.config;
    let linux = config.linux.clone().unwrap_or_default();
    let security = linux.security_context.clone().unwrap_or_default();
    let privileged = security.privileged;

    let args = command_line(config, input.image)?;
    let env = environment(config, input.image, &input.pod.hostname);
    let cwd = Some(config.working_dir.as_str())
        .filter(|w| !w.is_empty())
        .or(input.image.working_dir.as_deref().filter(|w| !w.is_empty()))
        .unwrap_or("/");
    if !cwd.starts_with('/') {
        return Err(SpecError::Invalid(format!(
            "working directory {cwd:?} is not absolute"
        )));
    }

    let identity = identity(input, &security)?;
    let caps = capabilities(&security)?;
    let readonly_rootfs = security.readonly_rootfs;

    let mut spec = json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": config.tty,
            "user": {
                "uid": identity.uid,
                "gid": identity.gid,
                "additionalGids": identity.additional_gids,
            },
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps.bounding,
                "effective": caps.effective,
                "permitted": caps.effective,
                "inheritable": caps.ambient,
                "ambient": caps.ambient,
            },
            "noNewPrivileges": security.no_new_privs,
            "oomScoreAdj": oom_score_adj(&linux, input.min_oom_score_adj),
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}],
        },
        "root": {"path": input.rootfs, "readonly": readonly_rootfs},
        "mounts": mounts(input, privileged)?,
        "annotations": annotations(input),
        "linux": {
            "namespaces": namespaces(input.pod, &security),
            "cgroupsPath": cgroups_path(&input.pod.cgroup_parent, input.id),
            "resources": resources(&linux, &config.devices, privileged)?,
            "devices": devices(&config.devices)?,
            "maskedPaths": if privileged { vec![] } else { paths_or(&security.masked_paths, &DEFAULT_MASKED) },
            "readonlyPaths": if privileged { vec![] } else { paths_or(&security.readonly_paths, &DEFAULT_READONLY) },
        },
    });
    if !privileged {
        if let Some(profile) = seccomp::profile(&security, &caps.bounding)? {
            spec["linux"]["seccomp"] = profile;
        }
    }
    serde_json::from_value(spec)
        .map_err(|e| SpecError::Invalid(format!("building the OCI spec: {e}")))
}

/// Kubernetes' rule: `command` replaces the image's ENTRYPOINT, `args` its CMD; with a command
/// but no args, the image's CMD is dropped.
fn command_line(
    config: &v1::ContainerConfig,
    image: &ImageConfig,
) -> Result<Vec<String>, SpecError> {
    let entrypoint = image.entrypoint.clone().unwrap_or_default();
    let cmd = image.cmd.clone().unwrap_or_default();
    let mut args = if config.command.is_empty() {
        entrypoint
    } else {
        config.command.clone()
    };
    if !config.args.is_empty() {
        args.extend(config.args.iter().cloned());
    } else if config.command.is_empty() {
        args.extend(cmd);
    }
    if args.is_empty() {
        return Err(SpecError::Invalid(
            "no command: the container config and the image both leave it empty".into(),
        ));
    }
    Ok(args)
}

/// The image's environment, then the container's on top (a later key wins), in a stable order.
/// The hostname lives in the pod's UTS namespace, which the container joins; `HOSTNAME` is set
/// too, as containerd and CRI-O do.
fn environment(config: &v1::ContainerConfig, image: &ImageConfig, hostname: &str) -> Vec<String> {
    let mut env = Env::default();
    if !hostname.is_empty() {
        env.set("HOSTNAME", hostname);
    }
    for entry in image.env.iter().flatten() {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        env.set(k, v);
    }
    if !env.values.contains_key("PATH") {
        env.set(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
    for kv in &config.envs {
        env.set(&kv.key, &kv.value);
    }
    env.order
        .iter()
        .map(|k| format!("{k}={}", env.values[k]))
        .collect()
}

/// Environment variables in first-set order, a later value replacing an earlier one.
#[derive(Default)]
struct Env {
    order: Vec<String>,
    values: BTreeMap<String, String>,
}

impl Env {
    fn set(&mut self, key: &str, value: &str) {
        if self
            .values
            .insert(key.to_string(), value.to_string())
            .is_none()
        {
            self.order.push(key.to_string());
        }
    }
}

fn identity(
    input: &Input,
    security: &v1::LinuxContainerSecurityContext,
) -> Result<Identity, SpecError> {
    let group = security
        .run_as_group
        .as_ref()
        .map(|g| {
            u32::try_from(g.value).map_err(|_| {
                SpecError::Invalid(format!("run_as_group {} is out of range", g.value))
            })
        })
        .transpose()?;
    let user = if let Some(uid) = &security.run_as_user {
        u32::try_from(uid.value)
            .map_err(|_| SpecError::Invalid(format!("run_as_user {} is out of range", uid.value)))?
            .to_string()
    } else if !security.run_as_username.is_empty() {
        security.run_as_username.clone()
    } else {
        input.image.user.clone().unwrap_or_default()
    };
    user::resolve(input.rootfs, &user, group, &security.supplemental_groups)
}

struct Caps {
    bounding: Vec<String>,
    effective: Vec<String>,
    ambient: Vec<String>,
}

fn normalize_cap(name: &str) -> Result<String, SpecError> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(SpecError::Invalid(format!("unknown capability {name:?}")))
    }
}

/// containerd's rule: start from the defaults (all, when privileged); "ALL" in the drop list
/// empties the set before the additions, "ALL" in the add list fills it; then the adds, then the
/// other drops.
fn capabilities(security: &v1::LinuxContainerSecurityContext) -> Result<Caps, SpecError> {
    let all = || ALL_CAPS.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    let mut set: Vec<String> = if security.privileged {
        all()
    } else {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    };
    let none = v1::Capability::default();
    let c = security.capabilities.as_ref().unwrap_or(&none);
    let is_all = |name: &String| name.eq_ignore_ascii_case("ALL");
    if c.drop_capabilities.iter().any(is_all) {
        set.clear();
    }
    if c.add_capabilities.iter().any(is_all) {
        set = all();
    }
    for add in c.add_capabilities.iter().filter(|a| !is_all(a)) {
        let cap = normalize_cap(add)?;
        if !set.contains(&cap) {
            set.push(cap);
        }
    }
    for drop in c.drop_capabilities.iter().filter(|d| !is_all(d)) {
        let cap = normalize_cap(drop)?;
        set.retain(|c| *c != cap);
    }
    let mut ambient = Vec::new();
    for add in &c.add_ambient_capabilities {
        let cap = normalize_cap(add)?;
        if !set.contains(&cap) {
            set.push(cap.clone());
        }
        ambient.push(cap);
    }
    Ok(Caps {
        bounding: set.clone(),
        effective: set,
        ambient,
    })
}

fn oom_score_adj(linux: &v1::LinuxContainerConfig, minimum: i32) -> i32 {
    let wanted = linux
        .resources
        .as_ref()
        .map(|r| r.oom_score_adj)
        .unwrap_or(0);
    let wanted = i32::try_from(wanted.clamp(-1000, 1000)).unwrap_or(0);
    wanted.max(minimum)
}

fn namespaces(pod: &PodView, security: &v1::LinuxContainerSecurityContext) -> Vec<Value> {
    let mut out = vec![json!({"type": "mount"})];
    // A namespace the pod does not have (hostNetwork, hostIPC) is the host's: nothing to join.
    let join = |kind: &str, path: &Option<PathBuf>| {
        path.as_ref().map(|p| json!({"type": kind, "path": p}))
    };
    out.extend(join("network", &pod.netns));
    out.extend(join("ipc", &pod.ipcns));
    out.extend(join("uts", &pod.utsns));
    let pid_mode = security
        .namespace_options
        .as_ref()
        .map_or(v1::NamespaceMode::Pod as i32, |n| n.pid);
    // NODE is the only way to the host's PID namespace; POD or TARGET without a namespace
    // to join falls back to a private one, never to the host's.
    let joins = [
        v1::NamespaceMode::Pod as i32,
        v1::NamespaceMode::Target as i32,
    ];
    match (pid_mode, &pod.pidns) {
        (m, _) if m == v1::NamespaceMode::Node as i32 => {}
        (m, Some(p)) if joins.contains(&m) => out.push(json!({"type": "pid", "path": p})),
        _ => out.push(json!({"type": "pid"})),
    }
    out.push(json!({"type": "cgroup"}));
    out
}

fn cgroups_path(parent: &str, id: &str) -> String {
    let parent = parent.trim_end_matches('/');
    if parent.is_empty() {
        format!("/peapod/{id}")
    } else {
        format!("{parent}/{id}")
    }
}

fn mounts(input: &Input, privileged: bool) -> Result<Vec<Value>, SpecError> {
    let sys_options = if privileged {
        vec!["nosuid", "noexec", "nodev"]
    } else {
        vec!["nosuid", "noexec", "nodev", "ro"]
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if privileged { "rw" } else { "ro" }]}),
    ];
    let user_paths: Vec<&str> = input
        .config
        .mounts
        .iter()
        .map(|m| m.container_path.as_str())
        .collect();
    // The pod's shared files, unless the user mounts something of their own there.
    let pod_files = [
        (
            "/dev/shm",
            &input.pod.shm,
            vec!["rbind", "nosuid", "nodev", "noexec"],
        ),
        (
            "/etc/hosts",
            &input.pod.etc_hosts,
            vec!["rbind", "rprivate"],
        ),
        (
            "/etc/resolv.conf",
            &input.pod.resolv_conf,
            vec!["rbind", "rprivate"],
        ),
        (
            "/etc/hostname",
            &input.pod.hostname_file,
            vec!["rbind", "rprivate"],
        ),
    ];
    for (dest, source, mut options) in pod_files {
        if user_paths.contains(&dest) {
            continue;
        }
        match source {
            Some(src) => {
                if input.config.linux.as_ref().and_then(|l| l.security_context.as_ref()).is_some_and(|s| s.readonly_rootfs) && dest != "/dev/shm" {
                    options.push("ro");
                }
                mounts.push(json!({"destination": dest, "type": "bind", "source": src, "options": options}));
            }
            None if dest == "/dev/shm" => mounts.push(json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]})),
            None => {}
        }
    }
    for m in &input.config.mounts {
        if !m.container_path.starts_with('/') {
            return Err(SpecError::Invalid(format!(
                "mount container_path {:?} is not absolute",
                m.container_path
            )));
        }
        if m.host_path.is_empty() {
            return Err(SpecError::Invalid(format!(
                "mount {:?} has no host_path",
                m.container_path
            )));
        }
        let propagation = match v1::MountPropagation::try_from(m.propagation) {
            Ok(v1::MountPropagation::PropagationHostToContainer) => "rslave",
            Ok(v1::MountPropagation::PropagationBidirectional) => "rshared",
            _ => "rprivate",
        };
        let mut options = vec!["rbind", propagation];
        if m.readonly {
            options.push("ro");
        }
        mounts.push(json!({"destination": m.container_path, "type": "bind", "source": m.host_path, "options": options}));
    }
    Ok(mounts)
}

fn annotations(input: &Input) -> Value {
    let mut map: BTreeMap<String, String> = input
        .config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    map.insert(
        "io.kubernetes.cri.container-type".into(),
        "container".into(),
    );
    if let Some(meta) = &input.config.metadata {
        map.insert("io.kubernetes.cri.container-name".into(), meta.name.clone());
    }
    json!(map)
}

fn paths_or(given: &[String], default: &[&str]) -> Vec<String> {
    if given.is_empty() {
        default.iter().map(|p| p.to_string()).collect()
    } else {
        given.to_vec()
    }
}

fn device_node(host_path: &str) -> Result<(char, i64, i64), SpecError> {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(host_path)
        .map_err(|e| SpecError::Invalid(format!("device {host_path}: {e}")))?;
    let kind = if meta.file_type().is_char_device() {
        'c'
    } else if meta.file_type().is_block_device() {
        'b'
    } else {
        return Err(SpecError::Invalid(format!("{host_path} is not a device")));
    };
    let rdev = meta.rdev();
    Ok((
        kind,
        nix::sys::stat::major(rdev) as i64,
        nix::sys::stat::minor(rdev) as i64,
    ))
}

fn devices(devices: &[v1::Device]) -> Result<Vec<Value>, SpecError> {
    devices
        .iter()
        .map(|d| {
            let (kind, major, minor) = device_node(&d.host_path)?;
            let path = if d.container_path.is_empty() { &d.host_path } else { &d.container_path };
            Ok(json!({"path": path, "type": kind.to_string(), "major": major, "minor": minor, "fileMode": 0o666, "uid": 0, "gid": 0}))
        })
        .collect()
}

fn resources(
    linux: &v1::LinuxContainerConfig,
    devices: &[v1::Device],
    privileged: bool,
) -> Result<Value, SpecError> {
    // Device cgroup: deny all but the standard nodes and the requested devices (all, when
    // privileged), as runc's default rules do.
    let mut device_rules = vec![json!({"allow": privileged, "access": "rwm"})];
    if !privileged {
        for (kind, major, minor) in [
            ("c", 1, 3),
            ("c", 1, 5),
            ("c", 1, 7),
            ("c", 1, 8),
            ("c", 1, 9),
            ("c", 5, 0),
            ("c", 5, 1),
            ("c", 5, 2),
            ("c", 136, -1),
        ] {
            let mut rule = json!({"allow": true, "type": kind, "major": major, "access": "rwm"});
            if minor >= 0 {
                rule["minor"] = minor.into();
            }
            device_rules.push(rule);
        }
        for d in devices {
            let (kind, major, minor) = device_node(&d.host_path)?;
            let access = if d.permissions.is_empty() {
                "rwm"
            } else {
                d.permissions.as_str()
            };
            device_rules.push(json!({"allow": true, "type": kind.to_string(), "major": major, "minor": minor, "access": access}));
        }
    }
    let mut out = json!({"devices": device_rules});
    if let (Some(r), Some(o)) = (&linux.resources, out.as_object_mut()) {
        if let Value::Object(limits) = linux_resources(r) {
            o.extend(limits);
        }
    }
    Ok(out)
}

/// The OCI `linux.resources` for the CRI's limits (no device rules): for create and for
/// UpdateContainerResources.
pub fn linux_resources(r: &v1::LinuxContainerResources) -> Value {
    let mut out = json!({});
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), r.cpu_shares.into());
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), r.cpu_quota.into());
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), r.cpu_period.into());
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), r.cpuset_cpus.clone().into());
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), r.cpuset_mems.clone().into());
    }
    if !cpu.is_empty() {
        out["cpu"] = Value::Object(cpu);
    }
    if r.memory_limit_in_bytes > 0 {
        out["memory"] = json!({"limit": r.memory_limit_in_bytes});
        if r.memory_swap_limit_in_bytes > 0 {
            out["memory"]["swap"] = r.memory_swap_limit_in_bytes.into();
        }
    }
    if !r.hugepage_limits.is_empty() {
        out["hugepageLimits"] = r
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect();
    }
    if !r.unified.is_empty() {
        out["unified"] = json!(r.unified);
    }
    out
}

#[cfg(test)]
mod tests;
