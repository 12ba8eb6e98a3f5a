//! `-p/--publish` as `docker run` takes it, and the PORTS column as
//! `docker ps` shows it.
//!
//! `[ip:][hostPort:]containerPort[/proto]`: `8080:80`, `127.0.0.1::80`
//! (any free host port on 127.0.0.1), `[::1]:8080:80/udp`, `8000-8010:80`
//! (a free one of the range), `8000-8001:80-81` (pairwise), `80-81`
//! (each on any free port). Protocols `tcp` (the default), `udp`, `sctp`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{json, Value};

/// One binding of Docker's `HostConfig.PortBindings`: the key
/// (`80/tcp`), `HostIp` and `HostPort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// `<containerPort>/<proto>`.
    pub key: String,
    /// The host address, or empty.
    pub host_ip: String,
    /// The host port: empty, `8080` or `8000-8010`.
    pub host_port: String,
}

/// `a` or `a-b`, ports 1 to 65535; `what` names it in errors.
fn range(what: &str, s: &str) -> Result<(u16, u16), String> {
    let one = |p: &str| -> Result<u16, String> {
        match p.parse::<u32>() {
            Ok(0) if what == "host port" => {
                Err("host port 0: leave the host port out (`-p 80`, `-p 127.0.0.1::80`) for any free one"
                    .into())
            }
            Ok(n @ 1..=65535) if p.bytes().all(|b| b.is_ascii_digit()) => Ok(n as u16),
            Ok(_) => Err(format!("{what} {p} is out of range: ports are 1 to 65535")),
            Err(_) => Err(format!("{what} {p:?} is not a port number")),
        }
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => {
            let p = one(s)?;
            (p, p)
        }
    };
    if b < a {
        return Err(format!("{what} range {s} is empty: its end is below its start"));
    }
    Ok((a, b))
}

/// Parses one `-p` value into its bindings (several for a container port
/// range), or says what is wrong with it.
pub fn parse(spec: &str) -> Result<Vec<Binding>, String> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) if !p.is_empty() => (r, p.to_ascii_lowercase()),
        Some((r, _)) => (r, "tcp".to_string()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("protocol {proto:?} is not tcp, udp or sctp"));
    }
    // Docker's split: the last part is the container port, the one before
    // it the host port, everything before that the address (IPv6 too).
    let parts: Vec<&str> = rest.split(':').collect();
    let n = parts.len();
    let (ip, host, container) = match n {
        1 => (String::new(), "", parts[0]),
        2 => (String::new(), parts[0], parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let host_ip = if ip.is_empty() {
        String::new()
    } else {
        let bare = ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')).unwrap_or(&ip);
        bare.parse::<IpAddr>().map_err(|_| format!("{ip:?} is not an IP address"))?.to_string()
    };
    if container.is_empty() {
        return Err("no container port given".into());
    }
    let (start, end) = range("container port", container)?;
    let host_range = if host.is_empty() { None } else { Some(range("host port", host)?) };
    if let Some((hs, he)) = host_range {
        if start != end && he - hs != end - start {
            return Err(format!(
                "container ports {container} and host ports {host} are ranges of different lengths"
            ));
        }
    }
    Ok((start..=end)
        .enumerate()
        .map(|(i, port)| Binding {
            key: format!("{port}/{proto}"),
            host_ip: host_ip.clone(),
            host_port: match host_range {
                None => String::new(),
                Some((hs, he)) if start == end && hs != he => format!("{hs}-{he}"),
                Some((hs, _)) => (hs + i as u16).to_string(),
            },
        })
        .collect())
}

/// `PortBindings` and `ExposedPorts` of a create body for `bindings`.
pub fn body(bindings: &[Binding]) -> (Value, Value) {
    let mut map: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for b in bindings {
        let v = json!({ "HostIp": b.host_ip, "HostPort": b.host_port });
        let list = map.entry(b.key.as_str()).or_default();
        if !list.contains(&v) {
            list.push(v);
        }
    }
    let exposed: BTreeMap<&str, Value> = map.keys().map(|k| (*k, json!({}))).collect();
    (json!(map), json!(exposed))
}

/// The PORTS column of a sandbox's `Ports` (Docker's
/// `NetworkSettings.Ports`), as `docker ps` prints it:
/// `0.0.0.0:8080->80/tcp, [::1]:53->53/udp, 9/tcp`.
pub fn column(ports: Option<&Value>) -> String {
    let Some(map) = ports.and_then(Value::as_object) else { return String::new() };
    let mut keys: Vec<(&String, &Value)> = map.iter().collect();
    let order = |k: &str| {
        let (port, proto) = k.split_once('/').unwrap_or((k, ""));
        (port.parse::<u32>().unwrap_or(u32::MAX), proto.to_string())
    };
    keys.sort_by_key(|(k, _)| order(k));
    let mut out = Vec::new();
    for (key, bindings) in keys {
        let list = bindings.as_array().filter(|l| !l.is_empty());
        let Some(list) = list else {
            out.push(key.clone());
            continue;
        };
        for b in list {
            let ip = b["HostIp"].as_str().unwrap_or("");
            let port = b["HostPort"].as_str().unwrap_or("");
            let ip = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
            out.push(format!("{ip}:{port}->{key}"));
        }
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(key: &str, ip: &str, port: &str) -> Binding {
        Binding { key: key.into(), host_ip: ip.into(), host_port: port.into() }
    }

    #[test]
    fn docker_run_forms_parse() {
        assert_eq!(parse("80").unwrap(), [b("80/tcp", "", "")]);
        assert_eq!(parse("8080:80").unwrap(), [b("80/tcp", "", "8080")]);
        assert_eq!(parse("8080:80/UDP").unwrap(), [b("80/udp", "", "8080")]);
        assert_eq!(parse("127.0.0.1::80").unwrap(), [b("80/tcp", "127.0.0.1", "")]);
        assert_eq!(parse("127.0.0.1:8080:80/sctp").unwrap(), [b("80/sctp", "127.0.0.1", "8080")]);
        assert_eq!(parse("[::1]:8080:80").unwrap(), [b("80/tcp", "::1", "8080")]);
        assert_eq!(parse("::1::80").unwrap(), [b("80/tcp", "::1", "")]);
        assert_eq!(parse("8000-8010:80").unwrap(), [b("80/tcp", "", "8000-8010")]);
        assert_eq!(parse("8000-8001:80-81").unwrap(), [b("80/tcp", "", "8000"), b("81/tcp", "", "8001")]);
        assert_eq!(parse("80-81/udp").unwrap(), [b("80/udp", "", ""), b("81/udp", "", "")]);
        assert_eq!(parse("80/").unwrap(), [b("80/tcp", "", "")]);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, needle) in [
            ("80/icmp", "not tcp, udp or sctp"),
            ("0", "out of range"),
            ("70000", "out of range"),
            ("http", "not a port number"),
            ("0:80", "leave the host port out"),
            ("99999:80", "out of range"),
            ("1.2.3:80:80", "not an IP address"),
            ("localhost:80:80", "not an IP address"),
            ("9000-8000:80", "end is below its start"),
            ("8000-8001:80-82", "different lengths"),
            ("8080:", "no container port"),
            ("", "no container port"),
        ] {
            let e = parse(spec).unwrap_err();
            assert!(e.contains(needle), "{spec:?}: {e}");
        }
    }

    #[test]
    fn the_body_has_dockers_shape() {
        let mut all = parse("127.0.0.1:8080:80").unwrap();
        all.extend(parse("8081:80").unwrap());
        all.extend(parse("53/udp").unwrap());
        let (bindings, exposed) = body(&all);
        assert_eq!(
            bindings,
            json!({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}, {"HostIp": "", "HostPort": "8081"}],
                   "53/udp": [{"HostIp": "", "HostPort": ""}]})
        );
        assert_eq!(exposed, json!({"80/tcp": {}, "53/udp": {}}));
    }

    #[test]
    fn the_column_reads_like_docker_ps() {
        let ports = json!({
            "9/tcp": null,
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}],
        });
        assert_eq!(
            column(Some(&ports)),
            "9/tcp, 127.0.0.1:49153->53/udp, 0.0.0.0:8080->80/tcp, [::]:8080->80/tcp"
        );
        assert_eq!(column(None), "");
        assert_eq!(column(Some(&json!({}))), "");
    }
}
