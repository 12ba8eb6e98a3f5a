//! A driver call through the stable ABI versus a plain Rust `dyn` call.
//!
//! Pairs (same driver, same request, two paths):
//! * `vfs_exists`: vfs `exists` on a real layer (a `stat`): linked `dyn`
//!   vs the `.so` loaded by the daemon's loader vs the `.so` through the
//!   daemon's call wrapper (deadline + worker + counters);
//! * `vfs_metadata`: vfs `metadata` (no syscall, a small map answer);
//! * `vfs_get_put`: vfs `get` + `put` of a read-only layer (a read-only
//!   bind mount and its unmount): a method pair that does real work;
//! * `trivial`: a method that does nothing (`capabilities` of a volume
//!   driver): the pure cost of crossing.
//!
//! Needs the release plugins: `cargo build --release -p berth-storage-vfs
//! -p berth-fixture-faulty` (`core/benches/abi_ratio.sh` does it and prints
//! the ratios).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use berth_core::{load_library, Driver, Kind, Metrics};
use berth_plugin_api::network::Scope;
use berth_plugin_api::storage::{CreateRequest, ExistsRequest, MetadataRequest};
use berth_plugin_api::volume::*;
use berth_plugin_api::{Init, InitRequest, StorageDriver, VolumeDriver};

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

mod common;
use common::Trivial;

fn main() {
    divan::main();
    // The fixture lives in a static, which is never dropped: unmount and
    // remove its layers here so a bench run leaves nothing behind.
    if let Some(f) = FIXTURE.get() {
        for d in [&f.linked, &f.so] {
            let _ = d.cleanup(berth_plugin_api::storage::CleanupRequest::default());
        }
        let _ = std::fs::remove_dir_all(f._dir.path());
    }
}

fn target_dir() -> PathBuf {
    // target/release/deps/abi_call-… → target/release
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().and_then(|p| p.parent()).expect("target dir").to_path_buf()
}

struct Fixture {
    _dir: tempfile::TempDir,
    linked: Arc<dyn StorageDriver>,
    so: Arc<dyn StorageDriver>,
    wrapped: Driver<dyn StorageDriver>,
    wrapped_linked: Driver<dyn StorageDriver>,
    trivial_linked: Arc<dyn VolumeDriver>,
    trivial_so: Arc<dyn VolumeDriver>,
}

fn ready<T>(i: Init<T>) -> T {
    match i {
        Init::Ready(t) => t,
        Init::Skipped(r) => panic!("driver skipped: {r}"),
    }
}

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let init = |sub: &str| {
            let root = dir.path().join(sub);
            std::fs::create_dir_all(root.join("run")).unwrap();
            InitRequest::new("vfs", root.display().to_string(), root.join("run").display().to_string())
        };
        let linked: Arc<dyn StorageDriver> =
            Arc::new(ready(berth_storage_vfs::VfsDriver::new(init("linked")).unwrap()));
        let vfs_so = target_dir().join("libberth_storage_vfs.so");
        let lib = load_library(&vfs_so).unwrap_or_else(|e| panic!("{e}: build the release plugins first"));
        let so = ready(lib.module.new_storage(&init("so")).unwrap());
        for d in [&linked, &so] {
            d.create_rw(CreateRequest::new("layer1", "")).unwrap();
            d.create(CreateRequest::new("ro1", "")).unwrap();
        }
        let wrap = |d: &Arc<dyn StorageDriver>| {
            Driver::new(
                d.clone(),
                "vfs",
                Kind::Storage,
                Duration::from_secs(30),
                Arc::new(Metrics::default()),
            )
        };
        let (wrapped, wrapped_linked) = (wrap(&so), wrap(&linked));
        let faulty = load_library(&target_dir().join("libberth_fixture_faulty.so"))
            .unwrap_or_else(|e| panic!("{e}: build the release plugins first"));
        let trivial_so = ready(faulty.module.new_volume(&init("faulty")).unwrap());
        Fixture {
            _dir: dir,
            linked,
            so,
            wrapped,
            wrapped_linked,
            trivial_linked: Arc::new(Trivial),
            trivial_so,
        }
    })
}

mod vfs_exists {
    use super::*;

    #[divan::bench]
    fn dyn_linked() -> bool {
        fixture().linked.exists(ExistsRequest::new(divan::black_box("layer1"))).unwrap()
    }

    #[divan::bench]
    fn abi_so() -> bool {
        fixture().so.exists(ExistsRequest::new(divan::black_box("layer1"))).unwrap()
    }

    #[divan::bench]
    fn abi_so_call_wrapper() -> bool {
        fixture().wrapped.call("exists", |d| d.exists(ExistsRequest::new("layer1"))).unwrap()
    }

    /// The same wrapper around the linked driver: what the daemon would pay
    /// without the ABI.
    #[divan::bench]
    fn dyn_linked_call_wrapper() -> bool {
        fixture().wrapped_linked.call("exists", |d| d.exists(ExistsRequest::new("layer1"))).unwrap()
    }
}

mod vfs_metadata {
    use super::*;

    #[divan::bench]
    fn dyn_linked() -> usize {
        fixture().linked.metadata(MetadataRequest::new(divan::black_box("layer1"))).unwrap().metadata.len()
    }

    #[divan::bench]
    fn abi_so() -> usize {
        fixture().so.metadata(MetadataRequest::new(divan::black_box("layer1"))).unwrap().metadata.len()
    }
}

/// A method pair that does real work: `get` of a read-only layer makes a
/// read-only bind mount, `put` removes it (two mount syscalls and an
/// umount each round).
mod vfs_get_put {
    use super::*;
    use berth_plugin_api::storage::{GetRequest, PutRequest};

    fn round(d: &Arc<dyn StorageDriver>) -> usize {
        let path = d.get(GetRequest::new(divan::black_box("ro1"))).unwrap().path;
        d.put(PutRequest::new("ro1")).unwrap();
        path.len()
    }

    #[divan::bench]
    fn dyn_linked() -> usize {
        round(&fixture().linked)
    }

    #[divan::bench]
    fn abi_so() -> usize {
        round(&fixture().so)
    }
}

mod trivial {
    use super::*;

    #[divan::bench]
    fn dyn_linked() -> Scope {
        fixture().trivial_linked.capabilities(VolumeCapabilitiesRequest::default()).unwrap().scope
    }

    #[divan::bench]
    fn abi_so() -> Scope {
        fixture().trivial_so.capabilities(VolumeCapabilitiesRequest::default()).unwrap().scope
    }
}
