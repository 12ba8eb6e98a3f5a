//! libnftables in process: the [`Backend`] that
//! hands the driver's JSON transactions to `libnftables.so.1` (what the
//! `nft` command is built on; Debian package `libnftables1`, installed with
//! `nftables`) instead of starting `nft` for each.
//!
//! The library is loaded with `dlopen` at first use and stays loaded; the
//! driver builds without its headers and runs where it is missing (the
//! driver then falls back to the `nft` command). One context per driver
//! (`nft_ctx_new`) holds one netfilter netlink socket for the driver's
//! life: no process start (~3.5 ms) per change, and no socket close, which
//! is where the kernel makes a process that deleted something wait for
//! the RCU grace period (see [`crate::nft`]).
//!
//! * Output is set to JSON (`NFT_CTX_OUTPUT_JSON`, which also makes
//!   `nft_run_cmd_from_buffer` parse its input as JSON, falling back to
//!   the nft language) with handles (`NFT_CTX_OUTPUT_HANDLE`), and both
//!   output and errors are buffered (`nft_ctx_buffer_output`,
//!   `nft_ctx_buffer_error`) so nothing reaches the daemon's stdout or
//!   stderr: what nft says on failure goes into the error.
//! * The socket belongs to the network namespace of the thread that made
//!   the context, so the driver programs the namespace it was built in,
//!   whichever thread calls it later.
//! * libnftables keeps some process-wide state (a one-time initialisation,
//!   an interface cache freed after every command), so every call into it,
//!   across contexts, holds one process-wide lock; a context is used by
//!   one thread at a time besides.
//! * `nft_ctx_new` ends the process (`exit(3)`) when it cannot open the
//!   netlink socket; [`Library::open`] opens one itself first and declines
//!   with the reason instead.

use std::ffi::{c_char, c_int, c_uint, CStr, CString};
use std::fmt;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use berth_plugin_api::{DriverError, DriverResult};
use serde_json::{json, Value};

use crate::nft::{self, Backend};

/// The library's file name (soname, ABI `LIBNFTABLES_1`).
pub const SONAME: &str = "libnftables.so.1";

/// `NFT_CTX_OUTPUT_HANDLE` of `<nftables/libnftables.h>`.
const OUTPUT_HANDLE: c_uint = 1 << 3;
/// `NFT_CTX_OUTPUT_JSON` of `<nftables/libnftables.h>`.
const OUTPUT_JSON: c_uint = 1 << 4;

/// `struct nft_ctx`, opaque.
#[repr(C)]
struct NftCtx {
    _opaque: [u8; 0],
}

type CtxNew = unsafe extern "C" fn(flags: u32) -> *mut NftCtx;
type CtxFree = unsafe extern "C" fn(ctx: *mut NftCtx);
type SetFlags = unsafe extern "C" fn(ctx: *mut NftCtx, flags: c_uint);
type Buffer = unsafe extern "C" fn(ctx: *mut NftCtx) -> c_int;
type RunCmd = unsafe extern "C" fn(ctx: *mut NftCtx, buf: *const c_char) -> c_int;
type GetBuffer = unsafe extern "C" fn(ctx: *mut NftCtx) -> *const c_char;

/// The functions the driver uses, resolved once.
struct Api {
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    output_set_flags: SetFlags,
    buffer_output: Buffer,
    buffer_error: Buffer,
    run_cmd_from_buffer: RunCmd,
    get_output_buffer: GetBuffer,
    get_error_buffer: GetBuffer,
    /// Keeps the functions above mapped: never unloaded (a `static`).
    _lib: libloading::Library,
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

/// Held around every call into libnftables (see the module docs).
static CALLS: Mutex<()> = Mutex::new(());

fn calls() -> MutexGuard<'static, ()> {
    // The guarded data is `()`: a panic elsewhere leaves nothing broken.
    CALLS.lock().unwrap_or_else(PoisonError::into_inner)
}

fn api() -> Result<&'static Api, String> {
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Api, String> {
    // SAFETY: loading runs the initialisers of libnftables and of the
    // libraries it links (libnftnl, libmnl, libjansson, libgmp,
    // libxtables), which set up only their own state.
    let lib = unsafe { libloading::Library::new(SONAME) }.map_err(|e| format!("load {SONAME}: {e}"))?;
    macro_rules! sym {
        ($name:literal) => {{
            // SAFETY: the name is NUL-terminated and the type the caller
            // gives is the function's prototype in <nftables/libnftables.h>
            // (unchanged since the ABI LIBNFTABLES_1 of nftables 0.9); the
            // pointer copied out stays valid as long as `lib` is loaded,
            // which `Api` ensures by owning it.
            let s = unsafe { lib.get(concat!($name, "\0").as_bytes()) }
                .map_err(|e| format!("{SONAME}: no function {}: {e}", $name))?;
            *s
        }};
    }
    Ok(Api {
        ctx_new: sym!("nft_ctx_new"),
        ctx_free: sym!("nft_ctx_free"),
        output_set_flags: sym!("nft_ctx_output_set_flags"),
        buffer_output: sym!("nft_ctx_buffer_output"),
        buffer_error: sym!("nft_ctx_buffer_error"),
        run_cmd_from_buffer: sym!("nft_run_cmd_from_buffer"),
        get_output_buffer: sym!("nft_ctx_get_output_buffer"),
        get_error_buffer: sym!("nft_ctx_get_error_buffer"),
        _lib: lib,
    })
}

/// Whether a netfilter netlink socket can be opened here (`nft_ctx_new`
/// would end the process otherwise).
fn probe_netlink() -> Result<(), String> {
    // SAFETY: socket(2) takes no pointers; the descriptor is closed below.
    let fd = unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_NETFILTER)
    };
    if fd < 0 {
        return Err(format!("open a netfilter netlink socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
    Ok(())
}

/// One libnftables context; freed on drop.
struct Context {
    api: &'static Api,
    ctx: NonNull<NftCtx>,
}

// SAFETY: a context is heap state and a socket, not bound to the thread
// that made it; `Library` uses it from one thread at a time (its mutex),
// and every call holds `CALLS` besides.
unsafe impl Send for Context {}

impl Context {
    /// Runs `cmd`; its output, or what libnftables said on failure.
    fn run(&mut self, cmd: &str) -> Result<String, String> {
        let cmd = CString::new(cmd).map_err(|_| "a command with a NUL byte".to_string())?;
        let _calls = calls();
        let ctx = self.ctx.as_ptr();
        // SAFETY: `ctx` is live (freed only on drop) and used by this thread
        // alone; `cmd` is NUL-terminated and outlives the call, which only
        // reads it.
        let rc = unsafe { (self.api.run_cmd_from_buffer)(ctx, cmd.as_ptr()) };
        // SAFETY: both buffers were turned on in `Library::open`, so each
        // getter returns a NUL-terminated string the context owns until its
        // next use, copied here at once (and reading it rewinds it).
        let (out, err) =
            unsafe { (text((self.api.get_output_buffer)(ctx)), text((self.api.get_error_buffer)(ctx))) };
        if rc == 0 {
            Ok(out)
        } else if err.trim().is_empty() {
            Err(format!("error {rc}, and nothing said"))
        } else {
            Err(err)
        }
    }
}

/// Copies a C string libnftables returned; null is empty.
///
/// # Safety
/// `p` is null or a NUL-terminated string valid for the call.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller's promise.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl Drop for Context {
    fn drop(&mut self) {
        let _calls = calls();
        // SAFETY: the context is live and freed once, here.
        unsafe { (self.api.ctx_free)(self.ctx.as_ptr()) };
    }
}

/// libnftables in process, one context behind a mutex.
pub struct Library {
    ctx: Mutex<Context>,
}

impl fmt::Debug for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Library").field("soname", &SONAME).finish_non_exhaustive()
    }
}

impl Library {
    /// Loads the library (once per process) and makes a context in the
    /// calling thread's network namespace; the reason when that cannot be
    /// done (no library, no netfilter netlink).
    pub fn open() -> Result<Library, String> {
        let api = api()?;
        probe_netlink()?;
        let ctx = {
            let _calls = calls();
            // SAFETY: flags 0 is NFT_CTX_DEFAULT; the netlink socket it
            // opens was just shown to open (see `probe_netlink`).
            NonNull::new(unsafe { (api.ctx_new)(0) }).ok_or("nft_ctx_new failed")?
        };
        let ctx = Context { api, ctx };
        {
            let _calls = calls();
            let p = ctx.ctx.as_ptr();
            // SAFETY: `p` is the live context made above, used by this
            // thread alone until `Library` is returned.
            let buffered = unsafe { (api.buffer_output)(p) == 0 && (api.buffer_error)(p) == 0 };
            if !buffered {
                return Err("nft_ctx_buffer_output/nft_ctx_buffer_error failed".into());
            }
            // SAFETY: as above.
            unsafe { (api.output_set_flags)(p, OUTPUT_JSON | OUTPUT_HANDLE) };
        }
        Ok(Library { ctx: Mutex::new(ctx) })
    }

    fn run(&self, cmd: &Value) -> Result<String, String> {
        let mut ctx =
            self.ctx.lock().map_err(|_| "the libnftables context is unusable after a panic".to_string())?;
        ctx.run(&cmd.to_string())
    }
}

const WHAT: &str = "nftables transaction (libnftables in process, as `nft -j -f`)";

impl Backend for Library {
    fn apply(&self, batch: &Value) -> DriverResult<()> {
        self.run(batch).map(drop).map_err(|said| nft::nft_error(WHAT, &said))
    }

    fn list(&self, table: &str) -> DriverResult<Option<Value>> {
        let what = format!("`nft -j -a list table inet {table}` (libnftables in process)");
        match self.run(&json!({ "nftables": [{ "list": { "table": { "family": "inet", "name": table } } }] }))
        {
            Ok(out) => serde_json::from_str(&out)
                .map(Some)
                .map_err(|e| DriverError::internal(format!("{what} gave no JSON listing: {e}"))),
            Err(said) if nft::no_such_table(&said) => Ok(None),
            Err(said) => Err(nft::nft_error(&what, &said)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root with the library installed; prints why not otherwise.
    fn library() -> Option<Library> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return None;
        }
        match Library::open() {
            Ok(l) => Some(l),
            Err(why) => {
                eprintln!("skipped: {why}");
                None
            }
        }
    }

    /// In a private network namespace of a new thread: JSON in, JSON out,
    /// handles, a missing table, and nft's own words in errors.
    #[test]
    fn transactions_listings_and_errors() {
        std::thread::spawn(|| {
            // SAFETY: unshare(CLONE_NEWNET) changes only this thread's
            // namespace; it takes no pointers.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let Some(lib) = library() else { return };
            assert_eq!(lib.list("t").unwrap(), None);
            let add = json!({ "nftables": [
                { "add": { "table": { "family": "inet", "name": "t" } } },
                { "add": { "chain": { "family": "inet", "table": "t", "name": "c" } } },
                { "add": { "rule": { "family": "inet", "table": "t", "chain": "c", "comment": "x", "expr": [{ "drop": null }] } } },
            ] });
            lib.apply(&add).unwrap();
            let listed = lib.list("t").unwrap().unwrap();
            let rule = listed["nftables"].as_array().unwrap().iter().find_map(|i| i.get("rule")).unwrap();
            assert_eq!(rule["comment"], "x");
            assert!(rule["handle"].as_u64().is_some(), "{listed}");
            let bad = json!({ "nftables": [{ "add": { "rule": { "family": "inet", "table": "nope", "chain": "c", "expr": [{ "drop": null }] } } }] });
            let e = lib.apply(&bad).unwrap_err();
            assert!(e.message.contains("No such file or directory") && e.message.contains("libnftables"), "{}", e.message);
            lib.apply(&json!({ "nftables": [{ "delete": { "table": { "family": "inet", "name": "t" } } }] })).unwrap();
            assert_eq!(lib.list("t").unwrap(), None);
        })
        .join()
        .unwrap();
    }
}
