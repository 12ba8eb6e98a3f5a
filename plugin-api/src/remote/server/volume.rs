//! `VolumeDriver.*`: section 4 of the protocol reference.

use serde::Serialize;

use super::routes::{call, Empty, Reply};
use crate::volume::*;
use crate::VolumeDriver;

/// `{"Volume": {...}}`.
#[derive(Debug, Serialize)]
struct GetReply {
    #[serde(rename = "Volume")]
    volume: VolumeInfo,
}

/// `{"Volumes": [...]}`.
#[derive(Debug, Serialize)]
struct ListReply {
    #[serde(rename = "Volumes")]
    volumes: Vec<VolumeInfo>,
}

/// `{"Capabilities": {"Scope": "local"}}`.
#[derive(Debug, Serialize)]
struct CapabilitiesReply {
    #[serde(rename = "Capabilities")]
    capabilities: VolumeCapabilities,
}

/// Answers `VolumeDriver.<method>`; `None` for a method the protocol lacks.
pub(super) fn route(d: &dyn VolumeDriver, name: &str, method: &str, body: &[u8]) -> Option<Reply> {
    Some(match method {
        "Create" => call(name, body, |r: VolumeCreateRequest| d.create(r).map(|()| Empty {})),
        "Remove" => call(name, body, |r: VolumeRemoveRequest| d.remove(r).map(|()| Empty {})),
        "Mount" => call(name, body, |r: VolumeMountRequest| d.mount(r)),
        "Unmount" => call(name, body, |r: VolumeUnmountRequest| d.unmount(r).map(|()| Empty {})),
        "Path" => call(name, body, |r: VolumePathRequest| d.path(r)),
        "Get" => call(name, body, |r: VolumeGetRequest| d.get(r).map(|volume| GetReply { volume })),
        "List" => call(name, body, |r: VolumeListRequest| d.list(r).map(|volumes| ListReply { volumes })),
        "Capabilities" => call(name, body, |r: VolumeCapabilitiesRequest| {
            d.capabilities(r).map(|capabilities| CapabilitiesReply { capabilities })
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::routes::tests::json;
    use super::*;
    use crate::network::Scope;
    use crate::{DriverError, DriverResult};

    struct Vol;

    impl VolumeDriver for Vol {
        fn create(&self, req: VolumeCreateRequest) -> DriverResult<()> {
            assert!(req.options.is_empty());
            Ok(())
        }
        fn remove(&self, req: VolumeRemoveRequest) -> DriverResult<()> {
            Err(DriverError::conflict(format!("volume {:?} is in use", req.name)))
        }
        fn mount(&self, req: VolumeMountRequest) -> DriverResult<VolumeMountResponse> {
            Ok(VolumeMountResponse::new(format!("/v/{}/{}", req.name, req.id)))
        }
        fn unmount(&self, _: VolumeUnmountRequest) -> DriverResult<()> {
            Ok(())
        }
        fn path(&self, req: VolumePathRequest) -> DriverResult<VolumePathResponse> {
            Ok(VolumePathResponse::new(format!("/v/{}", req.name)))
        }
        fn get(&self, req: VolumeGetRequest) -> DriverResult<VolumeInfo> {
            Ok(VolumeInfo::new(req.name, "/v"))
        }
        fn list(&self, _: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>> {
            Ok(vec![VolumeInfo::new("a", ""), VolumeInfo::new("b", "/v/b")])
        }
        fn capabilities(&self, _: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities> {
            Ok(VolumeCapabilities::new(Scope::Global))
        }
    }

    fn call(method: &str, body: &str) -> (u16, String) {
        json(route(&Vol, &format!("VolumeDriver.{method}"), method, body.as_bytes()).expect("routed"))
    }

    #[test]
    fn every_volume_endpoint_answers_its_wire_shape() {
        let ok = |s: &str| (200, s.to_string());
        assert_eq!(call("Create", r#"{"Name":"a","Opts":null}"#), ok("{}"));
        assert_eq!(
            call("Remove", r#"{"Name":"a"}"#),
            (500, r#"{"Err":"volume \"a\" is in use","Kind":"conflict"}"#.into())
        );
        assert_eq!(call("Mount", r#"{"Name":"a","ID":"m1"}"#), ok(r#"{"Mountpoint":"/v/a/m1"}"#));
        assert_eq!(call("Unmount", r#"{"Name":"a","ID":"m1"}"#), ok("{}"));
        assert_eq!(call("Path", r#"{"name":"a"}"#), ok(r#"{"Mountpoint":"/v/a"}"#));
        assert_eq!(call("Get", r#"{"Name":"a"}"#), ok(r#"{"Volume":{"Name":"a","Mountpoint":"/v"}}"#));
        assert_eq!(call("List", "{}"), ok(r#"{"Volumes":[{"Name":"a"},{"Name":"b","Mountpoint":"/v/b"}]}"#));
        assert_eq!(call("Capabilities", "{}"), ok(r#"{"Capabilities":{"Scope":"global"}}"#));
        assert!(route(&Vol, "VolumeDriver.Nope", "Nope", b"{}").is_none());
    }
}
