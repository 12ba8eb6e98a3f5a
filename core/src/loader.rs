//! Loading shared-object plugins.
//!
//! Each file is loaded on its own with `lib_header_from_path(..)` and
//! `init_root_module` — never `RootModule::load_from_file`, which caches the
//! first module of a type and would hand every later plugin the first one's
//! code.
//!
//! Compatibility policy (see `shared/reference/abi-evolution.md`):
//!
//! 1. The strict check passes: the plugin was built against this interface
//!    version or a newer minor one.
//! 2. It fails on layout: run abi_stable's checker in the other direction
//!    (the plugin's layout as the interface, ours as the implementation). It
//!    accepts exactly "our layout is the plugin's plus appended prefix fields
//!    and methods", i.e. an older minor version; then load without the
//!    forward check. Missing root fields read as `None`; missing methods run
//!    their default bodies, which answer `unsupported`.
//! 3. Anything else (a changed signature, another major version) is refused
//!    with a one- or two-line summary naming the mismatch, instead of
//!    abi_stable's 700-line dump.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use abi_stable::abi_stability::abi_checking::{
    check_layout_compatibility, AbiInstability, AbiInstabilityErrors,
};
use abi_stable::library::{lib_header_from_path, LibHeader, LibraryError};
use abi_stable::type_layout::TLFieldOrFunction;
use abi_stable::StableAbi;
use berth_plugin_api::ffi::{PluginModRef, PluginModule};
use berth_plugin_api::Manifest;

/// How a loaded plugin's interface relates to ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compat {
    /// Built against this plugin-api version or a newer minor one.
    Exact,
    /// Built against an older minor version: loaded after the reverse layout
    /// check; methods it lacks answer `unsupported`.
    OlderMinor,
}

/// A shared object that passed every check.
#[derive(Debug, Clone)]
pub struct LoadedLibrary {
    /// The file it came from.
    pub path: PathBuf,
    /// Its root module, ready to construct drivers.
    pub module: PluginModule,
    /// Its manifest.
    pub manifest: Manifest,
    /// How its interface relates to ours.
    pub compat: Compat,
}

/// Why a shared object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The file is missing, unreadable, or not a shared object.
    #[error("cannot open plugin {path}: {message}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The loader's explanation.
        message: String,
    },
    /// A shared object without a berth root module.
    #[error("{path} is not a berth plugin: {message}")]
    NotAPlugin {
        /// The file.
        path: PathBuf,
        /// The loader's explanation.
        message: String,
    },
    /// Built against an incompatible plugin-api version.
    #[error("plugin {path} was built against plugin-api {plugin}, this daemon speaks {host}: majors differ")]
    Version {
        /// The file.
        path: PathBuf,
        /// The plugin's plugin-api version.
        plugin: String,
        /// Ours.
        host: String,
    },
    /// The interface's layout differs in a way no policy accepts.
    #[error("plugin {path} has an incompatible interface (plugin-api {plugin}, daemon {host}): {summary}")]
    Abi {
        /// The file.
        path: PathBuf,
        /// The plugin's plugin-api version.
        plugin: String,
        /// Ours.
        host: String,
        /// One or two lines naming the mismatch.
        summary: String,
    },
}

/// Loads the plugin at `path` under the compatibility policy above.
pub fn load_library(path: &Path) -> Result<LoadedLibrary, LoadError> {
    let header = lib_header_from_path(path).map_err(|e| open_error(path, e))?;
    let plugin_version = header.version_strings().version.as_str().to_string();
    let host_version = berth_plugin_api::API_VERSION.to_string();
    // The header's version strings are 'static: the library is never unloaded.
    let api_version: &'static str = header.version_strings().version.as_str();
    let (module, compat) = match header.init_root_module::<PluginModRef>() {
        Ok(m) => (m, Compat::Exact),
        Err(LibraryError::AbiInstability(_)) => match older_minor(header) {
            Some(m) => (m, Compat::OlderMinor),
            None => {
                return Err(LoadError::Abi {
                    path: path.to_path_buf(),
                    summary: summarize_mismatch(header),
                    plugin: plugin_version,
                    host: host_version,
                })
            }
        },
        Err(LibraryError::IncompatibleVersionNumber { .. }) => {
            return Err(LoadError::Version {
                path: path.to_path_buf(),
                plugin: plugin_version,
                host: host_version,
            })
        }
        Err(e) => return Err(LoadError::NotAPlugin { path: path.to_path_buf(), message: short(&e) }),
    };
    let module = PluginModule::new(module, api_version);
    let manifest = module.manifest();
    Ok(LoadedLibrary { path: path.to_path_buf(), module, manifest, compat })
}

fn open_error(path: &Path, e: LibraryError) -> LoadError {
    match e {
        LibraryError::OpenError { err, .. } => {
            LoadError::Open { path: path.to_path_buf(), message: err.to_string() }
        }
        other => LoadError::NotAPlugin { path: path.to_path_buf(), message: short(&other) },
    }
}

/// The first line of an error's display, for errors that are not layouts.
fn short(e: &LibraryError) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.iter().take(3).copied().collect::<Vec<_>>().join(" ")
}

/// The reverse check: is our layout the plugin's plus appended items?
fn older_minor(header: &'static LibHeader) -> Option<PluginModRef> {
    let plugin_layout = header.layout()?;
    check_layout_compatibility(plugin_layout, <PluginModRef as StableAbi>::LAYOUT).ok()?;
    // SAFETY: the reverse layout check just proved that the plugin's root
    // module layout is a prefix of ours: every field and method it has has
    // the same type, name and position as ours, and ours only appends items
    // after the `last_prefix_field` markers. Accessors for those appended
    // items check the plugin's field count at run time (prefix types carry
    // it) and answer `None` / the default body, so nothing reads past the
    // plugin's data. The version check still runs inside.
    unsafe { header.init_root_module_with_unchecked_layout::<PluginModRef>() }.ok()
}

/// One or two lines naming the deepest mismatches, from abi_stable's
/// structured errors (host = expected, plugin = found).
fn summarize_mismatch(header: &'static LibHeader) -> String {
    let Some(plugin_layout) = header.layout() else {
        return "the plugin's root module carries no layout".into();
    };
    match check_layout_compatibility(<PluginModRef as StableAbi>::LAYOUT, plugin_layout) {
        Ok(()) => "layouts agree but the module failed to initialize".into(),
        Err(errors) => summarize(&errors),
    }
}

/// Summarizes structured layout errors in at most two lines.
pub fn summarize(errors: &AbiInstabilityErrors) -> String {
    let mut found: Vec<(usize, String)> = errors
        .errors
        .iter()
        .filter(|e| !e.errs.is_empty())
        .map(|e| {
            let mut path: Vec<String> = e
                .stack_trace
                .iter()
                .map(|ef| match &ef.expected {
                    TLFieldOrFunction::Field(f) => f.name().to_string(),
                    TLFieldOrFunction::Function(f) => f.name.as_str().to_string(),
                })
                .filter(|n| !is_plumbing(n))
                .collect();
            path.dedup();
            let what: Vec<String> = e.errs.iter().map(describe).collect();
            let at = if path.is_empty() { "root module".to_string() } else { path.join(".") };
            (e.stack_trace.len(), format!("at {at}: {}", what.join("; ")))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.dedup_by(|a, b| a.1 == b.1);
    let mut out = String::new();
    for (i, (_, line)) in found.iter().take(2).enumerate() {
        if i > 0 {
            out.push_str(" | ");
        }
        let _ = write!(out, "{line}");
    }
    if found.len() > 2 {
        let _ = write!(out, " (+{} more)", found.len() - 2);
    }
    if out.is_empty() {
        out = "layout mismatch".into();
    }
    out
}

/// Stack-trace steps that are abi_stable's plumbing, not our names.
fn is_plumbing(name: &str) -> bool {
    matches!(name, "" | "0" | "obj" | "vtable" | "vtable_" | "field_0" | "_marker" | "_sabi_phantom")
        || name.starts_with("_sabi")
        || name.starts_with("__")
}

/// `name: Type` (a field's display) → `name`; `fn name(...)` → `name`.
fn field_name(display: &str) -> String {
    let d = display.trim();
    let d = d.strip_prefix("fn ").unwrap_or(d);
    let end = d.find([':', '(', '<', ' ']).unwrap_or(d.len());
    d[..end].to_string()
}

fn describe(e: &AbiInstability) -> String {
    fn ty(t: &impl std::fmt::Display) -> String {
        t.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
    }
    match e {
        AbiInstability::FieldCountMismatch(ef) => {
            format!("field count: daemon expects {}, plugin has {}", ef.expected, ef.found)
        }
        AbiInstability::Name(ef) => format!("type {} vs {}", ty(&ef.expected), ty(&ef.found)),
        AbiInstability::MismatchedPrimitive(ef) => format!("primitive {:?} vs {:?}", ef.expected, ef.found),
        AbiInstability::Size(ef) => format!("size {} vs {}", ef.expected, ef.found),
        AbiInstability::Alignment(ef) => format!("alignment {} vs {}", ef.expected, ef.found),
        AbiInstability::UnexpectedField(ef) => {
            format!("field {} vs {}", field_name(&ef.expected.to_string()), field_name(&ef.found.to_string()))
        }
        AbiInstability::FnLifetimeMismatch(ef) | AbiInstability::FnQualifierMismatch(ef) => {
            format!("fn {} signature differs", ef.expected.name)
        }
        AbiInstability::FieldLifetimeMismatch(ef) => {
            format!("field {} lifetimes differ", field_name(&ef.expected.to_string()))
        }
        AbiInstability::Package(ef) => format!("package {} vs {}", ef.expected, ef.found),
        AbiInstability::PackageVersion(ef) => {
            format!("version {} vs {}", ef.expected.version, ef.found.version)
        }
        AbiInstability::TooManyVariants(ef) => {
            format!("variant count: daemon expects {}, plugin has {}", ef.expected, ef.found)
        }
        AbiInstability::UnexpectedVariant(ef) => format!("variant {} vs {}", ef.expected, ef.found),
        other => {
            let mut s = format!("{other:?}");
            s.truncate(120);
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_an_open_error_naming_it() {
        let err = load_library(Path::new("/nonexistent/libberth_storage_x.so")).unwrap_err();
        assert!(matches!(err, LoadError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/libberth_storage_x.so"), "{err}");
    }

    #[test]
    fn a_shared_object_without_a_root_module_is_not_a_plugin() {
        // libc is a shared object on every machine but exports no root module.
        let libc =
            ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
                .into_iter()
                .map(Path::new)
                .find(|p| p.exists());
        let Some(libc) = libc else { return };
        let err = load_library(libc).unwrap_err();
        assert!(matches!(err, LoadError::NotAPlugin { .. }), "{err:?}");
        assert!(err.to_string().lines().count() <= 2, "{err}");
    }

    #[test]
    fn a_text_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("libberth_fake.so");
        std::fs::write(&p, b"not an elf").unwrap();
        let err = load_library(&p).unwrap_err();
        assert!(matches!(err, LoadError::Open { .. }), "{err:?}");
    }

    #[test]
    fn field_names_are_extracted_from_displays() {
        assert_eq!(field_name("new_volume: extern fn()"), "new_volume");
        assert_eq!(field_name("fn create(RStr) -> X"), "create");
        assert_eq!(field_name("0"), "0");
    }
}
