//! Generates the broken interface from the live `plugin-api/src/ffi/abi.rs`:
//! identical except that `FfiVolume::create` takes `u64` instead of `RStr`.

use std::path::Path;

fn main() {
    let live = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../src/ffi/abi.rs");
    println!("cargo:rerun-if-changed={}", live.display());
    let text = std::fs::read_to_string(&live).expect("read the live abi.rs");
    let good = "    /// [`crate::VolumeDriver::create`].\n    fn create(&self, req: RStr<'_>) -> FfiResult;";
    assert!(text.contains(good), "the live abi.rs no longer has FfiVolume::create as expected");
    let bad = text.replace(good, "    /// DELIBERATELY BROKEN: takes `u64`.\n    fn create(&self, req: u64) -> FfiResult;");
    // `include!` takes items only: drop the module's inner doc comments.
    let body: String = bad.lines().filter(|l| !l.starts_with("//!")).map(|l| format!("{l}\n")).collect();
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("abi.rs");
    std::fs::write(out, body).expect("write the generated abi.rs");
}
