//! Checks of what plugins answer: addresses, prefixes, MACs; and short
//! quotes of bad answers.

use std::net::IpAddr;

/// The first bytes of `body` as text, for an error message.
pub(crate) fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 120;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let text = text.trim();
    if body.len() > MAX {
        format!("{text:?}… ({} bytes)", body.len())
    } else {
        format!("{text:?}")
    }
}

/// Whether `s` is `address/prefix-length` (`10.0.0.2/24`, `fd00::1/64`).
pub(crate) fn is_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else { return false };
    let Ok(ip) = ip.parse::<IpAddr>() else { return false };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) && len.parse::<u8>().is_ok_and(|l| l <= max)
}

/// Whether `s` is a bare IP address.
pub(crate) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// Whether `s` is a MAC address as Go's `net.ParseMAC` reads one:
/// 6, 8 or 20 octets as `aa:bb:…`, `aa-bb-…` or `aabb.ccdd.…`.
pub(crate) fn is_mac(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    let octets = |n: usize| matches!(n, 6 | 8 | 20);
    if s.contains(':') || s.contains('-') {
        let sep = if s.contains(':') { ':' } else { '-' };
        let parts: Vec<&str> = s.split(sep).collect();
        octets(parts.len()) && parts.iter().all(|p| hex(p, 2))
    } else if s.contains('.') {
        let parts: Vec<&str> = s.split('.').collect();
        octets(parts.len() * 2) && parts.iter().all(|p| hex(p, 4))
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_addresses_and_macs() {
        for ok in ["10.0.0.2/24", "0.0.0.0/0", "fd00::1/64", "::/0", "10.0.0.0/32"] {
            assert!(is_cidr(ok), "{ok}");
        }
        for bad in ["10.0.0.2", "10.0.0.2/33", "fd00::1/129", "x/24", "10.0.0.2/", "10.0.0.2/+4", ""] {
            assert!(!is_cidr(bad), "{bad}");
        }
        assert!(is_ip("10.0.0.1") && is_ip("::1") && !is_ip("10.0.0.1/24"));
        for ok in ["aa:bb:cc:dd:ee:ff", "AA-BB-CC-DD-EE-FF", "aabb.ccdd.eeff", "00:00:00:00:00:00:00:01"] {
            assert!(is_mac(ok), "{ok}");
        }
        for bad in ["aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:gg", "aabbccddeeff", "qgEAAAAA", ""] {
            assert!(!is_mac(bad), "{bad}");
        }
    }

    #[test]
    fn excerpts_are_short_and_quoted() {
        assert_eq!(excerpt(b" <html>\n"), "\"<html>\"");
        let long = vec![b'x'; 1000];
        let e = excerpt(&long);
        assert!(e.len() < 160 && e.ends_with("(1000 bytes)"), "{e}");
    }
}
