//! Pods and containers: `pods`, `ps`, `inspect`, `inspectp`, `logs`, `exec`, `stop`, `rm`,
//! `stopp`, `rmp`. IDs may be given by any unique prefix, as with crictl.
use std::io::{BufRead, Seek};
use std::time::Duration;

use anyhow::{bail, Context};
use peapod_cri_proto::v1;
use serde_json::json;

use crate::client::{rpc_error, Cri};
use crate::output::{self, Format, Table};

fn ago(nanos: i64) -> String {
    let secs =
        (chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() - nanos) / 1_000_000_000;
    match secs {
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    }
}

pub fn short(id: &str) -> &str {
    &id[..id.len().min(13)]
}

pub async fn pod_list(cri: &mut Cri) -> anyhow::Result<Vec<v1::PodSandbox>> {
    Ok(cri
        .runtime
        .list_pod_sandbox(v1::ListPodSandboxRequest::default())
        .await
        .map_err(|s| rpc_error("ListPodSandbox", s))?
        .into_inner()
        .items)
}

pub async fn container_list(cri: &mut Cri) -> anyhow::Result<Vec<v1::Container>> {
    Ok(cri
        .runtime
        .list_containers(v1::ListContainersRequest::default())
        .await
        .map_err(|s| rpc_error("ListContainers", s))?
        .into_inner()
        .containers)
}

pub fn unique<'a>(
    what: &str,
    prefix: &str,
    ids: impl Iterator<Item = &'a str>,
) -> anyhow::Result<String> {
    let matches: Vec<&str> = ids.filter(|id| id.starts_with(prefix)).collect();
    match matches.as_slice() {
        [one] => Ok(one.to_string()),
        [] => bail!("no {what} matches {prefix:?}"),
        many => bail!(
            "{prefix:?} matches {} {what}s; give more of the id",
            many.len()
        ),
    }
}

pub async fn pod_id(cri: &mut Cri, prefix: &str) -> anyhow::Result<String> {
    let pods = pod_list(cri).await?;
    unique("pod", prefix, pods.iter().map(|p| p.id.as_str()))
}

async fn container_id(cri: &mut Cri, prefix: &str) -> anyhow::Result<String> {
    let containers = container_list(cri).await?;
    unique(
        "container",
        prefix,
        containers.iter().map(|c| c.id.as_str()),
    )
}

fn pod_state(state: i32) -> &'static str {
    if state == v1::PodSandboxState::SandboxReady as i32 {
        "Ready"
    } else {
        "NotReady"
    }
}

fn container_state(state: i32) -> &'static str {
    match v1::ContainerState::try_from(state) {
        Ok(v1::ContainerState::ContainerCreated) => "Created",
        Ok(v1::ContainerState::ContainerRunning) => "Running",
        Ok(v1::ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

pub async fn pods(cri: &mut Cri, format: Format) -> anyhow::Result<()> {
    let pods = pod_list(cri).await?;
    if format != Format::Table {
        let docs: Vec<_> = pods
            .iter()
            .map(|p| {
                let m = p.metadata.clone().unwrap_or_default();
                json!({"id": p.id, "name": m.name, "namespace": m.namespace, "uid": m.uid, "attempt": m.attempt,
                       "state": pod_state(p.state), "createdAt": p.created_at, "labels": p.labels, "runtimeHandler": p.runtime_handler})
            })
            .collect();
        return output::structured(&docs, format);
    }
    let mut table = Table::new(&["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT"]);
    for p in pods {
        let m = p.metadata.unwrap_or_default();
        table.row(vec![
            short(&p.id).into(),
            ago(p.created_at),
            pod_state(p.state).into(),
            m.name,
            m.namespace,
            m.attempt.to_string(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

pub async fn ps(cri: &mut Cri, all: bool, format: Format) -> anyhow::Result<()> {
    let containers: Vec<_> = container_list(cri)
        .await?
        .into_iter()
        .filter(|c| all || c.state == v1::ContainerState::ContainerRunning as i32)
        .collect();
    if format != Format::Table {
        let docs: Vec<_> = containers
            .iter()
            .map(|c| {
                let m = c.metadata.clone().unwrap_or_default();
                json!({"id": c.id, "podSandboxId": c.pod_sandbox_id, "name": m.name, "attempt": m.attempt,
                       "image": c.image.as_ref().map(|i| i.image.clone()), "imageRef": c.image_ref,
                       "state": container_state(c.state), "createdAt": c.created_at, "labels": c.labels})
            })
            .collect();
        return output::structured(&docs, format);
    }
    let mut table = Table::new(&[
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
    ]);
    for c in containers {
        let m = c.metadata.unwrap_or_default();
        let image = c.image.map(|i| i.image).unwrap_or_default();
        table.row(vec![
            short(&c.id).into(),
            image,
            ago(c.created_at),
            container_state(c.state).into(),
            m.name,
            m.attempt.to_string(),
            short(&c.pod_sandbox_id).into(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

pub async fn inspect(cri: &mut Cri, prefix: &str, format: Format) -> anyhow::Result<()> {
    let id = container_id(cri, prefix).await?;
    let s = cri
        .runtime
        .container_status(v1::ContainerStatusRequest {
            container_id: id,
            verbose: true,
        })
        .await
        .map_err(|s| rpc_error("ContainerStatus", s))?
        .into_inner()
        .status
        .unwrap_or_default();
    let m = s.metadata.clone().unwrap_or_default();
    let doc = json!({
        "id": s.id, "name": m.name, "attempt": m.attempt, "state": container_state(s.state),
        "createdAt": s.created_at, "startedAt": s.started_at, "finishedAt": s.finished_at,
        "exitCode": s.exit_code, "reason": s.reason, "message": s.message,
        "image": s.image.map(|i| i.image), "imageRef": s.image_ref, "logPath": s.log_path,
        "labels": s.labels, "annotations": s.annotations,
        "mounts": s.mounts.iter().map(|m| json!({"containerPath": m.container_path, "hostPath": m.host_path, "readonly": m.readonly})).collect::<Vec<_>>(),
    });
    output::structured(
        &doc,
        if format == Format::Table {
            Format::Json
        } else {
            format
        },
    )
}

pub async fn inspectp(cri: &mut Cri, prefix: &str, format: Format) -> anyhow::Result<()> {
    let id = pod_id(cri, prefix).await?;
    let s = cri
        .runtime
        .pod_sandbox_status(v1::PodSandboxStatusRequest {
            pod_sandbox_id: id,
            verbose: true,
        })
        .await
        .map_err(|s| rpc_error("PodSandboxStatus", s))?
        .into_inner()
        .status
        .unwrap_or_default();
    let m = s.metadata.clone().unwrap_or_default();
    let network = s.network.clone().unwrap_or_default();
    let doc = json!({
        "id": s.id, "name": m.name, "namespace": m.namespace, "uid": m.uid, "attempt": m.attempt,
        "state": pod_state(s.state), "createdAt": s.created_at, "ip": network.ip,
        "additionalIps": network.additional_ips.iter().map(|i| i.ip.clone()).collect::<Vec<_>>(),
        "labels": s.labels, "annotations": s.annotations, "runtimeHandler": s.runtime_handler,
    });
    output::structured(
        &doc,
        if format == Format::Table {
            Format::Json
        } else {
            format
        },
    )
}

/// Print the text of CRI log lines (`<time> <stream> <P|F> <text>`), joining partial lines.
fn print_log_lines(lines: &[String]) {
    for line in lines {
        let mut parts = line.splitn(4, ' ');
        let (_time, stream, tag, text) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next().unwrap_or(""),
        );
        let newline = if tag == Some("P") { "" } else { "\n" };
        if stream == Some("stderr") {
            eprint!("{text}{newline}");
        } else {
            print!("{text}{newline}");
        }
    }
}

pub async fn logs(
    cri: &mut Cri,
    prefix: &str,
    tail: Option<usize>,
    follow: bool,
) -> anyhow::Result<()> {
    let id = container_id(cri, prefix).await?;
    let status = cri
        .runtime
        .container_status(v1::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .map_err(|s| rpc_error("ContainerStatus", s))?
        .into_inner()
        .status
        .unwrap_or_default();
    if status.log_path.is_empty() {
        bail!("container {id} has no log path");
    }
    let file = std::fs::File::open(&status.log_path)
        .with_context(|| format!("opening {}", status.log_path))?;
    let mut reader = std::io::BufReader::new(file);
    let lines: Vec<String> = (&mut reader)
        .lines()
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", status.log_path))?;
    let start = tail.map_or(0, |n| lines.len().saturating_sub(n));
    print_log_lines(&lines[start..]);
    if !follow {
        return Ok(());
    }
    // Follow by polling the file, until the container has exited and the log is drained.
    let mut partial = String::new();
    loop {
        let mut line = String::new();
        let read = reader
            .read_line(&mut line)
            .with_context(|| format!("reading {}", status.log_path))?;
        if read > 0 {
            partial.push_str(&line);
            if partial.ends_with('\n') {
                print_log_lines(&[partial.trim_end_matches('\n').to_string()]);
                partial.clear();
            }
            continue;
        }
        let state = cri
            .runtime
            .container_status(v1::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .map_err(|s| rpc_error("ContainerStatus", s))?
            .into_inner()
            .status
            .map(|s| s.state)
            .unwrap_or_default();
        if state == v1::ContainerState::ContainerExited as i32 {
            return Ok(());
        }
        let position = reader.stream_position().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        reader
            .seek(std::io::SeekFrom::Start(position))
            .with_context(|| format!("reading {}", status.log_path))?;
    }
}

pub async fn exec(
    cri: &mut Cri,
    prefix: &str,
    cmd: &[String],
    timeout: i64,
) -> anyhow::Result<i32> {
    let id = container_id(cri, prefix).await?;
    let out = cri
        .runtime
        .exec_sync(v1::ExecSyncRequest {
            container_id: id,
            cmd: cmd.to_vec(),
            timeout,
        })
        .await
        .map_err(|s| rpc_error("ExecSync", s))?
        .into_inner();
    use std::io::Write;
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    Ok(out.exit_code)
}

/// What `stop`, `rm`, `stopp` and `rmp` do to each id they are given.
#[derive(Clone, Copy)]
pub enum Action {
    StopContainer { timeout: i64 },
    RemoveContainer,
    StopPod,
    RemovePod,
}

/// Apply `action` to every id (by unique prefix), printing each full id done, as crictl does.
pub async fn act(cri: &mut Cri, prefixes: &[String], action: Action) -> anyhow::Result<()> {
    for prefix in prefixes {
        let id = match action {
            Action::StopContainer { .. } | Action::RemoveContainer => {
                container_id(cri, prefix).await?
            }
            Action::StopPod | Action::RemovePod => pod_id(cri, prefix).await?,
        };
        let result = match action {
            Action::StopContainer { timeout } => cri
                .runtime
                .stop_container(v1::StopContainerRequest {
                    container_id: id.clone(),
                    timeout,
                })
                .await
                .map(drop)
                .map_err(|s| rpc_error("StopContainer", s)),
            Action::RemoveContainer => cri
                .runtime
                .remove_container(v1::RemoveContainerRequest {
                    container_id: id.clone(),
                })
                .await
                .map(drop)
                .map_err(|s| rpc_error("RemoveContainer", s)),
            Action::StopPod => cri
                .runtime
                .stop_pod_sandbox(v1::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
                .map(drop)
                .map_err(|s| rpc_error("StopPodSandbox", s)),
            Action::RemovePod => cri
                .runtime
                .remove_pod_sandbox(v1::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
                .map(drop)
                .map_err(|s| rpc_error("RemovePodSandbox", s)),
        };
        result?;
        println!("{id}");
    }
    Ok(())
}
