//! Links `peapod-shim` as a position-dependent executable.
//!
//! A shim runs beside every container, so its memory is paid once per container. In a
//! position-independent executable the loader must patch every pointer in the relocated
//! read-only data (vtables, string tables: ≈ 300 KiB for the shim), which turns those pages into
//! private copies in every shim; at a fixed address they stay shared pages of the file, and the
//! loader has less to do at every container start. The price is that the shim's own code is not
//! at a random address (its libraries still are); it talks only to peapodd, over a socket only
//! root may open, and copies container output without interpreting it (docs/shim.md).
fn main() {
    println!("cargo:rustc-link-arg-bin=peapod-shim=-no-pie");
}
