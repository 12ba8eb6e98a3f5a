//! [`VolumeDriver`] over `/VolumeDriver.*` (reference §4).

use std::sync::Arc;

use berth_plugin_api::network::Scope;
use berth_plugin_api::remote::wire::Subsystem;
use berth_plugin_api::util::is_rfc3339;
use berth_plugin_api::volume::*;
use berth_plugin_api::{DriverError, DriverResult, VolumeDriver};
use serde::Deserialize;

use super::RemotePlugin;

const SUB: Subsystem = Subsystem::Volume;

/// A remote plugin's volume driver.
#[derive(Debug, Clone)]
pub struct RemoteVolume {
    plugin: Arc<RemotePlugin>,
}

impl RemoteVolume {
    /// The volume driver of `plugin`.
    pub fn new(plugin: Arc<RemotePlugin>) -> Self {
        RemoteVolume { plugin }
    }

    /// The plugin behind it.
    pub fn plugin(&self) -> &Arc<RemotePlugin> {
        &self.plugin
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MountpointReply {
    #[serde(rename = "Mountpoint")]
    mountpoint: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GetReply {
    #[serde(rename = "Volume")]
    volume: Option<VolumeInfo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListReply {
    #[serde(rename = "Volumes")]
    volumes: Vec<VolumeInfo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CapsReply {
    #[serde(rename = "Capabilities")]
    capabilities: CapsInner,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CapsInner {
    #[serde(rename = "Scope")]
    scope: String,
}

/// moby refuses a whole answer whose `CreatedAt` is not RFC 3339; berth
/// drops just the field.
fn tidy(mut v: VolumeInfo, name: &str) -> VolumeInfo {
    if v.created_at.as_deref().is_some_and(|t| !is_rfc3339(t)) {
        v.created_at = None;
    }
    if v.name.is_empty() {
        v.name = name.to_string();
    }
    v
}

impl VolumeDriver for RemoteVolume {
    fn create(&self, req: VolumeCreateRequest) -> DriverResult<()> {
        self.plugin.call::<_, serde_json::Value>(SUB, "Create", Some(&req)).map(drop)
    }

    fn remove(&self, req: VolumeRemoveRequest) -> DriverResult<()> {
        self.plugin.call::<_, serde_json::Value>(SUB, "Remove", Some(&req)).map(drop)
    }

    /// An answer with no mountpoint is refused, and the mount undone with
    /// `Unmount` of the same id (PL-07).
    fn mount(&self, req: VolumeMountRequest) -> DriverResult<VolumeMountResponse> {
        let reply: MountpointReply = self.plugin.call(SUB, "Mount", Some(&req))?;
        if !reply.mountpoint.is_empty() {
            return Ok(VolumeMountResponse::new(reply.mountpoint));
        }
        let undo = self.unmount(VolumeUnmountRequest::new(req.name.clone(), req.id.clone()));
        let e = DriverError::internal(format!(
            "{}: answered no mountpoint for volume {:?} (mount id {}); {}",
            self.plugin.label(SUB, "Mount"),
            req.name,
            req.id,
            match undo {
                Ok(()) => "unmounted it again".to_string(),
                Err(e) => format!("unmounting it again failed too: {}", e.message),
            }
        ));
        self.plugin.note_error(&e);
        Err(e)
    }

    fn unmount(&self, req: VolumeUnmountRequest) -> DriverResult<()> {
        self.plugin.call::<_, serde_json::Value>(SUB, "Unmount", Some(&req)).map(drop)
    }

    fn path(&self, req: VolumePathRequest) -> DriverResult<VolumePathResponse> {
        let reply: MountpointReply = self.plugin.call(SUB, "Path", Some(&req))?;
        Ok(VolumePathResponse::new(reply.mountpoint))
    }

    /// `"Volume": null` is [`ErrorKind::NotFound`](crate::ErrorKind::NotFound).
    fn get(&self, req: VolumeGetRequest) -> DriverResult<VolumeInfo> {
        let reply: GetReply = self.plugin.call(SUB, "Get", Some(&req))?;
        match reply.volume {
            Some(v) => Ok(tidy(v, &req.name)),
            None => Err(DriverError::not_found(format!(
                "{}: volume {:?} not found",
                self.plugin.label(SUB, "Get"),
                req.name
            ))),
        }
    }

    fn list(&self, req: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>> {
        let reply: ListReply = self.plugin.call(SUB, "List", Some(&req))?;
        Ok(reply.volumes.into_iter().map(|v| tidy(v, "")).collect())
    }

    /// Optional: any error, an empty or an unknown scope is `local`.
    fn capabilities(&self, req: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities> {
        let scope = match self.plugin.call::<_, CapsReply>(SUB, "Capabilities", Some(&req)) {
            Ok(reply) if reply.capabilities.scope.eq_ignore_ascii_case("global") => Scope::Global,
            _ => Scope::Local,
        };
        Ok(VolumeCapabilities::new(scope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::testing::{plugin, Reply};
    use crate::ErrorKind;

    const VOL: &[&str] = &["VolumeDriver"];

    #[test]
    fn a_mount_without_mountpoint_is_unmounted_again() {
        let (_d, server, p) = plugin(VOL, |r| match r.path.as_str() {
            "/VolumeDriver.Mount" => Reply::ok(r#"{"Mountpoint":"","Err":""}"#),
            _ => Reply::ok("{}"),
        });
        let e = p.volume().mount(VolumeMountRequest::new("v", "id1")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(
            e.message.contains("plugin \"p\": VolumeDriver.Mount: answered no mountpoint"),
            "{}",
            e.message
        );
        assert!(e.message.contains("unmounted it again"), "{}", e.message);
        assert_eq!(server.last("/VolumeDriver.Unmount").text(), "{\"Name\":\"v\",\"ID\":\"id1\"}\n");
    }

    #[test]
    fn get_null_is_not_found_and_bad_created_at_is_dropped() {
        let (_d, _s, p) = plugin(VOL, |r| match r.text().as_str() {
            "{\"Name\":\"gone\"}\n" => Reply::ok(r#"{"Volume":null,"Err":""}"#),
            _ => Reply::ok(r#"{"Volume":{"Name":"v","CreatedAt":"yesterday"}}"#),
        });
        let e = p.volume().get(VolumeGetRequest::new("gone")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("volume \"gone\" not found"), "{}", e.message);
        let v = p.volume().get(VolumeGetRequest::new("v")).unwrap();
        assert_eq!((v.name.as_str(), v.created_at), ("v", None));
    }

    #[test]
    fn capabilities_errors_and_unknown_scopes_are_local() {
        let (_d, _s, p) = plugin(VOL, |_| Reply::json(500, "boom"));
        let caps = p.volume().capabilities(VolumeCapabilitiesRequest::default()).unwrap();
        assert_eq!(caps.scope, Scope::Local);
        let (_d, _s, p) = plugin(VOL, |_| Reply::ok(r#"{"Capabilities":{"Scope":"GLOBAL"}}"#));
        assert_eq!(
            p.volume().capabilities(VolumeCapabilitiesRequest::default()).unwrap().scope,
            Scope::Global
        );
        let (_d, _s, p) = plugin(VOL, |_| Reply::ok(r#"{"Capabilities":{"Scope":"cluster"}}"#));
        assert_eq!(
            p.volume().capabilities(VolumeCapabilitiesRequest::default()).unwrap().scope,
            Scope::Local
        );
    }

    #[test]
    fn a_mount_is_never_sent_twice_even_on_the_connection_the_handshake_used() {
        // The handshake and the Mount share one fresh connection; the plugin
        // reads the Mount and drops the connection without answering.
        let (_d, server, p) = plugin(&["VolumeDriver"], |r| match r.path.as_str() {
            "/VolumeDriver.Mount" => Reply::Close,
            _ => Reply::ok("{}"),
        });
        let e = p.volume().mount(VolumeMountRequest::new("v", "id1")).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Unavailable, "{e:?}");
        assert_eq!(
            server.count("/VolumeDriver.Mount"),
            1,
            "a Mount that may have happened is not sent again"
        );
    }
}
