//! Mount and unmount of a 128-layer chain (DESIGN budget: ≤ 10 ms).
//!
//! The chain is 128 read-only layers, each adding one file (written into
//! its `diff` dir, as an applied diff would be). Measured, per mount API
//! (`fsconfig`, and `mount` = `mount(2)` with short links):
//!
//! * `image_128`: `get` + `put` of the top layer: a read-only overlay of
//!   128 lower dirs;
//! * `container_on_128`: `get` + `put` of a read-write layer on top of the
//!   chain: 128 lower dirs, an upper and a work dir.
//!
//! Needs root: `cargo bench -p berth-storage-overlay2 --bench mount128`.

use std::path::PathBuf;

use berth_plugin_api::storage::*;
use berth_plugin_api::{Init, InitRequest, StorageDriver};
use berth_storage_overlay2::Overlay2Driver;

const DEPTH: usize = 128;

fn main() {
    divan::main();
}

/// A driver on a fresh root holding the chain `l0`..`l127` and the
/// read-write layer `ctr` on top.
struct Chain {
    driver: Overlay2Driver,
    _dir: tempfile::TempDir,
}

impl Chain {
    fn new(api: &str) -> Chain {
        let dir = tempfile::tempdir().unwrap();
        let mut req = InitRequest::new(
            "overlay2",
            dir.path().join("root").to_str().unwrap(),
            dir.path().join("run").to_str().unwrap(),
        );
        req.options = serde_json::json!({ "mount_api": api });
        let driver = match Overlay2Driver::new(req).unwrap() {
            Init::Ready(d) => d,
            Init::Skipped(why) => panic!("overlay2 declined: {why} (the bench needs root)"),
        };
        for i in 0..DEPTH {
            let parent = if i == 0 { String::new() } else { format!("l{}", i - 1) };
            driver.create(CreateRequest::new(format!("l{i}"), parent)).unwrap();
            let meta = driver.metadata(MetadataRequest::new(format!("l{i}"))).unwrap().metadata;
            std::fs::write(PathBuf::from(&meta["UpperDir"]).join(format!("f{i}")), b"x").unwrap();
        }
        driver.create_rw(CreateRequest::new("ctr", format!("l{}", DEPTH - 1))).unwrap();
        Chain { driver, _dir: dir }
    }

    fn get_put(&self, id: &str) {
        let path = self.driver.get(GetRequest::new(id)).unwrap().path;
        divan::black_box(path);
        self.driver.put(PutRequest::new(id)).unwrap();
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        let _ = self.driver.cleanup(CleanupRequest::default());
    }
}

#[divan::bench(args = ["fsconfig", "mount"], sample_count = 50)]
fn image_128(bencher: divan::Bencher, api: &str) {
    let chain = Chain::new(api);
    let top = format!("l{}", DEPTH - 1);
    chain.get_put(&top); // fail here, not inside the timed loop
    bencher.bench_local(|| chain.get_put(&top));
}

#[divan::bench(args = ["fsconfig", "mount"], sample_count = 50)]
fn container_on_128(bencher: divan::Bencher, api: &str) {
    let chain = Chain::new(api);
    chain.get_put("ctr");
    bencher.bench_local(|| chain.get_put("ctr"));
}
