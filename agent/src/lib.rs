//! peapodd, the CRI node agent: pod sandboxes, containers and images behind the CRI v1 API.
pub mod sandbox;
