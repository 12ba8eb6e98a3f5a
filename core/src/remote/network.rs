//! [`NetworkDriver`] over `/NetworkDriver.*` (libnetwork's remote driver,
//! reference §5).

use std::sync::Arc;

use berth_plugin_api::network::*;
use berth_plugin_api::remote::wire::Subsystem;
use berth_plugin_api::{DriverError, DriverResult, NetworkDriver};
use serde::Deserialize;

use super::util::{is_cidr, is_ip, is_mac};
use super::RemotePlugin;

const SUB: Subsystem = Subsystem::Network;

/// A remote plugin's network driver.
#[derive(Debug, Clone)]
pub struct RemoteNetwork {
    plugin: Arc<RemotePlugin>,
}

impl RemoteNetwork {
    /// The network driver of `plugin`.
    pub fn new(plugin: Arc<RemotePlugin>) -> Self {
        RemoteNetwork { plugin }
    }

    /// The plugin behind it.
    pub fn plugin(&self) -> &Arc<RemotePlugin> {
        &self.plugin
    }

    fn call_unit<Req: serde::Serialize>(&self, method: &str, req: &Req) -> DriverResult<()> {
        self.plugin.call::<_, serde_json::Value>(SUB, method, Some(req)).map(drop)
    }

    /// A method the plugin may leave out: `404` is success (PL-05).
    fn call_optional<Req: serde::Serialize>(&self, method: &str, req: &Req) -> DriverResult<()> {
        let answer = self.plugin.call_answer(SUB, method, Some(req))?;
        if answer.status == 404 {
            return Ok(());
        }
        self.plugin.decode::<serde_json::Value>(SUB, method, &answer).map(drop)
    }

    /// Refuses an answer after undoing what it created (PL-07).
    fn refuse(&self, method: &str, what: String, undo: DriverResult<()>, undo_name: &str) -> DriverError {
        let e = DriverError::internal(format!(
            "{}: {what}; {}",
            self.plugin.label(SUB, method),
            match undo {
                Ok(()) => format!("undone with {undo_name}"),
                Err(e) => format!("undoing it with {undo_name} failed too: {}", e.message),
            }
        ));
        self.plugin.note_error(&e);
        e
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CapsReply {
    #[serde(rename = "Scope")]
    scope: String,
    #[serde(rename = "ConnectivityScope")]
    connectivity_scope: String,
    #[serde(rename = "GwAllocChecker")]
    gw_alloc_checker: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EndpointReply {
    #[serde(rename = "Interface")]
    interface: Option<EndpointInterface>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InfoReply {
    #[serde(rename = "Value")]
    value: Options,
}

fn scope(value: &str) -> Option<Scope> {
    match value {
        "local" => Some(Scope::Local),
        "global" => Some(Scope::Global),
        _ => None,
    }
}

/// What is wrong with an endpoint answer, given the request's interface:
/// a field the request already set, or one that does not parse.
fn endpoint_problem(asked: Option<&EndpointInterface>, got: &EndpointInterface) -> Option<String> {
    let empty = EndpointInterface::default();
    let asked = asked.unwrap_or(&empty);
    let fields = [
        ("Address", &asked.address, &got.address, is_cidr as fn(&str) -> bool, "a CIDR"),
        ("AddressIPv6", &asked.address_ipv6, &got.address_ipv6, is_cidr, "a CIDR"),
        ("MacAddress", &asked.mac_address, &got.mac_address, is_mac, "a MAC address"),
    ];
    for (name, asked, got, valid, what) in fields {
        if got.is_empty() {
            continue;
        }
        if !asked.is_empty() {
            return Some(format!(
                "answered {name} {got:?} but the request already set it to {asked:?} (a driver may only fill empty fields)"
            ));
        }
        if !valid(got) {
            return Some(format!("answered {name} {got:?}, which is not {what}"));
        }
    }
    None
}

/// What is wrong with a join answer: a gateway or route that does not
/// parse.
fn join_problem(r: &JoinResponse) -> Option<String> {
    for (name, gw) in [("Gateway", &r.gateway), ("GatewayIPv6", &r.gateway_ipv6)] {
        if !gw.is_empty() && !is_ip(gw) {
            return Some(format!("answered {name} {gw:?}, which is not an IP address"));
        }
    }
    for route in &r.static_routes {
        if !is_cidr(&route.destination) {
            return Some(format!("answered a static route to {:?}, which is not a CIDR", route.destination));
        }
        if route.route_type == 0 && !is_ip(&route.next_hop) {
            return Some(format!(
                "answered a static route to {} via {:?}, which is not an IP address",
                route.destination, route.next_hop
            ));
        }
    }
    None
}

impl NetworkDriver for RemoteNetwork {
    /// `Scope` must be `local` or `global` (else the plugin is unusable, as
    /// under dockerd: PL-06); an empty `ConnectivityScope` is `Scope`.
    fn capabilities(&self, _req: CapabilitiesRequest) -> DriverResult<Capabilities> {
        let reply: CapsReply = self.plugin.call::<(), _>(SUB, "GetCapabilities", None)?;
        let bad = |field: &str, value: &str| {
            let e = DriverError::internal(format!(
                "{}: invalid capabilities answer: {field} {value:?} is neither \"local\" nor \"global\"",
                self.plugin.label(SUB, "GetCapabilities")
            ));
            self.plugin.note_error(&e);
            e
        };
        let main = scope(&reply.scope).ok_or_else(|| bad("Scope", &reply.scope))?;
        let connectivity = if reply.connectivity_scope.is_empty() {
            main
        } else {
            scope(&reply.connectivity_scope)
                .ok_or_else(|| bad("ConnectivityScope", &reply.connectivity_scope))?
        };
        let mut caps = Capabilities::new(main);
        caps.connectivity_scope = Some(connectivity);
        caps.gw_alloc_checker = reply.gw_alloc_checker;
        Ok(caps)
    }

    fn create_network(&self, req: CreateNetworkRequest) -> DriverResult<()> {
        self.call_unit("CreateNetwork", &req)
    }

    fn delete_network(&self, req: DeleteNetworkRequest) -> DriverResult<()> {
        self.call_unit("DeleteNetwork", &req)
    }

    /// The answer may fill only the fields the request left empty, with a
    /// CIDR or a MAC; otherwise the endpoint is deleted again and the call
    /// fails (PL-07).
    fn create_endpoint(&self, req: CreateEndpointRequest) -> DriverResult<CreateEndpointResponse> {
        let reply: EndpointReply = self.plugin.call(SUB, "CreateEndpoint", Some(&req))?;
        let mut resp = CreateEndpointResponse::default();
        let Some(got) = reply.interface else { return Ok(resp) };
        if let Some(problem) = endpoint_problem(req.interface.as_ref(), &got) {
            let undo = self.delete_endpoint(DeleteEndpointRequest::new(req.network_id, req.endpoint_id));
            return Err(self.refuse("CreateEndpoint", problem, undo, "DeleteEndpoint"));
        }
        if got != EndpointInterface::default() {
            resp.interface = Some(got);
        }
        Ok(resp)
    }

    fn endpoint_info(&self, req: EndpointInfoRequest) -> DriverResult<Options> {
        let reply: InfoReply = self.plugin.call(SUB, "EndpointOperInfo", Some(&req))?;
        Ok(reply.value)
    }

    fn delete_endpoint(&self, req: DeleteEndpointRequest) -> DriverResult<()> {
        self.call_unit("DeleteEndpoint", &req)
    }

    /// An empty `SrcName` is no interface (SDK plugins always send the
    /// object). A gateway or route that does not parse makes the join
    /// undone with `Leave`.
    fn join(&self, req: JoinRequest) -> DriverResult<JoinResponse> {
        let mut reply: JoinResponse = self.plugin.call(SUB, "Join", Some(&req))?;
        if reply.interface_name.as_ref().is_some_and(|i| i.src_name.is_empty()) {
            reply.interface_name = None;
        }
        if let Some(problem) = join_problem(&reply) {
            let undo = self.leave(LeaveRequest::new(req.network_id, req.endpoint_id));
            return Err(self.refuse("Join", problem, undo, "Leave"));
        }
        Ok(reply)
    }

    fn leave(&self, req: LeaveRequest) -> DriverResult<()> {
        self.call_unit("Leave", &req)
    }

    fn program_external_connectivity(&self, req: ProgramExternalConnectivityRequest) -> DriverResult<()> {
        self.call_optional("ProgramExternalConnectivity", &req)
    }

    fn revoke_external_connectivity(&self, req: RevokeExternalConnectivityRequest) -> DriverResult<()> {
        self.call_optional("RevokeExternalConnectivity", &req)
    }

    fn gw_alloc_check(&self, req: GwAllocCheckRequest) -> DriverResult<GwAllocCheckResponse> {
        self.plugin.call(SUB, "GwAllocCheck", Some(&req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(address: &str, v6: &str, mac: &str) -> EndpointInterface {
        let mut i = EndpointInterface::default();
        i.address = address.into();
        i.address_ipv6 = v6.into();
        i.mac_address = mac.into();
        i
    }

    #[test]
    fn endpoint_answers_may_fill_only_empty_fields_with_valid_values() {
        let asked = iface("10.0.0.2/24", "", "");
        assert_eq!(endpoint_problem(Some(&asked), &iface("", "", "aa:bb:cc:dd:ee:ff")), None);
        assert_eq!(endpoint_problem(None, &iface("10.0.0.3/24", "fd00::3/64", "")), None);
        let p = endpoint_problem(Some(&asked), &iface("10.0.0.2/24", "", "")).unwrap();
        assert!(p.contains("already set"), "{p}");
        let p = endpoint_problem(Some(&asked), &iface("", "", "zz")).unwrap();
        assert!(p.contains("MacAddress \"zz\""), "{p}");
        let p = endpoint_problem(None, &iface("10.0.0.3", "", "")).unwrap();
        assert!(p.contains("not a CIDR"), "{p}");
    }

    #[test]
    fn join_answers_need_parsable_gateways_and_routes() {
        let mut r = JoinResponse::default();
        assert_eq!(join_problem(&r), None);
        r.gateway = "10.0.0.1/24".into();
        assert!(join_problem(&r).unwrap().contains("Gateway"));
        r.gateway = "10.0.0.1".into();
        let mut route = StaticRoute::default();
        route.destination = "10.1.0.0/16".into();
        route.route_type = 1;
        r.static_routes.push(route.clone());
        assert_eq!(join_problem(&r), None);
        route.route_type = 0;
        r.static_routes.push(route);
        assert!(join_problem(&r).unwrap().contains("via"));
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;
    use crate::remote::testing::{plugin, Reply};
    use crate::ErrorKind;

    const NET: &[&str] = &["NetworkDriver"];

    #[test]
    fn an_endpoint_answer_that_resets_the_address_is_deleted_again() {
        let (_d, server, p) = plugin(NET, |r| match r.path.as_str() {
            "/NetworkDriver.CreateEndpoint" => {
                Reply::ok(r#"{"Interface":{"Address":"10.0.0.2/24","MacAddress":"aa:bb:cc:dd:ee:ff"}}"#)
            }
            _ => Reply::ok("{}"),
        });
        let mut req = CreateEndpointRequest::new("n1", "e1");
        let mut asked = EndpointInterface::default();
        asked.address = "10.0.0.2/24".into();
        req.interface = Some(asked);
        let e = p.network().create_endpoint(req).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(
            e.message.contains("already set") && e.message.contains("undone with DeleteEndpoint"),
            "{}",
            e.message
        );
        assert_eq!(
            server.last("/NetworkDriver.DeleteEndpoint").text(),
            "{\"NetworkID\":\"n1\",\"EndpointID\":\"e1\"}\n"
        );
    }

    #[test]
    fn an_unparsable_mac_is_deleted_again_and_a_valid_fill_passes() {
        let (_d, server, p) = plugin(NET, |r| match r.text().contains("bad") {
            true => Reply::ok(r#"{"Interface":{"MacAddress":"qgEAAAAA"}}"#),
            false => Reply::ok(r#"{"Interface":{"MacAddress":"aa:bb:cc:dd:ee:ff","Address":""}}"#),
        });
        let e = p.network().create_endpoint(CreateEndpointRequest::new("n1", "bad")).unwrap_err();
        assert!(e.message.contains("not a MAC address"), "{}", e.message);
        assert_eq!(server.count("/NetworkDriver.DeleteEndpoint"), 1);
        let ok = p.network().create_endpoint(CreateEndpointRequest::new("n1", "good")).unwrap();
        assert_eq!(ok.interface.unwrap().mac_address, "aa:bb:cc:dd:ee:ff");
        assert_eq!(server.count("/NetworkDriver.DeleteEndpoint"), 1);
    }

    #[test]
    fn capabilities_scopes_are_checked() {
        let (_d, server, p) = plugin(NET, |_| Reply::ok(r#"{"Scope":"global","ConnectivityScope":""}"#));
        let caps = p.network().capabilities(CapabilitiesRequest::default()).unwrap();
        assert_eq!((caps.scope, caps.connectivity_scope), (Scope::Global, Some(Scope::Global)));
        assert_eq!(server.last("/NetworkDriver.GetCapabilities").body, b"");
        let (_d, _s, p) = plugin(NET, |_| Reply::ok(r#"{"Scope":"swarm"}"#));
        let e = p.network().capabilities(CapabilitiesRequest::default()).unwrap_err();
        assert!(e.message.contains("invalid capabilities answer: Scope \"swarm\""), "{}", e.message);
        let (_d, _s, p) = plugin(NET, |_| Reply::ok(r#"{"Scope":"local","ConnectivityScope":"galaxy"}"#));
        assert!(p
            .network()
            .capabilities(CapabilitiesRequest::default())
            .unwrap_err()
            .message
            .contains("galaxy"));
    }

    #[test]
    fn optional_methods_accept_404_and_empty_src_names_are_no_interface() {
        let (_d, server, p) = plugin(NET, |r| match r.path.as_str() {
            "/NetworkDriver.Join" => {
                Reply::ok(r#"{"InterfaceName":{"SrcName":"","DstPrefix":""},"Gateway":"10.0.0.1"}"#)
            }
            "/NetworkDriver.Leave" => Reply::ok("{}"),
            "/NetworkDriver.DeleteNetwork" => Reply::json(404, "404 page not found"),
            _ => Reply::json(404, "404 page not found\n"),
        });
        let net = p.network();
        net.program_external_connectivity(ProgramExternalConnectivityRequest::new("n", "e")).unwrap();
        net.revoke_external_connectivity(RevokeExternalConnectivityRequest::new("n", "e")).unwrap();
        let e = net.delete_network(DeleteNetworkRequest::new("n")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported, "404 elsewhere is an error");
        let j = net.join(JoinRequest::new("n", "e")).unwrap();
        assert_eq!((j.interface_name, j.gateway.as_str()), (None, "10.0.0.1"));
        assert_eq!(server.count("/NetworkDriver.Leave"), 0);
    }
}

#[cfg(test)]
mod join_tests {
    use super::*;
    use crate::remote::testing::{plugin, Reply};

    #[test]
    fn a_join_with_a_bad_gateway_is_left_again() {
        let (_d, server, p) = plugin(&["NetworkDriver"], |r| match r.path.as_str() {
            "/NetworkDriver.Join" => {
                Reply::ok(r#"{"InterfaceName":{"SrcName":"veth0","DstPrefix":"eth"},"Gateway":"bogus"}"#)
            }
            _ => Reply::ok("{}"),
        });
        let e = p.network().join(JoinRequest::new("n1", "e1")).unwrap_err();
        assert!(
            e.message.contains("Gateway \"bogus\"") && e.message.contains("undone with Leave"),
            "{}",
            e.message
        );
        assert_eq!(
            server.last("/NetworkDriver.Leave").text(),
            "{\"NetworkID\":\"n1\",\"EndpointID\":\"e1\"}\n"
        );
    }
}
