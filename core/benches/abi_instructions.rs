//! Deterministic companion of `abi_call`: runs one call path N times so
//! `core/benches/abi_instructions.sh` can count instructions per call with
//! callgrind (timings on a shared VM vary by 2×; instruction counts do not).
//!
//! Usage: `abi_instructions <case> <n> <dir with the release .so files>`,
//! case one of `exists-dyn`, `exists-abi`, `metadata-dyn`, `metadata-abi`,
//! `trivial-dyn`, `trivial-abi`.

use std::path::Path;
use std::sync::Arc;

use berth_core::load_library;
use berth_plugin_api::network::Scope;
use berth_plugin_api::storage::{CleanupRequest, CreateRequest, ExistsRequest, MetadataRequest};
use berth_plugin_api::volume::*;
use berth_plugin_api::{Init, InitRequest, StorageDriver, VolumeDriver};

fn ready<T>(i: Init<T>) -> T {
    match i {
        Init::Ready(t) => t,
        Init::Skipped(r) => panic!("driver skipped: {r}"),
    }
}

mod common;
use common::Trivial;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        // `cargo bench` runs every bench target with `--bench`: nothing to do.
        return;
    }
    let (case, n, so_dir) = (args[1].as_str(), args[2].parse::<usize>().expect("n"), Path::new(&args[3]));
    let dir = tempfile::tempdir().unwrap();
    let init = InitRequest::new(
        "vfs",
        dir.path().display().to_string(),
        dir.path().join("run").display().to_string(),
    );
    let storage: Option<Arc<dyn StorageDriver>> = match case {
        "exists-dyn" | "metadata-dyn" => {
            Some(Arc::new(ready(berth_storage_vfs::VfsDriver::new(init).unwrap())))
        }
        "exists-abi" | "metadata-abi" => {
            let lib = load_library(&so_dir.join("libberth_storage_vfs.so")).unwrap();
            Some(ready(lib.module.new_storage(&init).unwrap()))
        }
        _ => None,
    };
    if let Some(d) = &storage {
        d.create_rw(CreateRequest::new("layer1", "")).unwrap();
    }
    let volume: Option<Arc<dyn VolumeDriver>> = match case {
        "trivial-dyn" => Some(Arc::new(Trivial)),
        "trivial-abi" => {
            let lib = load_library(&so_dir.join("libberth_fixture_faulty.so")).unwrap();
            Some(ready(lib.module.new_volume(&init_for(dir.path())).unwrap()))
        }
        _ => None,
    };
    let mut sink = 0usize;
    for _ in 0..n {
        sink += match case {
            "exists-dyn" | "exists-abi" => {
                storage.as_ref().unwrap().exists(ExistsRequest::new("layer1")).unwrap() as usize
            }
            "metadata-dyn" | "metadata-abi" => {
                storage.as_ref().unwrap().metadata(MetadataRequest::new("layer1")).unwrap().metadata.len()
            }
            "trivial-dyn" | "trivial-abi" => {
                (volume.as_ref().unwrap().capabilities(VolumeCapabilitiesRequest::default()).unwrap().scope
                    == Scope::Local) as usize
            }
            other => panic!("unknown case {other}"),
        };
    }
    if let Some(d) = &storage {
        d.cleanup(CleanupRequest::default()).unwrap();
    }
    println!("{sink}");
}

fn init_for(dir: &Path) -> InitRequest {
    InitRequest::new("faulty", dir.display().to_string(), dir.display().to_string())
}
