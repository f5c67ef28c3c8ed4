//! Storage sizes as Kubernetes writes them (`resource.Quantity`: `10Gi`, `500M`, `1.5Gi`,
//! `1e9`): parsed to bytes to compare a restore target with the data it must hold, and
//! printed back in binary units for PVCs nkvm creates.
//!
//! Written here rather than taken from a crate: the few quantity crates on crates.io are
//! thinly maintained, and bytes are all nkvm needs (no CPU millis, no canonical form).

/// Why a size could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a storage size; write it as Kubernetes does, e.g. 10Gi, 500Mi or 2G")]
pub struct QuantityError {
    /// What was given.
    pub input: String,
}

const SUFFIXES: &[(&str, f64)] = &[
    ("Ki", 1024.0),
    ("Mi", 1_048_576.0),
    ("Gi", 1_073_741_824.0),
    ("Ti", 1_099_511_627_776.0),
    ("Pi", 1_125_899_906_842_624.0),
    ("Ei", 1_152_921_504_606_846_976.0),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
    ("m", 1e-3),
];

/// Bytes in a quantity such as `10Gi`, rounded up to a whole byte.
pub fn parse_bytes(input: &str) -> Result<u64, QuantityError> {
    let err = || QuantityError {
        input: input.to_string(),
    };
    let s = input.trim();
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, f)| s.strip_suffix(suffix).map(|n| (n, *f)))
        .unwrap_or((s, 1.0));
    let well_formed = !number.is_empty()
        && number
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    let value: f64 = if well_formed {
        number.parse().map_err(|_| err())?
    } else {
        return Err(err());
    };
    let bytes = (value * factor).ceil();
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

/// A size in the largest binary unit that holds it whole, rounded up to whole MiB for
/// anything over 1 MiB (`1536Mi`, `2Gi`): what nkvm writes into PVCs it creates.
pub fn format_binary(bytes: u64) -> String {
    const MI: u64 = 1 << 20;
    if bytes <= MI {
        return "1Mi".into();
    }
    let mib = bytes.div_ceil(MI);
    for (suffix, per) in [("Ti", 1u64 << 20), ("Gi", 1 << 10)] {
        if mib.is_multiple_of(per) {
            return format!("{}{suffix}", mib / per);
        }
    }
    format!("{mib}Mi")
}

/// Bytes for people to read: `512 B`, `1.5 MiB` (binary units, one decimal).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl crate::UserError for QuantityError {
    fn kind(&self) -> crate::FailureKind {
        crate::FailureKind::InvalidInput
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_decimal_fractional_and_exponent_forms_parse() {
        assert_eq!(parse_bytes("10Gi"), Ok(10 << 30));
        assert_eq!(parse_bytes("500M"), Ok(500_000_000));
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_bytes("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("123"), Ok(123));
        assert_eq!(parse_bytes("1500m"), Ok(2), "milli-bytes round up");
    }

    #[test]
    fn nonsense_is_refused_with_the_input_named() {
        for bad in ["", "Gi", "ten", "10 Gi", "-1Gi", "10GB", "1e400"] {
            let e = parse_bytes(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn formatting_rounds_up_to_whole_mebibytes() {
        assert_eq!(format_binary(2 << 30), "2Gi");
        assert_eq!(format_binary((3 << 29) + 1), "1537Mi");
        assert_eq!(format_binary(1), "1Mi");
        assert_eq!(format_binary(5 << 40), "5Ti");
        assert!(parse_bytes(&format_binary(123_456_789)).unwrap() >= 123_456_789);
    }
}
