//! `berth network create | ls | inspect | rm | connect | disconnect | prune`,
//! with docker's flags.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{json, Value};

use super::{confirm, filters_query, key_value, label};
use crate::client::{segment, Client};
use crate::output::{print_json, table, Format};
use crate::CliError;

/// `berth network ...`.
#[derive(Debug, clap::Subcommand)]
pub enum NetworkCommand {
    /// Create a network and print its id.
    Create(Box<CreateArgs>),
    /// List networks.
    #[command(visible_alias = "list")]
    Ls {
        /// Filter: driver=, id=, label=KEY[=VALUE], name=REGEX, scope=,
        /// type=custom|builtin, dangling=true|false (repeatable).
        #[arg(short, long = "filter", value_name = "NAME=VALUE", value_parser = key_value)]
        filter: Vec<(String, String)>,
        /// Only ids, one a line.
        #[arg(short, long)]
        quiet: bool,
        /// Full ids.
        #[arg(long)]
        no_trunc: bool,
        /// `table` or `json` (the networks as a JSON array).
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show networks as a JSON array.
    Inspect {
        /// Network names or ids.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks.
    #[command(visible_alias = "remove")]
    Rm {
        /// Network names or ids.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Attach a sandbox to a network.
    Connect {
        /// The network.
        network: String,
        /// The sandbox (name or id).
        sandbox: String,
        /// A specific IPv4 address.
        #[arg(long)]
        ip: Option<String>,
        /// A specific IPv6 address.
        #[arg(long)]
        ip6: Option<String>,
        /// A specific MAC address.
        #[arg(long)]
        mac_address: Option<String>,
        /// An endpoint driver option, key=value (repeatable).
        #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
        driver_opt: Vec<(String, String)>,
    },
    /// Detach a sandbox from a network.
    Disconnect {
        /// The network.
        network: String,
        /// The sandbox (name or id).
        sandbox: String,
        /// Drop the endpoint even when its driver fails.
        #[arg(short, long)]
        force: bool,
    },
    /// Remove every network no sandbox is attached to.
    Prune {
        /// Filter: label=KEY[=VALUE], label!=KEY[=VALUE], until=TIME|DURATION.
        #[arg(long = "filter", value_name = "NAME=VALUE", value_parser = key_value)]
        filter: Vec<(String, String)>,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
        /// `table` prints names; `json` the daemon's answer.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

/// `berth network create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The network's name.
    name: String,
    /// The network driver (default: the daemon's default).
    #[arg(short, long)]
    driver: Option<String>,
    /// A subnet in CIDR form (repeatable: one per pool).
    #[arg(long)]
    subnet: Vec<String>,
    /// Where endpoint addresses come from, inside one subnet (repeatable).
    #[arg(long)]
    ip_range: Vec<String>,
    /// A gateway, inside one subnet (repeatable).
    #[arg(long)]
    gateway: Vec<String>,
    /// An address to keep out of IPAM's hands, name=ip (repeatable).
    #[arg(long, value_name = "NAME=IP", value_parser = key_value)]
    aux_address: Vec<(String, String)>,
    /// The IPAM driver (default: the daemon's).
    #[arg(long)]
    ipam_driver: Option<String>,
    /// An IPAM driver option, key=value (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    ipam_opt: Vec<(String, String)>,
    /// A driver option, key=value (repeatable).
    #[arg(short, long = "opt", value_name = "KEY=VALUE", value_parser = key_value)]
    opt: Vec<(String, String)>,
    /// A label, key=value (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = label)]
    label: Vec<(String, String)>,
    /// No external connectivity.
    #[arg(long)]
    internal: bool,
    /// IPv6 too.
    #[arg(long)]
    ipv6: bool,
    /// Let any sandbox attach (accepted for docker's sake).
    #[arg(long)]
    attachable: bool,
    /// `table` prints the id; `json` the daemon's answer.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// A parsed CIDR: address and prefix length.
fn cidr(s: &str) -> Result<(IpAddr, u8), CliError> {
    let bad = || CliError::Usage(format!("{s:?} is not a subnet in CIDR form"));
    let (ip, len) = s.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok((ip, len))
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u32::from(a) as u128, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

/// Whether `ip` lies in `net`.
fn contains(net: (IpAddr, u8), ip: IpAddr) -> bool {
    let ((n, width), (a, w2)) = (bits(net.0), bits(ip));
    if width != w2 {
        return false;
    }
    let shift = u32::from(width - net.1);
    shift >= 128 || (n >> shift) == (a >> shift)
}

/// Docker's `IPAM.Config`: one entry per subnet, each range, gateway and
/// aux address going to the subnet that holds it.
fn ipam_config(a: &CreateArgs) -> Result<Vec<Value>, CliError> {
    let subnets: Vec<(IpAddr, u8)> = a.subnet.iter().map(|s| cidr(s)).collect::<Result<_, _>>()?;
    if subnets.is_empty() && !(a.ip_range.is_empty() && a.gateway.is_empty() && a.aux_address.is_empty()) {
        return Err(CliError::Usage("--ip-range, --gateway and --aux-address need a --subnet".into()));
    }
    let mut entries: Vec<BTreeMap<&str, Value>> =
        a.subnet.iter().map(|s| BTreeMap::from([("Subnet", json!(s))])).collect();
    let home = |what: &str, ip: IpAddr| -> Result<usize, CliError> {
        subnets
            .iter()
            .position(|n| contains(*n, ip))
            .ok_or_else(|| CliError::Usage(format!("no matching subnet for {what} {ip}")))
    };
    for r in &a.ip_range {
        let i = home("range", cidr(r)?.0)?;
        if entries[i].insert("IPRange", json!(r)).is_some() {
            return Err(CliError::Usage(format!(
                "cannot configure multiple ranges ({r}) on the same subnet"
            )));
        }
    }
    for g in &a.gateway {
        let ip: IpAddr = g.parse().map_err(|_| CliError::Usage(format!("invalid gateway {g:?}")))?;
        let i = home("gateway", ip)?;
        if entries[i].insert("Gateway", json!(g)).is_some() {
            return Err(CliError::Usage(format!(
                "cannot configure multiple gateways ({g}) for the same subnet"
            )));
        }
    }
    for (name, addr) in &a.aux_address {
        let ip: IpAddr =
            addr.parse().map_err(|_| CliError::Usage(format!("invalid aux address {addr:?}")))?;
        let i = home("aux address", ip)?;
        let aux = entries[i].entry("AuxiliaryAddresses").or_insert_with(|| json!({}));
        aux[name.as_str()] = json!(addr);
    }
    Ok(entries.into_iter().map(|e| json!(e)).collect())
}

/// Runs a network command.
pub fn run(client: &Client, cmd: NetworkCommand) -> Result<(), CliError> {
    match cmd {
        NetworkCommand::Create(a) => {
            let to_map = |v: &[(String, String)]| v.iter().cloned().collect::<BTreeMap<_, _>>();
            let body = json!({
                "Name": a.name,
                "Driver": a.driver.clone().unwrap_or_default(),
                "IPAM": {
                    "Driver": a.ipam_driver.clone().unwrap_or_default(),
                    "Config": ipam_config(&a)?,
                    "Options": to_map(&a.ipam_opt),
                },
                "Internal": a.internal,
                "EnableIPv6": a.ipv6,
                "Attachable": a.attachable,
                "Options": to_map(&a.opt),
                "Labels": to_map(&a.label),
            });
            let made: Value = client.post("/networks/create", &body)?;
            if a.format == Format::Json {
                return print_json(&made);
            }
            if let Some(w) = made.get("Warning").and_then(Value::as_str).filter(|w| !w.is_empty()) {
                eprintln!("Warning: {w}");
            }
            println!("{}", made.get("Id").and_then(Value::as_str).unwrap_or(""));
            Ok(())
        }
        NetworkCommand::Ls { filter, quiet, no_trunc, format } => {
            let list: Vec<Value> = client.get(&format!("/networks{}", filters_query(&filter)))?;
            let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let id = |v: &Value| {
                let id = field(v, "Id");
                if no_trunc {
                    id
                } else {
                    id.chars().take(12).collect()
                }
            };
            if quiet {
                list.iter().for_each(|n| println!("{}", id(n)));
                return Ok(());
            }
            if format == Format::Json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|n| vec![id(n), field(n, "Name"), field(n, "Driver"), field(n, "Scope")])
                .collect();
            print!("{}", table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows));
            Ok(())
        }
        NetworkCommand::Inspect { names } => super::inspect_each(client, names, |n| format!("/networks/{n}")),
        NetworkCommand::Rm { names } => super::remove_each(client, names, |n| format!("/networks/{n}")),
        NetworkCommand::Connect { network, sandbox, ip, ip6, mac_address, driver_opt } => {
            let body = json!({
                "Container": sandbox,
                "EndpointConfig": {
                    "IPAMConfig": { "IPv4Address": ip.unwrap_or_default(), "IPv6Address": ip6.unwrap_or_default() },
                    "MacAddress": mac_address.unwrap_or_default(),
                    "DriverOpts": driver_opt.into_iter().collect::<BTreeMap<_, _>>(),
                },
            });
            client.call(
                hyper::Method::POST,
                &format!("/networks/{}/connect", segment(&network)),
                Some(&body),
            )?;
            Ok(())
        }
        NetworkCommand::Disconnect { network, sandbox, force } => {
            let body = json!({ "Container": sandbox, "Force": force });
            client.call(
                hyper::Method::POST,
                &format!("/networks/{}/disconnect", segment(&network)),
                Some(&body),
            )?;
            Ok(())
        }
        NetworkCommand::Prune { filter, force, format } => {
            if !force && !confirm("WARNING! This will remove all custom networks not used by at least one sandbox.\nAre you sure you want to continue?")? {
                return Ok(());
            }
            let report: Value =
                client.post(&format!("/networks/prune{}", filters_query(&filter)), &json!({}))?;
            if format == Format::Json {
                return print_json(&report);
            }
            let deleted: Vec<&str> = report
                .get("NetworksDeleted")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !deleted.is_empty() {
                println!("Deleted Networks:");
                deleted.iter().for_each(|n| println!("{n}"));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        a: CreateArgs,
    }

    fn args(v: &[&str]) -> CreateArgs {
        T::try_parse_from(std::iter::once("t").chain(v.iter().copied())).unwrap().a
    }

    #[test]
    fn ranges_gateways_and_aux_addresses_go_to_their_subnet() {
        let a = args(&[
            "n",
            "--subnet",
            "10.1.0.0/16",
            "--subnet",
            "fd00::/64",
            "--gateway",
            "fd00::1",
            "--gateway",
            "10.1.0.1",
            "--ip-range",
            "10.1.2.0/24",
            "--aux-address",
            "r=10.1.9.9",
        ]);
        let c = ipam_config(&a).unwrap();
        assert_eq!(
            c[0],
            json!({"Subnet": "10.1.0.0/16", "Gateway": "10.1.0.1", "IPRange": "10.1.2.0/24",
                   "AuxiliaryAddresses": {"r": "10.1.9.9"}})
        );
        assert_eq!(c[1], json!({"Subnet": "fd00::/64", "Gateway": "fd00::1"}));
        for bad in [
            &["n", "--gateway", "10.0.0.1"][..],
            &["n", "--subnet", "10.1.0.0/16", "--gateway", "10.2.0.1"],
            &["n", "--subnet", "10.1.0.0/16", "--gateway", "10.1.0.1", "--gateway", "10.1.0.2"],
            &["n", "--subnet", "nonsense"],
        ] {
            assert!(ipam_config(&args(bad)).is_err(), "{bad:?}");
        }
        assert!(contains(cidr("0.0.0.0/0").unwrap(), "1.2.3.4".parse().unwrap()));
        assert!(!contains(cidr("10.0.0.0/8").unwrap(), "fd00::1".parse().unwrap()));
    }
}
