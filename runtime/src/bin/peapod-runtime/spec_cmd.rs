//! `peapod-runtime spec`: a starting config.json, like `runc spec`.
use std::path::Path;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Spec;

pub fn write_default(bundle: &Path) -> Result<()> {
    let path = bundle.join("config.json");
    if path.exists() {
        bail!("{} already exists; remove it first", path.display());
    }
    let mut spec = Spec::default();
    if let Some(process) = spec.process_mut() {
        // Interactive by default, as runc's template is: `run` then gives you a shell.
        process.set_terminal(Some(true));
    }
    let text = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}
