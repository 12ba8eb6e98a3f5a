//! Sizes as people write them (`512k`, `10M`, `1.5g`), parsed once for
//! every driver option and mount flag that takes one.

/// Parses a size the way Docker does (`units.RAMInBytes`): a number,
/// optionally with a fraction, then an optional binary unit `k`, `m`, `g`,
/// `t` or `p` (any case, optionally followed by `i` and/or `b`): `512k`,
/// `10M`, `1g`, `1.5GiB`, `4096`, `100b`. The error says what was wrong.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let bad = || {
        format!("invalid size {text:?}: use a number of bytes with an optional unit, like 512k, 10M or 1g")
    };
    if number.is_empty()
        || number.starts_with('.')
        || number.ends_with('.')
        || number.matches('.').count() > 1
    {
        return Err(bad());
    }
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let too_big = || format!("invalid size {text:?}: too large");
    let whole: u64 = whole.parse().map_err(|_| too_big())?;
    let mut bytes = whole.checked_shl(shift).filter(|b| b >> shift == whole).ok_or_else(too_big)?;
    if !frac.is_empty() {
        // The fraction of one unit, in whole bytes (rounded down).
        let digits = frac.len().min(18);
        let num: u64 = frac[..digits].parse().map_err(|_| bad())?;
        let den = 10u64.pow(digits as u32);
        let part = (u128::from(num) << shift) / u128::from(den);
        bytes = bytes.checked_add(part as u64).ok_or_else(too_big)?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_docker() {
        for (text, bytes) in [
            ("4096", 4096),
            ("0", 0),
            ("100b", 100),
            ("512k", 512 << 10),
            ("512K", 512 << 10),
            ("10M", 10 << 20),
            ("10m", 10 << 20),
            ("10MB", 10 << 20),
            ("10MiB", 10 << 20),
            ("10 mb", 10 << 20),
            ("1g", 1 << 30),
            ("1.5g", 3 << 29),
            ("2T", 2 << 40),
            ("1p", 1 << 50),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in ["", "m", "-1", "1.", ".5", "1.2.3", "10x", "10 mbb", "1e3", "ten", "1  m"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("invalid size") && e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        assert!(parse_size("99999999999999999999").unwrap_err().contains("too large"));
        assert!(parse_size("16777216p").unwrap_err().contains("too large"));
    }
}
