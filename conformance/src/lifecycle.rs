//! The plugin lifecycle suite (`PL-*`) as far as it concerns shared objects:
//! PL-09 and PL-10.
//!
//! These cases test the host side — berth-core's loader and registry and
//! plugin-api's export/host adapters, exactly as linked into this binary —
//! not the plugin given with `--plugin`. They load the fixture plugins of
//! `plugin-api/tests/compat/` from the directory given with `--fixtures DIR`
//! (or `BERTH_CONFORMANCE_FIXTURES`):
//!
//! | file | built against | must |
//! |---|---|---|
//! | `libcompat10.so` | the frozen 1.0.0 interface | load as an older minor; drivers work |
//! | `libcompat20.so` | the same layout, version 2.0.0 | be refused: version |
//! | `libcompatbad.so` | 1.1.0 with `FfiVolume::create(u64)` | be refused: mismatch naming `create` |
//! | `libberth_fixture_faulty.so` | this interface (`conformance/fixtures/faulty`) | turn its planted panic into an internal error |
//!
//! Build them with `plugin-api/tests/compat/build.sh`, which prints the
//! directory to pass. Without them the parts that need them end in a skip
//! that says so.

use std::path::{Path, PathBuf};
use std::sync::Once;

use abi_stable::std_types::{RResult, RStr};
use berth_core::{load_library, Compat, Config, LoadError, Registry, RegistryError};
use berth_plugin_api::ffi::export;
use berth_plugin_api::ffi::host::FfiStorageDriver;
use berth_plugin_api::network::{CapabilitiesRequest, GwAllocCheckRequest};
use berth_plugin_api::storage::*;
use berth_plugin_api::volume::{VolumeCreateRequest, VolumeListRequest, VolumeRemoveRequest};
use berth_plugin_api::{DriverResult, ErrorKind, Init, InitRequest, StorageDriver};

use crate::case::{check, err_kind, ok, Case, CaseResult, Failure, Stop, Suite};
use crate::ctx::{ById, Ctx};

/// The environment variable naming the fixture directory.
pub const FIXTURES_ENV: &str = "BERTH_CONFORMANCE_FIXTURES";

/// The fixture plugins, by file name.
pub const FIXTURE_FILES: [&str; 4] =
    ["libcompat10.so", "libcompat20.so", "libcompatbad.so", "libberth_fixture_faulty.so"];

/// The PL cases implemented here.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "PL-09",
            description: "a `.so` with an incompatible interface is refused at load, naming the mismatch; duplicate names are refused; a panic inside a driver becomes an internal error, not a crash",
            suite: Suite::Plugin,
            run: pl09_refusals,
        },
        Case {
            id: "PL-10",
            description: "a plugin built against an older minor version of `plugin-api` still loads in a newer daemon",
            suite: Suite::Plugin,
            run: pl10_older_minor,
        },
    ]
}

/// The start of every panic the suite provokes on purpose.
const DELIBERATE: &str = "berth-conformance: deliberate panic";

/// Keeps the panics the suite provokes on purpose out of stderr; every
/// other panic still reaches the previous hook.
pub(crate) fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if crate::runner::panic_text(info.payload()).starts_with(DELIBERATE) {
                return;
            }
            previous(info)
        }));
    });
}

/// The fixture files `names`, or a skip saying how to build them.
fn fixtures(ctx: &Ctx, names: &[&str], passed: &str) -> Result<Vec<PathBuf>, Stop> {
    let how = format!(
        "fixture plugins not built: run `plugin-api/tests/compat/build.sh` and pass the directory it prints with --fixtures DIR (or {FIXTURES_ENV})"
    );
    let Some(dir) = ctx.fixtures() else {
        return Err(Stop::Skip(format!("{how}; no fixture directory given{passed}")));
    };
    let missing: Vec<&str> = names.iter().copied().filter(|n| !dir.join(n).is_file()).collect();
    if !missing.is_empty() {
        return Err(Stop::Skip(format!(
            "{how}; missing {} in {}{passed}",
            missing.join(", "),
            dir.display()
        )));
    }
    Ok(names.iter().map(|n| dir.join(n)).collect())
}

/// A config text for a daemon rooted in the case directory.
fn config_text(ctx: &Ctx, plugins: &[(&str, &Path)]) -> String {
    let mut t = format!(
        "[daemon]\nroot = {:?}\nexec_root = {:?}\nplugin_dirs = []\n",
        ctx.dir().join("daemon-root").display().to_string(),
        ctx.dir().join("exec-root").display().to_string()
    );
    for (name, path) in plugins {
        t.push_str(&format!("\n[[plugin]]\nname = {name:?}\npath = {:?}\n", path.display().to_string()));
    }
    t
}

fn pl09_refusals(ctx: &mut Ctx) -> CaseResult {
    duplicate_names(ctx)?;
    panics_become_internal_errors(ctx)?;
    let passed = " (the duplicate-name and panic checks passed)";
    let files = fixtures(ctx, &["libcompatbad.so", "libcompat20.so", "libberth_fixture_faulty.so"], passed)?;
    let (bad, v2, faulty) = (&files[0], &files[1], &files[2]);
    panic_inside_a_shared_object(ctx, faulty)?;

    let step = format!("load {} (FfiVolume::create takes u64)", bad.display());
    match load_library(bad) {
        Ok(lib) => return Err(Failure::new(step, "a refusal", format!("loaded ({:?})", lib.compat)).into()),
        Err(LoadError::Abi { summary, .. }) => {
            let lines = summary.lines().count();
            check(
                !summary.trim().is_empty() && lines <= 2,
                &step,
                "a summary of one or two lines",
                format!("{lines} lines: {summary}"),
            )?;
            check(
                summary.contains("create"),
                &step,
                "a summary naming the changed method `create`",
                summary.clone(),
            )?;
        }
        Err(other) => {
            return Err(Failure::new(step, "an incompatible-interface refusal", other.to_string()).into())
        }
    }
    let step = format!("load {} (plugin-api 2.0.0)", v2.display());
    match load_library(v2) {
        Ok(lib) => Err(Failure::new(step, "a refusal", format!("loaded ({:?})", lib.compat)).into()),
        Err(e @ LoadError::Version { .. }) => {
            let text = e.to_string();
            check(
                text.lines().count() <= 2 && text.contains("2.0.0"),
                &step,
                "a one- or two-line message naming 2.0.0",
                text,
            )
        }
        Err(other) => Err(Failure::new(step, "a version refusal", other.to_string()).into()),
    }
}

fn duplicate_names(ctx: &Ctx) -> CaseResult {
    let fixture = ctx.fixtures().map(|d| d.join("libcompat10.so"));
    let path = fixture.as_deref().filter(|p| p.is_file()).unwrap_or(Path::new("/nonexistent/libdup.so"));
    let text = config_text(ctx, &[("dup", path), ("dup", path)]);
    let step = "parse a configuration naming plugin \"dup\" twice";
    match Config::parse(&text, "pl-09.toml") {
        Ok(_) => return Err(Failure::new(step, "an error", "the configuration was accepted").into()),
        Err(e) => {
            let msg = e.to_string();
            check(
                msg.contains("dup") && msg.lines().count() <= 2,
                step,
                "a short error naming \"dup\"",
                msg,
            )?;
        }
    }
    // A configuration built in code bypasses the parser: the registry itself
    // must refuse the collision.
    let single = Config::parse(&config_text(ctx, &[("dup", path)]), "pl-09.toml")
        .map_err(|e| Failure::new("parse a configuration with one plugin", "success", e.to_string()))?;
    let mut twice = single;
    twice.plugin.push(twice.plugin[0].clone());
    let step = "build a registry from two plugins named \"dup\"";
    match Registry::build(&twice) {
        Err(RegistryError::Collision(name)) if name == "dup" => Ok(()),
        Err(other) => Err(Failure::new(step, "a name-collision error", other.to_string()).into()),
        Ok(_) => Err(Failure::new(step, "a name-collision error", "the registry was built").into()),
    }
}

/// A storage driver that panics in every method but `exists`.
struct Panicky;

fn boom<T>(method: &str) -> DriverResult<T> {
    panic!("{DELIBERATE} in {method}")
}

impl StorageDriver for Panicky {
    fn create(&self, _: CreateRequest) -> DriverResult<()> {
        boom("create")
    }
    fn create_rw(&self, _: CreateRequest) -> DriverResult<()> {
        boom("create_rw")
    }
    fn remove(&self, _: RemoveRequest) -> DriverResult<()> {
        boom("remove")
    }
    fn get(&self, _: GetRequest) -> DriverResult<GetResponse> {
        boom("get")
    }
    fn put(&self, _: PutRequest) -> DriverResult<()> {
        boom("put")
    }
    fn exists(&self, _: ExistsRequest) -> DriverResult<bool> {
        Ok(false)
    }
    fn status(&self, _: StatusRequest) -> DriverResult<StatusResponse> {
        boom("status")
    }
    fn metadata(&self, _: MetadataRequest) -> DriverResult<MetadataResponse> {
        boom("metadata")
    }
    fn cleanup(&self, _: CleanupRequest) -> DriverResult<()> {
        boom("cleanup")
    }
}

/// Through the same export and host adapters a `.so` uses (`export_plugin!`
/// on the plugin side, `PluginModule` on the host side), minus `dlopen`.
fn panics_become_internal_errors(ctx: &Ctx) -> CaseResult {
    quiet_deliberate_panics();
    let driver = FfiStorageDriver::new(export::storage_box(Panicky));
    let e = err_kind(
        "create on a driver that panics, called across the ABI",
        ErrorKind::Internal,
        driver.create(CreateRequest::new("x", "")),
    )?;
    check(
        e.message.contains("panicked"),
        "the internal error of a panicking create",
        "a message saying the driver panicked",
        e.message,
    )?;
    ok("exists on the same driver after its panic", driver.exists(ExistsRequest::new_id("x")))?;
    err_kind(
        "get on the same driver (panics again)",
        ErrorKind::Internal,
        driver.get(GetRequest::new_id("x")),
    )?;

    let init = InitRequest::new("panicky", ctx.dir().display().to_string(), ctx.dir().display().to_string());
    let json = serde_json::to_string(&init).expect("init requests serialize");
    let step = "construct a storage driver whose constructor panics, across the ABI";
    let made = export::storage::<Panicky>(RStr::from_str(&json), |_| -> DriverResult<Init<Panicky>> {
        panic!("{DELIBERATE} in the constructor")
    });
    match made {
        RResult::RErr(e) if e.kind == ErrorKind::Internal => Ok(()),
        RResult::RErr(e) => {
            Err(Failure::new(step, "an internal error", format!("error {}: {}", e.kind, e.message))
                .with_kind(e.kind)
                .into())
        }
        RResult::ROk(_) => Err(Failure::new(step, "an internal error", "a driver").into()),
    }
}

/// The faulty plugin's volume driver panics creating a volume named
/// `panic*`: across a real `dlopen`ed boundary that must be an internal
/// error, and the driver must keep serving. (The plugin's own panic hook
/// prints the panic to stderr; the process lives on.)
fn panic_inside_a_shared_object(ctx: &Ctx, path: &Path) -> CaseResult {
    let step = format!("load {}", path.display());
    let lib = load_library(path).map_err(|e| Failure::new(&step, "it loads", e.to_string()))?;
    let root = ctx.dir().join("faulty-root");
    std::fs::create_dir_all(&root)
        .map_err(|e| Failure::new("make a driver root", "success", e.to_string()))?;
    let init = InitRequest::new("faulty", root.display().to_string(), root.display().to_string());
    let vol = match ok("construct the faulty plugin's volume driver", lib.module.new_volume(&init))? {
        Init::Ready(v) => v,
        Init::Skipped(r) => {
            return Err(
                Failure::new("construct the faulty volume driver", "ready", format!("skipped: {r}")).into()
            )
        }
    };
    let e = err_kind(
        "create volume \"panic-pl09\" (the faulty driver panics) through the shared object",
        ErrorKind::Internal,
        vol.create(VolumeCreateRequest::new("panic-pl09")),
    )?;
    check(
        e.message.contains("panicked"),
        "the internal error of the faulty driver's panic",
        "a message saying the driver panicked",
        e.message,
    )?;
    ok(
        "create volume \"calm\" on the same driver after its panic",
        vol.create(VolumeCreateRequest::new("calm")),
    )?;
    let names: Vec<String> = ok("list volumes after the panic", vol.list(VolumeListRequest::default()))?
        .into_iter()
        .map(|v| v.name)
        .collect();
    check(names == ["calm"], "list volumes after the panic", "[\"calm\"]", format!("{names:?}"))
}

fn pl10_older_minor(ctx: &mut Ctx) -> CaseResult {
    let files = fixtures(ctx, &["libcompat10.so"], "")?;
    let path = &files[0];
    let step =
        format!("load {} (plugin-api 1.0.0) into a {} host", path.display(), berth_plugin_api::API_VERSION);
    let lib =
        load_library(path).map_err(|e| Failure::new(&step, "it loads as an older minor", e.to_string()))?;
    check(lib.compat == Compat::OlderMinor, &step, "compat older_minor", format!("{:?}", lib.compat))?;
    check(
        lib.manifest.api_version.starts_with("1.0."),
        &step,
        "api version 1.0.x",
        &lib.manifest.api_version,
    )?;
    let described = lib.module.describe();
    check(
        described == serde_json::json!({}),
        "describe() of a 1.0 plugin (field added in 1.1)",
        "{}",
        described,
    )?;

    let root = ctx.dir().join("volume-root");
    std::fs::create_dir_all(&root)
        .map_err(|e| Failure::new("make a driver root", "success", e.to_string()))?;
    let init = InitRequest::new("compat10", root.display().to_string(), root.display().to_string());
    let vol = match ok("construct the 1.0 plugin's volume driver", lib.module.new_volume(&init))? {
        Init::Ready(v) => v,
        Init::Skipped(r) => {
            return Err(
                Failure::new("construct the 1.0 volume driver", "ready", format!("skipped: {r}")).into()
            )
        }
    };
    ok("create volume \"old\" on the 1.0 driver", vol.create(VolumeCreateRequest::new("old")))?;
    let names: Vec<String> = ok("list volumes of the 1.0 driver", vol.list(VolumeListRequest::default()))?
        .into_iter()
        .map(|v| v.name)
        .collect();
    check(names == ["old"], "list volumes of the 1.0 driver", "[\"old\"]", format!("{names:?}"))?;
    let mut rm = VolumeRemoveRequest::default();
    rm.name = "old".into();
    ok("remove volume \"old\" on the 1.0 driver", vol.remove(rm))?;

    let net = match ok("construct the 1.0 plugin's network driver", lib.module.new_network(&init))? {
        Init::Ready(n) => n,
        Init::Skipped(r) => {
            return Err(
                Failure::new("construct the 1.0 network driver", "ready", format!("skipped: {r}")).into()
            )
        }
    };
    ok("capabilities of the 1.0 network driver", net.capabilities(CapabilitiesRequest::default()))?;
    err_kind(
        "gw_alloc_check (added in 1.1) on the 1.0 network driver",
        ErrorKind::Unsupported,
        net.gw_alloc_check(GwAllocCheckRequest::default()),
    )?;

    // The daemon's path: a registry built from a configuration.
    let config = Config::parse(&config_text(ctx, &[("compat10", path)]), "pl-10.toml")
        .map_err(|e| Failure::new("parse a configuration naming the 1.0 plugin", "success", e.to_string()))?;
    let registry = Registry::build(&config)
        .map_err(|e| Failure::new("build a registry with the 1.0 plugin", "success", e.to_string()))?;
    let entry = registry.plugin("compat10").expect("the configured plugin has an entry");
    let step = "registry entry of the 1.0 plugin";
    check(
        entry.compat == Some(Compat::OlderMinor),
        step,
        "compat older_minor",
        format!("{:?} ({:?})", entry.compat, entry.state),
    )?;
    let vol = ok("the registry's volume driver \"compat10\"", registry.volume("compat10"))?;
    ok(
        "create a volume through the registry",
        vol.call("create", |v| v.create(VolumeCreateRequest::new("via-registry"))),
    )?;
    Ok(())
}
