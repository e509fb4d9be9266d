//! cgroups v1 and v2 (work in progress)
