//! The five capability sets of the container's process.
use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use crate::error::{Error, Result};

/// OCI names capabilities `CAP_CHOWN`…; oci-spec's enum displays them without the prefix.
fn convert(set: Option<&Capabilities>) -> CapsHashSet {
    let supported = caps::runtime::thread_all_supported();
    set.into_iter()
        .flatten()
        .filter_map(|c| format!("CAP_{c}").parse::<Capability>().ok())
        // A capability newer than the running kernel cannot be held; dropping it silently is
        // what runc does too.
        .filter(|c| supported.contains(c))
        .collect()
}

fn err(what: &str, e: caps::errors::CapsError) -> Error {
    Error::Child(format!("setting the {what} capabilities: {e}"))
}

/// Shrink the bounding set. Must run while CAP_SETPCAP is still held, before the user switch.
pub fn drop_bounding(spec: Option<&LinuxCapabilities>) -> Result<()> {
    let keep = convert(spec.and_then(|c| c.bounding().as_ref()));
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| err("bounding", e))?;
        }
    }
    Ok(())
}

/// Set effective, permitted, inheritable and ambient sets, after the user switch.
pub fn apply(spec: Option<&LinuxCapabilities>) -> Result<()> {
    let get = |f: fn(&LinuxCapabilities) -> &Option<Capabilities>| {
        convert(spec.and_then(|c| f(c).as_ref()))
    };
    let permitted = get(LinuxCapabilities::permitted);
    let effective = get(LinuxCapabilities::effective);
    let inheritable = get(LinuxCapabilities::inheritable);
    let ambient = get(LinuxCapabilities::ambient);
    // Each capset call must leave a valid state: effective within permitted at every step, so the
    // effective set shrinks before the permitted one. Ambient capabilities must be permitted and
    // inheritable, so they come last.
    caps::set(None, CapSet::Inheritable, &inheritable).map_err(|e| err("inheritable", e))?;
    caps::set(None, CapSet::Effective, &effective).map_err(|e| err("effective", e))?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(|e| err("permitted", e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| err("ambient", e))?;
    for cap in ambient {
        caps::raise(None, CapSet::Ambient, cap).map_err(|e| err("ambient", e))?;
    }
    Ok(())
}
