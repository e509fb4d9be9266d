//! Pod sandboxes for real, as root: namespaces, CNI (the Debian containernetworking-plugins
//! in /usr/lib/cni), cgroups and files.
//!
//! Every test has its own conf dir, bridge, /24 subnet (10.199.<n>.0/24), lease dir and
//! CNI cache in a temporary directory, so tests run in parallel and never touch
//! /etc/cni or the host's bridges. Traffic only goes to addresses inside namespaces the
//! tests create (or to the test's own bridge).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use peapod_agent::sandbox::{
    self, Cni, DefaultNetwork, DnsConfig, PortMapping, Protocol, Sandbox, SandboxError, SandboxSpec,
};
use peapod_tests::unique;

/// A private CNI set-up with its own bridge and subnet.
struct TestNet {
    tmp: tempfile::TempDir,
    bridge: String,
    subnet_octet: u8,
    cni: Cni,
}

impl TestNet {
    fn new(subnet_octet: u8) -> TestNet {
        let tmp = tempfile::Builder::new()
            .prefix("peapod-sandbox-")
            .tempdir()
            .unwrap();
        // Bridge names are at most 15 bytes.
        let bridge = unique("pp").replace('-', "");
        let bridge = bridge[..bridge.len().min(15)].to_string();
        let cni = Cni::new(
            tmp.path().join("net.d"),
            vec![tmp.path().join("bin"), "/usr/lib/cni".into()],
            tmp.path().join("cache"),
        );
        TestNet {
            tmp,
            bridge,
            subnet_octet,
            cni,
        }
    }

    /// A TestNet whose conf dir gets the default conflist, made for this test.
    fn with_default_config(subnet_octet: u8) -> TestNet {
        let net = TestNet::new(subnet_octet);
        assert!(net
            .cni
            .ensure_default_config(&net.default_network())
            .unwrap());
        net
    }

    fn default_network(&self) -> DefaultNetwork {
        DefaultNetwork {
            name: self.network_name(),
            bridge: self.bridge.clone(),
            subnet: format!("10.199.{}.0/24", self.subnet_octet),
            ipam_data_dir: Some(self.ipam_dir()),
            file_name: "10-test.conflist".to_string(),
        }
    }

    fn network_name(&self) -> String {
        format!("test-{}", self.bridge)
    }

    fn gateway(&self) -> IpAddr {
        format!("10.199.{}.1", self.subnet_octet).parse().unwrap()
    }

    fn pods_dir(&self) -> PathBuf {
        self.tmp.path().join("pods")
    }

    fn ipam_dir(&self) -> PathBuf {
        self.tmp.path().join("ipam")
    }

    fn spec(&self) -> SandboxSpec {
        let id = unique("sbx");
        SandboxSpec {
            name: format!("pod-{id}"),
            namespace: "default".to_string(),
            uid: format!("uid-{id}"),
            hostname: "web-0".to_string(),
            id,
            ..SandboxSpec::default()
        }
    }

    fn create(&self, spec: &SandboxSpec) -> Result<Sandbox, SandboxError> {
        sandbox::create(spec, &self.cni, &self.pods_dir())
    }

    /// IP leases host-local holds (it also keeps bookkeeping files).
    fn leases(&self) -> Vec<String> {
        let dir = self.ipam_dir().join(self.network_name());
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.parse::<IpAddr>().is_ok())
            .collect()
    }

    /// The host ends of veths attached to this test's bridge.
    fn bridge_ports(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(format!("/sys/class/net/{}/brif", self.bridge)) else {
            return Vec::new();
        };
        entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn cache_entries(&self) -> usize {
        fs::read_dir(self.tmp.path().join("cache"))
            .map(|entries| entries.count())
            .unwrap_or(0)
    }

    /// Asserts that nothing of the sandbox `spec` is left on the host.
    fn assert_nothing_left(&self, spec: &SandboxSpec) {
        let dir = self.pods_dir().join(&spec.id);
        assert!(!dir.exists(), "{} still exists", dir.display());
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(dir.to_str().unwrap()),
            "mounts left under {}",
            dir.display()
        );
        assert_eq!(self.bridge_ports(), Vec::<String>::new(), "veths left");
        assert_eq!(self.leases(), Vec::<String>::new(), "IP leases left");
        assert_eq!(self.cache_entries(), 0, "CNI cache entries left");
        assert!(
            !cgroup_exists(&format!("peapod/{}", spec.id)),
            "pod cgroup left"
        );
        let nat = run("iptables", &["-w", "-t", "nat", "-S"]);
        assert!(!nat.contains(&spec.id), "iptables rules left:\n{nat}");
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // The bridge plugin makes the bridge and never deletes it.
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Runs `f` in a new thread that joined the namespaces `ns` (setns of net, UTS and IPC
/// namespaces only affects the calling thread).
fn in_ns<T: Send + 'static>(ns: &[&Path], f: impl FnOnce() -> T + Send + 'static) -> T {
    let files: Vec<fs::File> = ns.iter().map(|p| fs::File::open(p).unwrap()).collect();
    std::thread::spawn(move || {
        for file in &files {
            setns(file, CloneFlags::empty()).unwrap();
        }
        f()
    })
    .join()
    .unwrap()
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(output.status.success(), "{program} {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn cgroup_exists(relative: &str) -> bool {
    let root = Path::new("/sys/fs/cgroup");
    root.join(relative).is_dir()
        || fs::read_dir(root)
            .unwrap()
            .any(|h| h.unwrap().path().join(relative).is_dir())
}

/// Accepts one connection on `listener` after connecting to `target`, and checks that
/// bytes go through.
fn assert_connects(listener: TcpListener, target: (IpAddr, u16)) {
    let mut client = TcpStream::connect(target).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    server.write_all(b"hello from the pod").unwrap();
    drop(server);
    let mut got = String::new();
    client.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello from the pod");
}

fn stop_and_remove(net: &TestNet, sandbox: &Sandbox) {
    sandbox::stop(sandbox, &net.cni).unwrap();
    sandbox::stop(sandbox, &net.cni).expect("stop is idempotent");
    sandbox::remove(sandbox).unwrap();
    sandbox::remove(sandbox).expect("remove is idempotent");
}

#[test]
fn pods_get_their_own_network() {
    let net = TestNet::with_default_config(31);
    assert!(
        !net.cni
            .ensure_default_config(&net.default_network())
            .unwrap(),
        "an existing config is kept"
    );
    net.cni.status().unwrap();

    let (spec_a, spec_b) = (net.spec(), net.spec());
    let a = net.create(&spec_a).unwrap();
    let b = net.create(&spec_b).unwrap();
    assert_eq!(a.ips.len(), 1);
    assert_eq!(b.ips.len(), 1);
    assert_ne!(a.ips, b.ips, "two pods, two addresses");
    let ip = a.ips[0];
    assert!(ip.to_string().starts_with("10.199.31."), "{ip}");
    net.cni.check(&a.id).unwrap();

    let netns = a.netns.clone().unwrap();
    let link = run(
        "nsenter",
        &[
            &format!("--net={}", netns.display()),
            "ip",
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
        ],
    );
    assert!(link.contains(&format!("inet {ip}/24")), "{link}");
    let lo_works = in_ns(&[&netns], || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        TcpStream::connect(listener.local_addr().unwrap()).is_ok()
    });
    assert!(lo_works, "lo is up in the pod");

    // The host reaches a server in the pod on the pod's address.
    let listener = in_ns(&[&netns], || TcpListener::bind("0.0.0.0:8080").unwrap());
    assert_connects(listener, (ip, 8080));

    let hosts = fs::read_to_string(&a.hosts).unwrap();
    assert!(hosts.contains("127.0.0.1\tlocalhost"), "{hosts}");
    assert!(hosts.contains(&format!("{ip}\tweb-0")), "{hosts}");

    stop_and_remove(&net, &a);
    assert!(net.cni.check(&a.id).is_err(), "no network after stop");
    assert_eq!(net.leases().len(), 1, "b keeps its lease");
    stop_and_remove(&net, &b);
    net.assert_nothing_left(&spec_a);
    net.assert_nothing_left(&spec_b);
}

#[test]
fn a_persisted_sandbox_is_stopped_with_the_cached_network() {
    let net = TestNet::with_default_config(40);
    let spec = net.spec();
    let sb = net.create(&spec).unwrap();
    let netns = sb.netns.clone().unwrap();

    // CHECK notices a pod whose interface changed behind CNI's back. (Not a deleted
    // eth0: bridge 1.1.1 then cannot find the addresses whose masquerade rules DEL
    // removes.)
    net.cni.check(&sb.id).unwrap();
    run(
        "nsenter",
        &[
            &format!("--net={}", netns.display()),
            "ip",
            "link",
            "set",
            "eth0",
            "address",
            "02:00:00:00:00:01",
        ],
    );
    let error = net.cni.check(&sb.id).unwrap_err().to_string();
    assert!(error.contains("CHECK failed"), "{error}");

    // The daemon restarts: the record comes back from disk, and the node's network
    // config has meanwhile been removed. DEL still runs with what ADD used.
    let record = serde_json::to_string(&sb).unwrap();
    let sb: Sandbox = serde_json::from_str(&record).unwrap();
    fs::remove_dir_all(net.cni.conf_dir()).unwrap();
    stop_and_remove(&net, &sb);
    net.assert_nothing_left(&spec);
}

#[test]
fn a_sandbox_lost_in_a_crash_is_cleaned_up_from_its_spec() {
    let net = TestNet::with_default_config(41);
    let spec = net.spec();
    let made = net.create(&spec).unwrap();
    // The daemon dies before it records the result; after the restart it has the spec.
    let planned = Sandbox::planned(&spec, &net.pods_dir());
    assert_eq!(
        (&planned.netns, &planned.ipcns, &planned.utsns, &planned.shm),
        (&made.netns, &made.ipcns, &made.utsns, &made.shm)
    );
    assert_eq!(planned.cgroup_path, made.cgroup_path);
    stop_and_remove(&net, &planned);
    net.assert_nothing_left(&spec);
}

#[test]
fn hostname_sysctls_dns_and_shm() {
    let net = TestNet::with_default_config(32);
    let mut spec = net.spec();
    spec.hostname = "my-pod".to_string();
    spec.sysctls = BTreeMap::from([
        (
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "0".to_string(),
        ),
        ("kernel.shmmni".to_string(), "1234".to_string()),
    ]);
    spec.dns = Some(DnsConfig {
        servers: vec!["10.96.0.10".to_string()],
        searches: vec!["default.svc.cluster.local".to_string()],
        options: vec!["ndots:5".to_string()],
    });
    let sb = net.create(&spec).unwrap();

    let utsns = sb.utsns.clone().unwrap();
    let hostname = in_ns(&[&utsns], || nix::unistd::gethostname().unwrap());
    assert_eq!(hostname, "my-pod");
    assert_eq!(fs::read_to_string(&sb.hostname_file).unwrap(), "my-pod\n");

    let netns = sb.netns.clone().unwrap();
    let port_start = in_ns(&[&netns], || {
        fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap()
    });
    assert_eq!(port_start.trim(), "0");
    let ipcns = sb.ipcns.clone().unwrap();
    let shmmni = in_ns(&[&ipcns], || {
        fs::read_to_string("/proc/sys/kernel/shmmni").unwrap()
    });
    assert_eq!(shmmni.trim(), "1234");
    assert_ne!(
        fs::read_to_string("/proc/sys/kernel/shmmni")
            .unwrap()
            .trim(),
        "1234",
        "the host's value is untouched"
    );

    assert_eq!(
        fs::read_to_string(&sb.resolv_conf).unwrap(),
        "search default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    let shm = sb.shm.clone().unwrap();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(&format!(" {} ", shm.display())) && l.contains(" - tmpfs ")),
        "/dev/shm tmpfs not mounted"
    );
    assert!(cgroup_exists(&format!("peapod/{}", spec.id)));
    assert!(sb.cgroup_owned);

    stop_and_remove(&net, &sb);
    net.assert_nothing_left(&spec);
}

/// Whether portmap's chain shared by all pods with host ports exists.
fn portmap_chains_exist() -> bool {
    Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT"])
        .output()
        .unwrap()
        .status
        .success()
}

/// Removes portmap's shared chains and the jumps to them, if no pod uses them any more.
fn remove_unused_portmap_chains() {
    let dnat = run("iptables", &["-w", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT"]);
    if dnat.lines().any(|rule| rule.starts_with("-A ")) {
        return;
    }
    let iptables = |args: &[&str]| {
        let _ = Command::new("iptables")
            .args(["-w", "-t", "nat"])
            .args(args)
            .output();
    };
    for hook in ["PREROUTING", "OUTPUT"] {
        iptables(&[
            "-D",
            hook,
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "CNI-HOSTPORT-DNAT",
        ]);
    }
    iptables(&[
        "-D",
        "POSTROUTING",
        "-m",
        "comment",
        "--comment",
        "CNI portfwd requiring masquerade",
        "-j",
        "CNI-HOSTPORT-MASQ",
    ]);
    for chain in [
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-MASQ",
        "CNI-HOSTPORT-SETMARK",
    ] {
        iptables(&["-F", chain]);
        iptables(&["-X", chain]);
    }
}

#[test]
fn host_port_reaches_the_pod() {
    let portmap_was_set_up = portmap_chains_exist();
    let net = TestNet::with_default_config(33);
    let mut spec = net.spec();
    // Bound to the test bridge's address, so that no other host address is affected.
    spec.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp,
        container_port: 8080,
        host_port: 18080,
        host_ip: net.gateway().to_string(),
    }];
    let sb = net.create(&spec).unwrap();
    let netns = sb.netns.clone().unwrap();
    let listener = in_ns(&[&netns], || TcpListener::bind("0.0.0.0:8080").unwrap());
    assert_connects(listener, (net.gateway(), 18080));
    let nat = run("iptables", &["-w", "-t", "nat", "-S"]);
    assert!(nat.contains(&spec.id), "portmap rules for the pod:\n{nat}");

    stop_and_remove(&net, &sb);
    net.assert_nothing_left(&spec);
    if !portmap_was_set_up {
        remove_unused_portmap_chains();
    }
}

#[test]
fn host_network_pods_skip_cni() {
    // No CNI config at all: a host-network pod must not need one.
    let net = TestNet::new(34);
    assert!(net.cni.status().is_err());
    let mut spec = net.spec();
    spec.host_network = true;
    spec.hostname = String::new();
    let sb = net.create(&spec).unwrap();
    assert_eq!(sb.netns, None);
    assert_eq!(
        sb.utsns, None,
        "host network means the host's UTS namespace"
    );
    assert!(sb.ipcns.is_some());
    assert!(sb.ips.is_empty());
    assert_eq!(net.cache_entries(), 0);
    let host_name = nix::unistd::gethostname().unwrap();
    assert_eq!(
        fs::read_to_string(&sb.hostname_file).unwrap(),
        format!("{}\n", host_name.to_string_lossy())
    );
    assert_eq!(
        fs::read_to_string(&sb.hosts).unwrap(),
        fs::read_to_string("/etc/hosts").unwrap()
    );

    // Host IPC too: then nothing is pinned and there is no private /dev/shm.
    let mut spec_ipc = net.spec();
    spec_ipc.host_network = true;
    spec_ipc.host_ipc = true;
    let sb_ipc = net.create(&spec_ipc).unwrap();
    assert_eq!((sb_ipc.ipcns.clone(), sb_ipc.shm.clone()), (None, None));

    stop_and_remove(&net, &sb);
    stop_and_remove(&net, &sb_ipc);
    net.assert_nothing_left(&spec);
    net.assert_nothing_left(&spec_ipc);
}

impl TestNet {
    /// Puts a plugin `name` that runs `on_add` (shell) on ADD into the test's bin dir
    /// and a conflist with it after the bridge into the conf dir. DEL and CHECK pass.
    fn with_plugin_after_bridge(self, name: &str, on_add: &str) -> TestNet {
        use std::os::unix::fs::PermissionsExt;
        let bin = self.tmp.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        let script = bin.join(name);
        fs::write(
            &script,
            format!("#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] || exit 0\n{on_add}\n"),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let mut conflist = self.default_network().to_conflist();
        conflist["plugins"][1] = serde_json::json!({ "type": name });
        fs::create_dir_all(self.cni.conf_dir()).unwrap();
        fs::write(
            self.cni.conf_dir().join("10-test.conflist"),
            conflist.to_string(),
        )
        .unwrap();
        self.cni.status().unwrap();
        self
    }
}

#[test]
fn failing_plugin_unwinds_everything() {
    // A plugin that fails ADD the way the spec says (an error object on stdout) after
    // the bridge has made the veth and host-local has leased an address.
    let net = TestNet::new(35).with_plugin_after_bridge(
        "peapod-test-fail",
        "echo '{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"injected failure\",\"details\":\"by the test\"}'\nexit 1",
    );

    let spec = net.spec();
    let error = net.create(&spec).unwrap_err().to_string();
    assert!(
        error.contains("peapod-test-fail ADD failed: injected failure: by the test (code 999)"),
        "{error}"
    );
    assert!(
        fs::metadata(format!("/sys/class/net/{}", net.bridge)).is_ok(),
        "the bridge plugin did run"
    );
    net.assert_nothing_left(&spec);
}

#[test]
fn hung_plugin_is_killed_and_unwound() {
    let mut net = TestNet::new(39).with_plugin_after_bridge("peapod-test-hang", "sleep 600");
    // Long enough for the real plugins on a busy machine; the hung one sleeps far longer.
    net.cni = net.cni.clone().with_plugin_timeout(Duration::from_secs(5));
    let spec = net.spec();
    let error = net.create(&spec).unwrap_err().to_string();
    assert!(
        error.contains("peapod-test-hang ADD did not finish within 5s"),
        "{error}"
    );
    net.assert_nothing_left(&spec);
}

#[test]
fn missing_plugin_is_reported_and_nothing_leaks() {
    let net = TestNet::new(36);
    let mut conflist = net.default_network().to_conflist();
    conflist["plugins"][1] = serde_json::json!({ "type": "peapod-no-such-plugin" });
    fs::create_dir_all(net.cni.conf_dir()).unwrap();
    fs::write(
        net.cni.conf_dir().join("10-missing.conflist"),
        conflist.to_string(),
    )
    .unwrap();
    let reason = net.cni.status().unwrap_err();
    assert!(reason.contains("peapod-no-such-plugin"), "{reason}");

    let spec = net.spec();
    let error = net.create(&spec).unwrap_err().to_string();
    assert!(error.contains("peapod-no-such-plugin"), "{error}");
    net.assert_nothing_left(&spec);
}

#[test]
fn bad_sysctls_unwind_or_are_refused() {
    let net = TestNet::with_default_config(37);
    let mut spec = net.spec();
    spec.sysctls = BTreeMap::from([(
        "net.ipv4.ip_unprivileged_port_start".to_string(),
        "not-a-number".to_string(),
    )]);
    let error = net.create(&spec).unwrap_err();
    assert!(matches!(error, SandboxError::Sysctl { .. }), "{error}");
    net.assert_nothing_left(&spec);

    let mut spec = net.spec();
    spec.sysctls = BTreeMap::from([("vm.swappiness".to_string(), "10".to_string())]);
    let error = net.create(&spec).unwrap_err();
    assert!(matches!(error, SandboxError::InvalidSpec(_)), "{error}");
    net.assert_nothing_left(&spec);
}

#[test]
fn a_kubelet_made_pod_cgroup_is_left_to_the_kubelet() {
    let net = TestNet::new(38);
    let mut spec = net.spec();
    spec.host_network = true;
    spec.cgroup_parent = format!("/peapod-test-{}", spec.id);
    let cgroup = peapod_runtime::cgroups::Cgroup::new(&spec.cgroup_parent).unwrap();
    cgroup.create().unwrap();
    let sb = net.create(&spec).unwrap();
    assert!(!sb.cgroup_owned);
    assert_eq!(sb.cgroup_path, spec.cgroup_parent);
    stop_and_remove(&net, &sb);
    assert!(cgroup_exists(spec.cgroup_parent.trim_start_matches('/')));
    cgroup.delete().unwrap();
    assert!(matches!(
        net.create(&SandboxSpec {
            id: "../escape".to_string(),
            ..net.spec()
        }),
        Err(SandboxError::InvalidSpec(_))
    ));
}

#[test]
fn a_shared_pid_namespace_has_an_init_until_the_pod_stops() {
    let net = TestNet::new(40);
    let mut spec = net.spec();
    spec.host_network = true;
    spec.pod_init = Some(peapod_tests::workspace_binary("peapod-pod-init"));
    let sb = net.create(&spec).unwrap();
    let init = sb.pod_init.expect("a pod init");
    let pidns = sb.pidns.clone().expect("a pinned PID namespace");
    assert!(init.is_alive());
    // The init is PID 1 of the pinned namespace and sits in the pod's IPC namespace and
    // cgroup. (stat of an nsfs file gives the namespace's inode number.)
    let ino = |path: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap());
    let proc_ns = |kind: &str| PathBuf::from(format!("/proc/{}/ns/{kind}", init.pid));
    assert_eq!(
        ino(&pidns),
        ino(&proc_ns("pid")),
        "the pinned namespace is the init's"
    );
    assert_ne!(ino(&proc_ns("pid")), ino(Path::new("/proc/self/ns/pid")));
    assert_eq!(ino(sb.ipcns.as_deref().unwrap()), ino(&proc_ns("ipc")));
    let status = fs::read_to_string(format!("/proc/{}/status", init.pid)).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
        "PID 1 inside: {status}"
    );
    let cgroups = fs::read_to_string(format!("/proc/{}/cgroup", init.pid)).unwrap();
    assert!(cgroups.contains(&sb.cgroup_path), "{cgroups}");

    stop_and_remove(&net, &sb);
    assert!(!init.is_alive(), "stopping the pod ends its init");
    net.assert_nothing_left(&spec);

    // An init that cannot start fails the sandbox and leaves nothing.
    let mut bad = net.spec();
    bad.host_network = true;
    bad.pod_init = Some("/bin/false".into());
    let error = net.create(&bad).unwrap_err();
    assert!(matches!(error, SandboxError::PodInit { .. }), "{error}");
    net.assert_nothing_left(&bad);
}
