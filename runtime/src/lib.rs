//! peapod's low-level runtime: turns an OCI runtime bundle into a running, isolated process.
pub mod cgroups;
pub mod seccomp;
