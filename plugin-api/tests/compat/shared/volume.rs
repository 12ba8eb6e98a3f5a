//! The tiny in-memory volume driver every compat fixture plugin serves.
//!
//! Included with `#[path]` into each plugin crate, so `berth_plugin_api`
//! below is that plugin's own copy of the interface (1.0, 2.0 or bad). It
//! speaks the same JSON documents as `berth_plugin_api::volume` on the host.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use abi_stable::std_types::{RResult, RString};
use berth_plugin_api::ffi::abi::{ErrorKind, FfiError, FfiResult};
use serde_json::{json, Value};

/// Volumes by name, each with the ids of the mounts using it.
#[derive(Debug, Default)]
pub struct Volumes {
    vols: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

fn err(kind: ErrorKind, message: String) -> FfiResult {
    RResult::RErr(FfiError { kind, message: RString::from(message) })
}

fn ok(v: Value) -> FfiResult {
    RResult::ROk(RString::from(v.to_string()))
}

/// The `Name` (and `ID`) of a request document.
fn fields(req: &str) -> Result<(String, String), FfiResult> {
    let v: Value = serde_json::from_str(req)
        .map_err(|e| err(ErrorKind::InvalidArgument, format!("malformed request: {e}")))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    Ok((s("Name"), s("ID")))
}

fn mountpoint(name: &str) -> String {
    format!("/compat/{name}")
}

impl Volumes {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, BTreeSet<String>>) -> R) -> R {
        f(&mut self.vols.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn create(&self, req: &str) -> FfiResult {
        let (name, _) = match fields(req) {
            Ok(f) => f,
            Err(e) => return e,
        };
        if name.is_empty() {
            return err(ErrorKind::InvalidArgument, "volume name is empty".into());
        }
        self.with(|v| {
            v.entry(name).or_default();
        });
        ok(Value::Null)
    }

    pub fn remove(&self, req: &str) -> FfiResult {
        let (name, _) = match fields(req) {
            Ok(f) => f,
            Err(e) => return e,
        };
        self.with(|v| match v.get(&name) {
            None => err(ErrorKind::NotFound, format!("volume {name:?} not found")),
            Some(m) if !m.is_empty() => err(ErrorKind::Conflict, format!("volume {name:?} is in use")),
            Some(_) => {
                v.remove(&name);
                ok(Value::Null)
            }
        })
    }

    pub fn mount(&self, req: &str) -> FfiResult {
        let (name, id) = match fields(req) {
            Ok(f) => f,
            Err(e) => return e,
        };
        self.with(|v| match v.get_mut(&name) {
            None => err(ErrorKind::NotFound, format!("volume {name:?} not found")),
            Some(m) => {
                m.insert(id);
                ok(json!({ "Mountpoint": mountpoint(&name) }))
            }
        })
    }

    pub fn unmount(&self, req: &str) -> FfiResult {
        let (name, id) = match fields(req) {
            Ok(f) => f,
            Err(e) => return e,
        };
        self.with(|v| {
            if let Some(m) = v.get_mut(&name) {
                m.remove(&id);
            }
        });
        ok(Value::Null)
    }

    pub fn path(&self, req: &str) -> FfiResult {
        let (name, _) = match fields(req) {
            Ok(f) => f,
            Err(e) => return e,
        };
        self.with(|v| match v.get(&name) {
            None => err(ErrorKind::NotFound, format!("volume {name:?} not found")),
            Some(_) => ok(json!({ "Mountpoint": mountpoint(&name) })),
        })
    }

    pub fn get(&self, req: &str) -> FfiResult {
        let (name, _) = match fields(req) {
            Ok(f) => f,
            Err(e) => return e,
        };
        self.with(|v| match v.get(&name) {
            None => err(ErrorKind::NotFound, format!("volume {name:?} not found")),
            Some(_) => ok(json!({ "Name": name, "Mountpoint": mountpoint(&name) })),
        })
    }

    pub fn list(&self, _req: &str) -> FfiResult {
        let all: Vec<Value> =
            self.with(|v| v.keys().map(|n| json!({ "Name": n, "Mountpoint": mountpoint(n) })).collect());
        ok(Value::Array(all))
    }

    pub fn capabilities(&self, _req: &str) -> FfiResult {
        ok(json!({ "Scope": "local" }))
    }
}

/// The `FfiVolume` methods every fixture forwards to [`Volumes`] unchanged
/// (all but `create`, whose signature the bad fixture changes). Expands
/// inside `impl FfiVolume for Driver` where `Driver(Volumes)`.
#[macro_export]
macro_rules! forward_volume_methods {
    () => {
        fn remove(&self, req: RStr<'_>) -> FfiResult {
            self.0.remove(req.as_str())
        }
        fn mount(&self, req: RStr<'_>) -> FfiResult {
            self.0.mount(req.as_str())
        }
        fn unmount(&self, req: RStr<'_>) -> FfiResult {
            self.0.unmount(req.as_str())
        }
        fn path(&self, req: RStr<'_>) -> FfiResult {
            self.0.path(req.as_str())
        }
        fn get(&self, req: RStr<'_>) -> FfiResult {
            self.0.get(req.as_str())
        }
        fn list(&self, req: RStr<'_>) -> FfiResult {
            self.0.list(req.as_str())
        }
        fn capabilities(&self, req: RStr<'_>) -> FfiResult {
            self.0.capabilities(req.as_str())
        }
    };
}

/// `manifest`, `unsupported`, `new_volume` and `describe` for a fixture
/// that provides only a volume driver `Driver(Volumes)`, named `$name`.
#[macro_export]
macro_rules! volume_only_exports {
    ($name:literal) => {
        extern "C" fn manifest() -> FfiManifest {
            FfiManifest {
                name: RString::from($name),
                version: RString::from(env!("CARGO_PKG_VERSION")),
                kinds: RVec::from(vec![FfiKind::Volume]),
            }
        }

        extern "C" fn unsupported<T>(_req: RStr<'_>) -> RResult<FfiInit<T>, FfiError> {
            RResult::RErr(FfiError {
                kind: ErrorKind::Unsupported,
                message: RString::from(concat!($name, " provides only a volume driver")),
            })
        }

        extern "C" fn new_volume(_req: RStr<'_>) -> RResult<FfiInit<FfiVolumeBox>, FfiError> {
            let driver = FfiVolume_TO::from_value(Driver(volume::Volumes::default()), TD_Opaque);
            RResult::ROk(FfiInit { driver: ROption::RSome(driver), skipped: RString::new() })
        }

        extern "C" fn describe() -> RString {
            RString::from(r#"{"description":"compat fixture"}"#)
        }
    };
}
