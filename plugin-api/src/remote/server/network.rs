//! `NetworkDriver.*`: section 5 of the protocol reference.
//!
//! `AllocateNetwork`/`FreeNetwork` (Swarm managers, global-scope drivers)
//! and `DiscoverNew`/`DiscoverDelete` (Swarm node events) have no trait
//! method: they answer success with nothing allocated.

use serde::Serialize;

use super::routes::{call, Empty, Reply};
use crate::network::*;
use crate::NetworkDriver;

/// `{"Value": {...}}`.
#[derive(Debug, Serialize)]
struct OperInfoReply {
    #[serde(rename = "Value")]
    value: Options,
}

/// `{"Options": {...}}`.
#[derive(Debug, Serialize)]
struct AllocateReply {
    #[serde(rename = "Options")]
    options: Options,
}

/// Answers `NetworkDriver.<method>`; `None` for a method the protocol lacks.
pub(super) fn route(d: &dyn NetworkDriver, name: &str, method: &str, body: &[u8]) -> Option<Reply> {
    Some(match method {
        "GetCapabilities" => call(name, body, |r: CapabilitiesRequest| d.capabilities(r)),
        "GwAllocCheck" => call(name, body, |r: GwAllocCheckRequest| d.gw_alloc_check(r)),
        "CreateNetwork" => call(name, body, |r: CreateNetworkRequest| d.create_network(r).map(|()| Empty {})),
        "DeleteNetwork" => call(name, body, |r: DeleteNetworkRequest| d.delete_network(r).map(|()| Empty {})),
        "AllocateNetwork" => {
            call(name, body, |_: serde_json::Value| Ok(AllocateReply { options: Options::new() }))
        }
        "FreeNetwork" | "DiscoverNew" | "DiscoverDelete" => {
            call(name, body, |_: serde_json::Value| Ok(Empty {}))
        }
        "CreateEndpoint" => call(name, body, |r: CreateEndpointRequest| {
            d.create_endpoint(r).map(|mut resp| {
                // An interface with nothing filled in is "nothing set".
                if resp.interface.as_ref().is_some_and(|i| *i == EndpointInterface::default()) {
                    resp.interface = None;
                }
                resp
            })
        }),
        "EndpointOperInfo" => {
            call(name, body, |r: EndpointInfoRequest| d.endpoint_info(r).map(|value| OperInfoReply { value }))
        }
        "DeleteEndpoint" => {
            call(name, body, |r: DeleteEndpointRequest| d.delete_endpoint(r).map(|()| Empty {}))
        }
        "Join" => call(name, body, |r: JoinRequest| d.join(r)),
        "Leave" => call(name, body, |r: LeaveRequest| d.leave(r).map(|()| Empty {})),
        "ProgramExternalConnectivity" => call(name, body, |r: ProgramExternalConnectivityRequest| {
            d.program_external_connectivity(r).map(|()| Empty {})
        }),
        "RevokeExternalConnectivity" => call(name, body, |r: RevokeExternalConnectivityRequest| {
            d.revoke_external_connectivity(r).map(|()| Empty {})
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::routes::tests::json;
    use super::*;
    use crate::{DriverError, DriverResult};

    struct Net;

    impl NetworkDriver for Net {
        fn capabilities(&self, _: CapabilitiesRequest) -> DriverResult<Capabilities> {
            Ok(Capabilities { scope: Scope::Global, connectivity_scope: None, gw_alloc_checker: true })
        }
        fn create_network(&self, req: CreateNetworkRequest) -> DriverResult<()> {
            assert_eq!(req.ipv4_data[0].gateway, "10.0.0.1/24");
            assert!(req.ipv6_data.is_empty(), "null decodes as empty");
            Ok(())
        }
        fn delete_network(&self, req: DeleteNetworkRequest) -> DriverResult<()> {
            Err(DriverError::not_found(format!("network {:?} not found", req.network_id)))
        }
        fn create_endpoint(&self, req: CreateEndpointRequest) -> DriverResult<CreateEndpointResponse> {
            let mut iface = EndpointInterface::default();
            if req.endpoint_id == "with-mac" {
                iface.mac_address = "02:00:00:00:00:01".into();
            }
            Ok(CreateEndpointResponse { interface: Some(iface) })
        }
        fn endpoint_info(&self, _: EndpointInfoRequest) -> DriverResult<Options> {
            Ok(Options::from([("k".to_string(), serde_json::json!("v"))]))
        }
        fn delete_endpoint(&self, _: DeleteEndpointRequest) -> DriverResult<()> {
            Ok(())
        }
        fn join(&self, req: JoinRequest) -> DriverResult<JoinResponse> {
            assert_eq!(req.sandbox_key, "/var/run/docker/netns/abc");
            Ok(JoinResponse {
                interface_name: Some(InterfaceName::new("veth0", "eth")),
                gateway: "10.0.0.1".into(),
                ..JoinResponse::default()
            })
        }
        fn leave(&self, _: LeaveRequest) -> DriverResult<()> {
            Ok(())
        }
        fn program_external_connectivity(&self, _: ProgramExternalConnectivityRequest) -> DriverResult<()> {
            Ok(())
        }
        fn revoke_external_connectivity(&self, _: RevokeExternalConnectivityRequest) -> DriverResult<()> {
            Ok(())
        }
        fn gw_alloc_check(&self, _: GwAllocCheckRequest) -> DriverResult<GwAllocCheckResponse> {
            Ok(GwAllocCheckResponse { skip_ipv4: true, skip_ipv6: false })
        }
    }

    fn call(method: &str, body: &str) -> (u16, String) {
        let name = format!("NetworkDriver.{method}");
        json(route(&Net, &name, method, body.as_bytes()).unwrap_or_else(|| panic!("{method} not routed")))
    }

    #[test]
    fn every_network_endpoint_answers_its_wire_shape() {
        let ok = |s: &str| (200, s.to_string());
        assert_eq!(
            call("GetCapabilities", ""),
            ok(r#"{"Scope":"global","ConnectivityScope":null,"GwAllocChecker":true}"#)
        );
        assert_eq!(call("GwAllocCheck", r#"{"Options":null}"#), ok(r#"{"SkipIPv4":true,"SkipIPv6":false}"#));
        let create = r#"{"NetworkID":"n","Options":{"com.docker.network.generic":{}},
            "IPv4Data":[{"AddressSpace":"s","Pool":"10.0.0.0/24","Gateway":"10.0.0.1/24"}],"IPv6Data":null}"#;
        assert_eq!(call("CreateNetwork", create), ok("{}"));
        let (status, body) = call("DeleteNetwork", r#"{"NetworkID":"n"}"#);
        assert_eq!(status, 500);
        assert_eq!(body, r#"{"Err":"network \"n\" not found","Kind":"not_found"}"#);
        assert_eq!(call("AllocateNetwork", r#"{"NetworkID":"n","Options":null}"#), ok(r#"{"Options":{}}"#));
        for m in ["FreeNetwork", "DiscoverNew", "DiscoverDelete", "DeleteEndpoint", "Leave"] {
            assert_eq!(call(m, r#"{"NetworkID":"n","EndpointID":"e","DiscoveryType":1}"#), ok("{}"), "{m}");
        }
        assert_eq!(
            call("CreateEndpoint", r#"{"NetworkID":"n","EndpointID":"e","Interface":null}"#),
            ok(r#"{"Interface":null}"#)
        );
        assert_eq!(
            call("CreateEndpoint", r#"{"NetworkID":"n","EndpointID":"with-mac"}"#),
            ok(r#"{"Interface":{"Address":"","AddressIPv6":"","MacAddress":"02:00:00:00:00:01"}}"#)
        );
        assert_eq!(
            call("EndpointOperInfo", r#"{"NetworkID":"n","EndpointID":"e"}"#),
            ok(r#"{"Value":{"k":"v"}}"#)
        );
        assert_eq!(
            call(
                "Join",
                r#"{"networkid":"n","EndpointID":"e","SandboxKey":"/var/run/docker/netns/abc","Options":null}"#
            ),
            ok(concat!(
                r#"{"InterfaceName":{"SrcName":"veth0","DstPrefix":"eth"},"Gateway":"10.0.0.1","GatewayIPv6":"","#,
                r#""StaticRoutes":[],"DisableGatewayService":false}"#
            ))
        );
        assert_eq!(call("ProgramExternalConnectivity", r#"{"Options":{"x":[1]}}"#), ok("{}"));
        assert_eq!(call("RevokeExternalConnectivity", "{}"), ok("{}"));
        assert!(route(&Net, "NetworkDriver.Nope", "Nope", b"{}").is_none());
        let (status, body) = call("Join", r#"{"SandboxKey":5}"#);
        assert_eq!(status, 400, "{body}");
    }
}
