//! Kubernetes resource quantities (`1Gi`, `500M`, `1.5Ki`), as far as storage sizes need them.

use serde_json::Value;

/// Parses a storage quantity into bytes (rounded up); `None` when it is not a quantity.
pub fn parse_bytes(v: &Value) -> Option<u64> {
    let s = match v {
        Value::String(s) => s.trim(),
        Value::Number(n) => return n.as_f64().map(|f| f.ceil() as u64),
        _ => return None,
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "m" => 1e-3,
        _ => return None,
    };
    Some((n * mult).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(parse_bytes(&json!("1Gi")), Some(1 << 30));
        assert_eq!(parse_bytes(&json!("500M")), Some(500_000_000));
        assert_eq!(parse_bytes(&json!(42)), Some(42));
        assert_eq!(parse_bytes(&json!("lots")), None);
    }
}
