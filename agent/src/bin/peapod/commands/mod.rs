//! One module per group of commands; each command is an `async fn` taking
//! the connected clients and its own arguments.

pub mod images;
pub mod import;
pub mod runtime;
pub mod stats;
pub mod workloads;

/// Parses a JSON document the daemon put in an `info` map, keeping it as a
/// plain string if it is not JSON.
pub fn info_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
}
