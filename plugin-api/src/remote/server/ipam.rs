//! `IpamDriver.*`: section 6 of the protocol reference. Errors go out as
//! non-200 answers with `Err`, which every engine understands (an in-band
//! `Error` would be needed for a 200).

use super::routes::{call, Empty, Reply};
use crate::ipam::*;
use crate::IpamDriver;

/// Answers `IpamDriver.<method>`; `None` for a method the protocol lacks.
pub(super) fn route(d: &dyn IpamDriver, name: &str, method: &str, body: &[u8]) -> Option<Reply> {
    Some(match method {
        "GetCapabilities" => call(name, body, |r: IpamCapabilitiesRequest| d.capabilities(r)),
        "GetDefaultAddressSpaces" => call(name, body, |r: AddressSpacesRequest| d.default_address_spaces(r)),
        "RequestPool" => call(name, body, |r: RequestPoolRequest| d.request_pool(r)),
        "ReleasePool" => call(name, body, |r: ReleasePoolRequest| d.release_pool(r).map(|()| Empty {})),
        "RequestAddress" => call(name, body, |r: RequestAddressRequest| d.request_address(r)),
        "ReleaseAddress" => {
            call(name, body, |r: ReleaseAddressRequest| d.release_address(r).map(|()| Empty {}))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::routes::tests::json;
    use super::*;
    use crate::{DriverError, DriverResult};

    struct Ipam;

    impl IpamDriver for Ipam {
        fn capabilities(&self, _: IpamCapabilitiesRequest) -> DriverResult<IpamCapabilities> {
            Ok(IpamCapabilities { requires_mac_address: true, requires_request_replay: false })
        }
        fn default_address_spaces(&self, _: AddressSpacesRequest) -> DriverResult<AddressSpaces> {
            Ok(AddressSpaces::new("LocalDefault", "GlobalDefault"))
        }
        fn request_pool(&self, req: RequestPoolRequest) -> DriverResult<RequestPoolResponse> {
            assert!(req.options.is_empty() && req.v6);
            let mut resp = RequestPoolResponse::new("p1", "10.1.0.0/16");
            resp.data.insert(GATEWAY_REQUEST.into(), "10.1.0.1/16".into());
            Ok(resp)
        }
        fn release_pool(&self, req: ReleasePoolRequest) -> DriverResult<()> {
            Err(DriverError::not_found(format!("pool {:?} is not live", req.pool_id)))
        }
        fn request_address(&self, req: RequestAddressRequest) -> DriverResult<RequestAddressResponse> {
            assert!(req.is_gateway());
            Ok(RequestAddressResponse::new("10.1.0.1/16"))
        }
        fn release_address(&self, _: ReleaseAddressRequest) -> DriverResult<()> {
            Ok(())
        }
    }

    fn call(method: &str, body: &str) -> (u16, String) {
        json(route(&Ipam, &format!("IpamDriver.{method}"), method, body.as_bytes()).expect("routed"))
    }

    #[test]
    fn every_ipam_endpoint_answers_its_wire_shape() {
        let ok = |s: &str| (200, s.to_string());
        assert_eq!(
            call("GetCapabilities", ""),
            ok(r#"{"RequiresMACAddress":true,"RequiresRequestReplay":false}"#)
        );
        assert_eq!(
            call("GetDefaultAddressSpaces", ""),
            ok(r#"{"LocalDefaultAddressSpace":"LocalDefault","GlobalDefaultAddressSpace":"GlobalDefault"}"#)
        );
        assert_eq!(
            call(
                "RequestPool",
                r#"{"AddressSpace":"LocalDefault","Pool":"","SubPool":"","Options":null,"V6":true}"#
            ),
            ok(r#"{"PoolID":"p1","Pool":"10.1.0.0/16","Data":{"com.docker.network.gateway":"10.1.0.1/16"}}"#)
        );
        assert_eq!(
            call("ReleasePool", r#"{"PoolID":"p9"}"#),
            (500, r#"{"Err":"pool \"p9\" is not live","Kind":"not_found"}"#.to_string())
        );
        assert_eq!(
            call(
                "RequestAddress",
                r#"{"PoolID":"p1","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#
            ),
            ok(r#"{"Address":"10.1.0.1/16","Data":{}}"#)
        );
        assert_eq!(call("ReleaseAddress", r#"{"PoolID":"p1","Address":"10.1.0.1"}"#), ok("{}"));
        assert!(route(&Ipam, "IpamDriver.Nope", "Nope", b"").is_none());
    }
}
