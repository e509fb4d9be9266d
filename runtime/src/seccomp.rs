//! seccomp (work in progress)
