//! A counting proxy: a [`VolumeDriver`] that forwards every call to the
//! driver it wraps and records the call and its result, so a case can see
//! exactly what the core asked of the driver (and teardown can undo what
//! the case left).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use berth_plugin_api::volume::*;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, VolumeDriver};

/// A volume driver method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    /// [`VolumeDriver::create`].
    Create,
    /// [`VolumeDriver::remove`].
    Remove,
    /// [`VolumeDriver::mount`].
    Mount,
    /// [`VolumeDriver::unmount`].
    Unmount,
    /// [`VolumeDriver::path`].
    Path,
    /// [`VolumeDriver::get`].
    Get,
    /// [`VolumeDriver::list`].
    List,
    /// [`VolumeDriver::capabilities`].
    Capabilities,
}

impl Method {
    /// The method's name, as in the trait.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Create => "create",
            Method::Remove => "remove",
            Method::Mount => "mount",
            Method::Unmount => "unmount",
            Method::Path => "path",
            Method::Get => "get",
            Method::List => "list",
            Method::Capabilities => "capabilities",
        }
    }
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// What was called.
    pub method: Method,
    /// The volume (empty for `list` and `capabilities`).
    pub name: String,
    /// The mount id (`mount` and `unmount` only).
    pub id: String,
    /// `Ok`, or the error the driver answered (or the proxy injected).
    pub result: Result<(), DriverError>,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.method.as_str())?;
        if !self.name.is_empty() {
            write!(f, " {}", self.name)?;
        }
        if !self.id.is_empty() {
            write!(f, " id {}", short(&self.id))?;
        }
        match &self.result {
            Ok(()) => Ok(()),
            Err(e) => write!(f, " -> {}", e.kind),
        }
    }
}

/// The first 12 characters of a mount id, as shown in messages.
pub fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Every call made through the proxies sharing this log, in order.
#[derive(Debug, Default)]
pub struct CallLog(Mutex<Vec<Call>>);

impl CallLog {
    fn lock(&self) -> MutexGuard<'_, Vec<Call>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, call: Call) {
        self.lock().push(call);
    }

    /// How many calls were recorded so far (a mark for [`CallLog::since`]).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Every call from mark `from` on.
    pub fn since(&self, from: usize) -> Vec<Call> {
        self.lock().iter().skip(from).cloned().collect()
    }

    /// The calls of `method` on volume `name` (any volume: `None`).
    pub fn calls(&self, method: Method, name: Option<&str>) -> Vec<Call> {
        self.lock()
            .iter()
            .filter(|c| c.method == method && name.map_or(true, |n| c.name == n))
            .cloned()
            .collect()
    }

    /// How many calls of `method` on `name` (any volume: `None`).
    pub fn count(&self, method: Method, name: Option<&str>) -> usize {
        self.calls(method, name).len()
    }

    /// What the calls left behind: the mount ids mounted and not released
    /// (by volume), and the volumes created and not removed, by the
    /// driver's own answers.
    pub fn outstanding(&self) -> (BTreeMap<String, BTreeSet<String>>, Vec<String>) {
        let mut mounts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut volumes: Vec<String> = Vec::new();
        for c in self.lock().iter().filter(|c| c.result.is_ok()) {
            match c.method {
                Method::Create if !volumes.contains(&c.name) => volumes.push(c.name.clone()),
                Method::Remove => volumes.retain(|v| v != &c.name),
                Method::Mount => {
                    mounts.entry(c.name.clone()).or_default().insert(c.id.clone());
                }
                Method::Unmount => {
                    if let Some(ids) = mounts.get_mut(&c.name) {
                        ids.remove(&c.id);
                    }
                }
                _ => {}
            }
        }
        mounts.retain(|_, ids| !ids.is_empty());
        (mounts, volumes)
    }
}

/// The counting proxy around a volume driver.
pub struct Recording {
    inner: Arc<dyn VolumeDriver>,
    log: Arc<CallLog>,
    fail_mounts: Mutex<BTreeSet<String>>,
}

impl fmt::Debug for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recording").field("calls", &self.log.len()).finish_non_exhaustive()
    }
}

impl Recording {
    /// Wraps `inner`, recording into `log`.
    pub fn new(inner: Arc<dyn VolumeDriver>, log: Arc<CallLog>) -> Self {
        Recording { inner, log, fail_mounts: Mutex::default() }
    }

    /// The log this proxy records into.
    pub fn log(&self) -> &Arc<CallLog> {
        &self.log
    }

    /// From now on, mounts of volume `name` fail with an `unavailable`
    /// error of the proxy's own, without reaching the driver.
    pub fn fail_mounts_of(&self, name: &str) {
        self.fail_mounts.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string());
    }

    fn record<T>(&self, method: Method, name: &str, id: &str, res: DriverResult<T>) -> DriverResult<T> {
        let result = res.as_ref().map(|_| ()).map_err(Clone::clone);
        self.log.push(Call { method, name: name.to_string(), id: id.to_string(), result });
        res
    }
}

impl VolumeDriver for Recording {
    fn create(&self, req: VolumeCreateRequest) -> DriverResult<()> {
        let name = req.name.clone();
        self.record(Method::Create, &name, "", self.inner.create(req))
    }

    fn remove(&self, req: VolumeRemoveRequest) -> DriverResult<()> {
        let name = req.name.clone();
        self.record(Method::Remove, &name, "", self.inner.remove(req))
    }

    fn mount(&self, req: VolumeMountRequest) -> DriverResult<VolumeMountResponse> {
        let (name, id) = (req.name.clone(), req.id.clone());
        let injected = self.fail_mounts.lock().unwrap_or_else(|p| p.into_inner()).contains(&name);
        let res = if injected {
            Err(DriverError::new(
                ErrorKind::Unavailable,
                format!("berth-conformance: mount of {name} made to fail on purpose"),
            ))
        } else {
            self.inner.mount(req)
        };
        self.record(Method::Mount, &name, &id, res)
    }

    fn unmount(&self, req: VolumeUnmountRequest) -> DriverResult<()> {
        let (name, id) = (req.name.clone(), req.id.clone());
        self.record(Method::Unmount, &name, &id, self.inner.unmount(req))
    }

    fn path(&self, req: VolumePathRequest) -> DriverResult<VolumePathResponse> {
        let name = req.name.clone();
        self.record(Method::Path, &name, "", self.inner.path(req))
    }

    fn get(&self, req: VolumeGetRequest) -> DriverResult<VolumeInfo> {
        let name = req.name.clone();
        self.record(Method::Get, &name, "", self.inner.get(req))
    }

    fn list(&self, req: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>> {
        self.record(Method::List, "", "", self.inner.list(req))
    }

    fn capabilities(&self, req: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities> {
        self.record(Method::Capabilities, "", "", self.inner.capabilities(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: Method, name: &str, id: &str, ok: bool) -> Call {
        let result = if ok { Ok(()) } else { Err(DriverError::not_found("x")) };
        Call { method, name: name.into(), id: id.into(), result }
    }

    #[test]
    fn outstanding_follows_successful_calls_only() {
        let log = CallLog::default();
        for c in [
            call(Method::Create, "a", "", true),
            call(Method::Create, "b", "", true),
            call(Method::Create, "c", "", false),
            call(Method::Mount, "a", "1", true),
            call(Method::Mount, "a", "2", true),
            call(Method::Mount, "b", "3", false),
            call(Method::Unmount, "a", "1", true),
            call(Method::Remove, "b", "", true),
            call(Method::Create, "a", "", true),
        ] {
            log.push(c);
        }
        let (mounts, volumes) = log.outstanding();
        assert_eq!(mounts, BTreeMap::from([("a".to_string(), BTreeSet::from(["2".to_string()]))]));
        assert_eq!(volumes, ["a"]);
        assert_eq!(log.count(Method::Mount, Some("a")), 2);
        assert_eq!(log.since(7).len(), 2);
        assert_eq!(
            call(Method::Mount, "b", "0123456789abcdef", false).to_string(),
            "mount b id 0123456789ab -> not_found"
        );
    }
}
