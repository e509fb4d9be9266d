//! The container's seccomp filter from the CRI security context.
//!
//! RuntimeDefault is a deny list: the system calls that Docker's and containerd's default
//! profiles withhold from containers (kernel modules, reboot, clock changes, namespace and mount
//! manipulation, tracing other processes, keyrings, BPF…), each released again when the container
//! holds the capability that would make it legitimate, as those profiles do. containerd's profile
//! is an allow list of ~370 calls instead; a deny list is shorter to read and review, at the cost
//! of allowing system calls newer than this list.
use std::path::PathBuf;

use peapod_cri_proto::v1;
use serde_json::{json, Value};

use super::SpecError;

/// System calls denied by default, and the capability that allows each group again.
const DENIED: &[(Option<&str>, &[&str])] = &[
    (
        Some("CAP_SYS_ADMIN"),
        &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "setns",
            "unshare",
            "clone3",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "perf_event_open",
            "name_to_handle_at",
            "open_by_handle_at",
            "fanotify_init",
            "bpf",
            "syslog",
            "vm86",
            "vm86old",
            "setdomainname",
            "sethostname",
        ],
    ),
    (
        Some("CAP_SYS_MODULE"),
        &[
            "init_module",
            "finit_module",
            "delete_module",
            "create_module",
            "get_kernel_syms",
            "query_module",
        ],
    ),
    (
        Some("CAP_SYS_BOOT"),
        &["reboot", "kexec_load", "kexec_file_load"],
    ),
    (
        Some("CAP_SYS_TIME"),
        &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "clock_adjtime",
            "clock_adjtime64",
            "adjtimex",
        ],
    ),
    (
        Some("CAP_SYS_PTRACE"),
        &[
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "pidfd_getfd",
        ],
    ),
    (Some("CAP_SYS_RAWIO"), &["iopl", "ioperm"]),
    (
        Some("CAP_SYS_NICE"),
        &["get_mempolicy", "set_mempolicy", "mbind", "move_pages"],
    ),
    (Some("CAP_SYS_PACCT"), &["acct"]),
    (
        None,
        &[
            "add_key",
            "request_key",
            "keyctl",
            "swapon",
            "swapoff",
            "sysfs",
            "_sysctl",
            "uselib",
            "userfaultfd",
            "ustat",
            "nfsservctl",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
        ],
    ),
];

fn architectures() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => vec![],
    }
}

pub fn runtime_default(caps: &[String]) -> Value {
    let names: Vec<&str> = DENIED
        .iter()
        .filter(|(cap, _)| cap.is_none_or(|c| !caps.iter().any(|have| have == c)))
        .flat_map(|(_, calls)| calls.iter().copied())
        .collect();
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": architectures(),
        "syscalls": [{"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM}],
    })
}

enum Choice {
    Unconfined,
    RuntimeDefault,
    Localhost(PathBuf),
}

fn choice(security: &v1::LinuxContainerSecurityContext) -> Result<Choice, SpecError> {
    if let Some(p) = &security.seccomp {
        return Ok(
            match v1::security_profile::ProfileType::try_from(p.profile_type) {
                Ok(v1::security_profile::ProfileType::RuntimeDefault) => Choice::RuntimeDefault,
                Ok(v1::security_profile::ProfileType::Unconfined) => Choice::Unconfined,
                Ok(v1::security_profile::ProfileType::Localhost) => {
                    Choice::Localhost(PathBuf::from(&p.localhost_ref))
                }
                Err(_) => {
                    return Err(SpecError::Invalid(format!(
                        "unknown seccomp profile type {}",
                        p.profile_type
                    )))
                }
            },
        );
    }
    // The deprecated string form, still sent by older kubelets.
    #[allow(deprecated)]
    let path = security.seccomp_profile_path.as_str();
    Ok(match path {
        "" | "unconfined" => Choice::Unconfined,
        "runtime/default" | "docker/default" => Choice::RuntimeDefault,
        other => match other.strip_prefix("localhost/") {
            Some(path) => Choice::Localhost(PathBuf::from(path)),
            None => {
                return Err(SpecError::Invalid(format!(
                    "unknown seccomp profile {other:?}"
                )))
            }
        },
    })
}

pub fn profile(
    security: &v1::LinuxContainerSecurityContext,
    caps: &[String],
) -> Result<Option<Value>, SpecError> {
    match choice(security)? {
        Choice::Unconfined => Ok(None),
        Choice::RuntimeDefault => Ok(Some(runtime_default(caps))),
        Choice::Localhost(path) => {
            let err = |reason: String| SpecError::Seccomp {
                path: path.clone(),
                reason,
            };
            if !path.is_absolute() {
                return Err(err("a localhost profile must be an absolute path".into()));
            }
            let text = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
            let value: Value = serde_json::from_slice(&text).map_err(|e| err(e.to_string()))?;
            // Checked against the OCI schema now, so a bad file fails CreateContainer clearly.
            serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(value.clone())
                .map_err(|e| err(e.to_string()))?;
            Ok(Some(value))
        }
    }
}
