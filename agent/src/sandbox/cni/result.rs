//! The result of a CNI ADD: interfaces and addresses.
//!
//! Results since spec 0.3.0 list `ips` (with an index into `interfaces`); 0.1/0.2 results
//! have `ip4`/`ip6` objects instead. Both are read; the raw JSON is kept to pass on as
//! `prevResult`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CniError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    /// The result as the last plugin printed it.
    pub raw: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    /// The netns path for interfaces inside the pod; `None` for host-side ones.
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

impl CniResult {
    pub fn parse(raw: Value) -> Result<Self, CniError> {
        let invalid = |reason: String| CniError::InvalidResult {
            reason,
            result: raw.to_string(),
        };
        let str_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        let interfaces = raw
            .get("interfaces")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|i| Interface {
                        name: str_of(i, "name").unwrap_or_default(),
                        mac: str_of(i, "mac").unwrap_or_default(),
                        sandbox: str_of(i, "sandbox").filter(|s| !s.is_empty()),
                    })
                    .collect()
            })
            .unwrap_or_default();

        let mut ips = Vec::new();
        let gateway = |v: &Value| -> Result<Option<IpAddr>, CniError> {
            str_of(v, "gateway")
                .map(|g| g.parse().map_err(|_| invalid(format!("bad gateway {g:?}"))))
                .transpose()
        };
        if let Some(list) = raw.get("ips").and_then(Value::as_array) {
            for ip in list {
                let cidr =
                    str_of(ip, "address").ok_or_else(|| invalid("an ip without address".into()))?;
                let (address, prefix_len) =
                    parse_cidr(&cidr).ok_or_else(|| invalid(format!("bad address {cidr:?}")))?;
                ips.push(IpConfig {
                    address,
                    prefix_len,
                    gateway: gateway(ip)?,
                    interface: ip
                        .get("interface")
                        .and_then(Value::as_u64)
                        .map(|i| i as usize),
                });
            }
        } else {
            for legacy in ["ip4", "ip6"].iter().filter_map(|key| raw.get(*key)) {
                let cidr =
                    str_of(legacy, "ip").ok_or_else(|| invalid("an ip4/ip6 without ip".into()))?;
                let (address, prefix_len) =
                    parse_cidr(&cidr).ok_or_else(|| invalid(format!("bad address {cidr:?}")))?;
                ips.push(IpConfig {
                    address,
                    prefix_len,
                    gateway: gateway(legacy)?,
                    interface: None,
                });
            }
        }
        Ok(CniResult {
            cni_version: str_of(&raw, "cniVersion").unwrap_or_default(),
            interfaces,
            ips,
            raw,
        })
    }

    /// The addresses of the pod's own interfaces (not of host-side ones such as the
    /// bridge), IPv4 first as the kubelet expects its primary pod IP.
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        let in_pod = |ip: &&IpConfig| match ip.interface {
            Some(index) => self
                .interfaces
                .get(index)
                .is_none_or(|interface| interface.sandbox.is_some()),
            None => true,
        };
        let mut ips: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(in_pod)
            .map(|ip| ip.address)
            .collect();
        // A stable sort keeps the plugin's order within each family.
        ips.sort_by_key(|ip| ip.is_ipv6());
        ips
    }
}

fn parse_cidr(cidr: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = cidr.split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((address, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn current_results() {
        let result = CniResult::parse(json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "br0", "mac": "aa"},
                {"name": "eth0", "mac": "bb", "sandbox": "/run/ns"}
            ],
            "ips": [
                {"interface": 1, "address": "fd00::5/64"},
                {"interface": 0, "address": "10.0.0.1/24"},
                {"interface": 1, "address": "10.0.0.5/24", "gateway": "10.0.0.1"}
            ]
        }))
        .unwrap();
        assert_eq!(result.ips[2].gateway, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(result.ips[2].prefix_len, 24);
        let want: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        assert_eq!(result.pod_ips(), want);
    }

    #[test]
    fn legacy_results_and_errors() {
        let result = CniResult::parse(json!({
            "cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.7/16", "gateway": "10.1.0.1"}
        }))
        .unwrap();
        assert_eq!(
            result.pod_ips(),
            vec!["10.1.0.7".parse::<IpAddr>().unwrap()]
        );
        assert!(CniResult::parse(json!({"ips": [{"address": "10.1.0.7/33"}]})).is_err());
        assert!(CniResult::parse(json!({"ips": [{"address": "nope"}]})).is_err());
    }
}
