//! [`IpamDriver`] over `/IpamDriver.*` (reference §6). The in-band error
//! field is `Error` ([`wire::failure`](berth_plugin_api::remote::wire::failure)
//! reads it, and `Err` too).

use std::sync::Arc;

use berth_plugin_api::ipam::*;
use berth_plugin_api::remote::wire::Subsystem;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, IpamDriver};

use super::plugin::GARBAGE;
use super::util::is_cidr;
use super::RemotePlugin;

const SUB: Subsystem = Subsystem::Ipam;

/// A remote plugin's IPAM driver.
#[derive(Debug, Clone)]
pub struct RemoteIpam {
    plugin: Arc<RemotePlugin>,
}

impl RemoteIpam {
    /// The IPAM driver of `plugin`.
    pub fn new(plugin: Arc<RemotePlugin>) -> Self {
        RemoteIpam { plugin }
    }

    /// The plugin behind it.
    pub fn plugin(&self) -> &Arc<RemotePlugin> {
        &self.plugin
    }

    /// Refuses an answer after releasing what it handed out (PL-07).
    fn refuse(&self, method: &str, what: String, undo: Option<(String, DriverResult<()>)>) -> DriverError {
        let tail = match undo {
            None => String::new(),
            Some((name, Ok(()))) => format!("; released it with {name}"),
            Some((name, Err(e))) => format!("; releasing it with {name} failed too: {}", e.message),
        };
        let e = DriverError::internal(format!("{}: {what}{tail}", self.plugin.label(SUB, method)));
        self.plugin.note_error(&e);
        e
    }
}

impl IpamDriver for RemoteIpam {
    /// Optional: any error gives no capabilities.
    fn capabilities(&self, _req: IpamCapabilitiesRequest) -> DriverResult<IpamCapabilities> {
        Ok(self.plugin.call::<(), _>(SUB, "GetCapabilities", None).unwrap_or_default())
    }

    fn default_address_spaces(&self, _req: AddressSpacesRequest) -> DriverResult<AddressSpaces> {
        self.plugin.call::<(), _>(SUB, "GetDefaultAddressSpaces", None)
    }

    /// The answer needs a `PoolID` and a CIDR `Pool`; otherwise the pool
    /// is released again (when an id came back) and the call fails.
    fn request_pool(&self, req: RequestPoolRequest) -> DriverResult<RequestPoolResponse> {
        let resp: RequestPoolResponse = self.plugin.call(SUB, "RequestPool", Some(&req))?;
        if !resp.pool_id.is_empty() && is_cidr(&resp.pool) {
            return Ok(resp);
        }
        let what = if resp.pool_id.is_empty() {
            format!("answered pool {:?} without a PoolID", resp.pool)
        } else {
            format!("answered pool {:?} (PoolID {:?}), which is not a CIDR", resp.pool, resp.pool_id)
        };
        let undo = (!resp.pool_id.is_empty()).then(|| {
            let r = self.release_pool(ReleasePoolRequest::new(resp.pool_id.clone()));
            ("ReleasePool".to_string(), r)
        });
        Err(self.refuse("RequestPool", what, undo))
    }

    fn release_pool(&self, req: ReleasePoolRequest) -> DriverResult<()> {
        self.plugin.call::<_, serde_json::Value>(SUB, "ReleasePool", Some(&req)).map(drop)
    }

    /// The answer must be a CIDR; otherwise the address asked for (or, if
    /// none was, the text answered) is released again and the call fails.
    fn request_address(&self, req: RequestAddressRequest) -> DriverResult<RequestAddressResponse> {
        let resp: RequestAddressResponse = match self.plugin.call(SUB, "RequestAddress", Some(&req)) {
            Ok(resp) => resp,
            // The plugin answered 200 with a body that is not the answer
            // (garbage): it may hold the address it was asked for now.
            Err(e)
                if !req.address.is_empty()
                    && e.kind == ErrorKind::Internal
                    && e.message.contains(GARBAGE) =>
            {
                let release = req.address.clone();
                let tail = match self
                    .release_address(ReleaseAddressRequest::new(req.pool_id.clone(), release.clone()))
                {
                    Ok(()) => format!("; released it with ReleaseAddress {release:?}"),
                    Err(r) => {
                        format!("; releasing it with ReleaseAddress {release:?} failed too: {}", r.message)
                    }
                };
                return Err(DriverError::new(e.kind, format!("{}{tail}", e.message)));
            }
            Err(e) => return Err(e),
        };
        if is_cidr(&resp.address) {
            return Ok(resp);
        }
        let what = if resp.address.is_empty() {
            "answered no address".to_string()
        } else {
            format!("answered address {:?}, which is not a CIDR", resp.address)
        };
        let release = if req.address.is_empty() { resp.address.clone() } else { req.address.clone() };
        let undo = (!release.is_empty()).then(|| {
            let r = self.release_address(ReleaseAddressRequest::new(req.pool_id.clone(), release.clone()));
            (format!("ReleaseAddress {release:?}"), r)
        });
        Err(self.refuse("RequestAddress", what, undo))
    }

    fn release_address(&self, req: ReleaseAddressRequest) -> DriverResult<()> {
        self.plugin.call::<_, serde_json::Value>(SUB, "ReleaseAddress", Some(&req)).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::testing::{plugin, Reply};
    use crate::ErrorKind;

    const IPAM: &[&str] = &["IpamDriver"];

    #[test]
    fn a_pool_that_is_not_a_cidr_is_released_again() {
        let (_d, server, p) = plugin(IPAM, |r| match r.path.as_str() {
            "/IpamDriver.RequestPool" => Reply::ok(r#"{"PoolID":"p1","Pool":"10.0.0.0"}"#),
            _ => Reply::ok("{}"),
        });
        let e = p.ipam().request_pool(RequestPoolRequest::new("local", "")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.contains("not a CIDR") && e.message.contains("released it"), "{}", e.message);
        assert_eq!(server.last("/IpamDriver.ReleasePool").text(), "{\"PoolID\":\"p1\"}\n");
    }

    #[test]
    fn a_requested_address_answered_with_garbage_is_released_again() {
        let (_d, server, p) = plugin(IPAM, |r| match r.path.as_str() {
            "/IpamDriver.RequestAddress" => Reply::ok("<html>no</html>"),
            _ => Reply::ok("{}"),
        });
        let mut req = RequestAddressRequest::new("p1");
        req.address = "10.0.0.7".into();
        let e = p.ipam().request_address(req).unwrap_err();
        assert!(e.message.contains("garbage") && e.message.contains("released it"), "{}", e.message);
        assert_eq!(
            server.last("/IpamDriver.ReleaseAddress").text(),
            "{\"PoolID\":\"p1\",\"Address\":\"10.0.0.7\"}\n"
        );
    }

    #[test]
    fn a_pool_without_id_fails_without_a_release() {
        let (_d, server, p) = plugin(IPAM, |_| Reply::ok(r#"{"Pool":"10.0.0.0/24"}"#));
        let e = p.ipam().request_pool(RequestPoolRequest::new("local", "")).unwrap_err();
        assert!(e.message.contains("without a PoolID"), "{}", e.message);
        assert_eq!(server.count("/IpamDriver.ReleasePool"), 0);
    }

    #[test]
    fn an_empty_address_releases_the_one_asked_for() {
        let (_d, server, p) = plugin(IPAM, |r| match r.path.as_str() {
            "/IpamDriver.RequestAddress" => Reply::ok(r#"{"Address":""}"#),
            _ => Reply::ok("{}"),
        });
        let mut req = RequestAddressRequest::new("p1");
        req.address = "10.0.0.7".into();
        let e = p.ipam().request_address(req).unwrap_err();
        assert!(e.message.contains("answered no address"), "{}", e.message);
        assert_eq!(
            server.last("/IpamDriver.ReleaseAddress").text(),
            "{\"PoolID\":\"p1\",\"Address\":\"10.0.0.7\"}\n"
        );
    }

    #[test]
    fn an_unparsable_address_releases_the_text_answered() {
        let (_d, server, p) = plugin(IPAM, |r| match r.path.as_str() {
            "/IpamDriver.RequestAddress" => Reply::ok(r#"{"Address":"10.0.0.9"}"#),
            _ => Reply::ok("{}"),
        });
        let e = p.ipam().request_address(RequestAddressRequest::new("p1")).unwrap_err();
        assert!(e.message.contains("\"10.0.0.9\", which is not a CIDR"), "{}", e.message);
        assert_eq!(
            server.last("/IpamDriver.ReleaseAddress").text(),
            "{\"PoolID\":\"p1\",\"Address\":\"10.0.0.9\"}\n"
        );
        let (_d, server, p) = plugin(IPAM, |_| Reply::ok(r#"{"Address":""}"#));
        assert!(p.ipam().request_address(RequestAddressRequest::new("p1")).is_err());
        assert_eq!(server.count("/IpamDriver.ReleaseAddress"), 0, "nothing to release");
    }

    #[test]
    fn in_band_error_fields_and_optional_capabilities() {
        let (_d, server, p) = plugin(IPAM, |r| match r.path.as_str() {
            "/IpamDriver.GetCapabilities" => Reply::json(404, "404 page not found"),
            "/IpamDriver.GetDefaultAddressSpaces" => {
                Reply::ok(r#"{"LocalDefaultAddressSpace":"l","GlobalDefaultAddressSpace":"g"}"#)
            }
            _ => Reply::ok(r#"{"Error":"no available address in pool p1"}"#),
        });
        assert_eq!(
            p.ipam().capabilities(IpamCapabilitiesRequest::default()).unwrap(),
            IpamCapabilities::default()
        );
        let spaces = p.ipam().default_address_spaces(AddressSpacesRequest::default()).unwrap();
        assert_eq!((spaces.local.as_str(), spaces.global.as_str()), ("l", "g"));
        let e = p.ipam().request_address(RequestAddressRequest::new("p1")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceExhausted);
        assert_eq!(server.last("/IpamDriver.GetCapabilities").body, b"");
        assert_eq!(server.last("/IpamDriver.GetDefaultAddressSpaces").header("content-length"), Some("0"));
    }
}
