//! `version` and `info`: who the runtime is and whether it is healthy.

use peapod_cri_proto::v1;
use serde_json::{json, Map, Value};

use super::info_value;
use crate::client::{rpc_error, Cri};
use crate::output::{self, Format};

pub async fn version(cri: &mut Cri) -> anyhow::Result<()> {
    let version = cri
        .runtime
        .version(v1::VersionRequest {
            version: "0.1.0".into(),
        })
        .await
        .map_err(|s| rpc_error("Version", s))?
        .into_inner();
    println!("Version:            {}", version.version);
    println!("RuntimeName:        {}", version.runtime_name);
    println!("RuntimeVersion:     {}", version.runtime_version);
    println!("RuntimeApiVersion:  {}", version.runtime_api_version);
    Ok(())
}

/// The runtime's conditions and, as `crictl info` shows them, the daemon's
/// verbose details (config, CNI) beside them.
pub async fn info(cri: &mut Cri, format: Format) -> anyhow::Result<()> {
    let response = cri
        .runtime
        .status(v1::StatusRequest { verbose: true })
        .await
        .map_err(|s| rpc_error("Status", s))?
        .into_inner();
    let conditions: Vec<Value> = response
        .status
        .map(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            json!({
                "type": c.r#type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
            })
        })
        .collect();
    let mut document = Map::new();
    document.insert("status".into(), json!({ "conditions": conditions }));
    let mut topics: Vec<_> = response.info.into_iter().collect();
    topics.sort();
    for (topic, text) in topics {
        document.insert(topic, info_value(&text));
    }
    output::structured(&document, format)
}
