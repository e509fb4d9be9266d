//! Pod sandboxes (work in progress).
