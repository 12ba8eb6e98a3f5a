//! firewalld, where it runs: berth's bridges go into a zone of their own
//! over D-Bus, as dockerd does with its `docker` zone, so firewalld's
//! own rules let their traffic through.
//!
//! * zone `berth`, target `ACCEPT` (traffic from the bridges is accepted),
//!   and policy `berth-forwarding` (ingress `ANY`, egress zone `berth`,
//!   target `ACCEPT`, dockerd's `docker-forwarding`) so published ports and
//!   replies reach the containers. Both are created in firewalld's
//!   permanent configuration when missing, followed by one `reload`.
//! * each network's bridge is added to the zone at runtime on create and
//!   removed on delete (and added again when the driver starts).
//!
//! The bus is the system bus (`$DBUS_SYSTEM_BUS_ADDRESS` or
//! `/run/dbus/system_bus_socket`) or the address in the driver option
//! `firewalld_bus`. No bus, or no `org.fedoraproject.FirewallD1` on it,
//! means firewalld is not running and nothing is done.

use std::collections::HashMap;
use std::fmt;

use berth_plugin_api::{DriverError, DriverResult};
use zbus::blocking::Connection;
use zbus::zvariant::Value;

/// The zone berth's bridges go into.
pub const ZONE: &str = "berth";
/// The policy that lets traffic from anywhere reach the zone.
pub const POLICY: &str = "berth-forwarding";

const DEST: &str = "org.fedoraproject.FirewallD1";
const PATH: &str = "/org/fedoraproject/FirewallD1";
const CONFIG_PATH: &str = "/org/fedoraproject/FirewallD1/config";
const IFACE: &str = "org.fedoraproject.FirewallD1";
const IFACE_ZONE: &str = "org.fedoraproject.FirewallD1.zone";
const IFACE_CONFIG: &str = "org.fedoraproject.FirewallD1.config";

/// A connection to a running firewalld.
pub struct Firewalld {
    conn: Connection,
}

impl fmt::Debug for Firewalld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Firewalld").field("unique_name", &self.conn.unique_name()).finish()
    }
}

fn err(what: &str, e: zbus::Error) -> DriverError {
    DriverError::unavailable(format!("firewalld: {what}: {e}"))
}

impl Firewalld {
    /// Connects to firewalld on the bus at `address` (the system bus when
    /// `None`); `None` when there is no bus or firewalld is not on it.
    pub fn connect(address: Option<&str>) -> Option<Firewalld> {
        let conn = match address {
            Some(a) => zbus::blocking::connection::Builder::address(a).and_then(|b| b.build()),
            None => Connection::system(),
        }
        .ok()?;
        let dbus = zbus::blocking::fdo::DBusProxy::new(&conn).ok()?;
        let name = zbus::names::BusName::try_from(DEST).ok()?;
        dbus.name_has_owner(name).ok()?.then_some(Firewalld { conn })
    }

    fn call<B, R>(&self, path: &str, iface: &str, method: &str, body: &B) -> DriverResult<R>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        let msg =
            self.conn.call_method(Some(DEST), path, Some(iface), method, body).map_err(|e| err(method, e))?;
        msg.body().deserialize::<R>().map_err(|e| err(method, e))
    }

    /// Creates zone [`ZONE`] and policy [`POLICY`] in the permanent
    /// configuration when they are missing, then reloads firewalld.
    pub fn ensure_zone(&self) -> DriverResult<()> {
        let mut changed = false;
        let zones: Vec<String> = self.call(CONFIG_PATH, IFACE_CONFIG, "getZoneNames", &())?;
        if !zones.iter().any(|z| z == ZONE) {
            let settings: HashMap<&str, Value> = HashMap::from([
                ("version", Value::from("1.0")),
                ("short", Value::from("berth")),
                ("description", Value::from("interfaces of berth's bridge networks")),
                ("target", Value::from("ACCEPT")),
            ]);
            let _: zbus::zvariant::OwnedObjectPath =
                self.call(CONFIG_PATH, IFACE_CONFIG, "addZone2", &(ZONE, settings))?;
            changed = true;
        }
        let policies: Vec<String> = self.call(CONFIG_PATH, IFACE_CONFIG, "getPolicyNames", &())?;
        if !policies.iter().any(|p| p == POLICY) {
            let settings: HashMap<&str, Value> = HashMap::from([
                ("version", Value::from("1.0")),
                ("short", Value::from("berth-forwarding")),
                ("description", Value::from("lets traffic from anywhere reach berth's bridge networks")),
                ("target", Value::from("ACCEPT")),
                ("ingress_zones", Value::from(vec!["ANY"])),
                ("egress_zones", Value::from(vec![ZONE])),
            ]);
            let _: zbus::zvariant::OwnedObjectPath =
                self.call(CONFIG_PATH, IFACE_CONFIG, "addPolicy", &(POLICY, settings))?;
            changed = true;
        }
        if changed {
            let () = self.call(PATH, IFACE, "reload", &())?;
        }
        Ok(())
    }

    /// The zone interface `ifname` is in at runtime (`""` for none).
    pub fn zone_of(&self, ifname: &str) -> DriverResult<String> {
        self.call(PATH, IFACE_ZONE, "getZoneOfInterface", &(ifname,))
    }

    /// Puts `ifname` into [`ZONE`] (runtime), unless it is there.
    pub fn add_interface(&self, ifname: &str) -> DriverResult<()> {
        if self.zone_of(ifname)? == ZONE {
            return Ok(());
        }
        let _: String = self.call(PATH, IFACE_ZONE, "addInterface", &(ZONE, ifname))?;
        Ok(())
    }

    /// Takes `ifname` out of [`ZONE`] (runtime), if it is there.
    pub fn remove_interface(&self, ifname: &str) -> DriverResult<()> {
        if self.zone_of(ifname)? != ZONE {
            return Ok(());
        }
        let _: String = self.call(PATH, IFACE_ZONE, "removeInterface", &(ZONE, ifname))?;
        Ok(())
    }
}
