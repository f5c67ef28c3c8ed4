//! apimachinery messages whose JSON is not an object: `Time`, `MicroTime`, `Duration`,
//! `Quantity`, `IntOrString`, `RawExtension` and `FieldsV1`, converted as their Go
//! `MarshalJSON` methods do.

use serde_json::Value;

use super::message::{int, last_fields, len, short, text};
use super::schema::Schema;
use super::{DecodeError, MAGIC};

/// Go's zero `time.Time` (0001-01-01T00:00:00Z) in Unix seconds; it marshals to `null`.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// The JSON of a well-known message, or `None` when `name` is an ordinary message.
pub(super) fn decode(
    schema: &Schema,
    name: &str,
    bytes: &[u8],
    depth: usize,
) -> Result<Option<Value>, DecodeError> {
    let value = match name {
        "meta.v1.Time" => time(bytes, name, Precision::Seconds)?,
        "meta.v1.MicroTime" => time(bytes, name, Precision::Micros)?,
        "meta.v1.Duration" => {
            let [_, nanos] = last_fields(bytes, name)?;
            Value::String(go_duration(int(nanos, 1, name)?))
        }
        "resource.Quantity" | "resource.QuantityValue" => {
            let [_, string] = last_fields(bytes, name)?;
            let string = text(string, 1, name)?;
            // The zero Quantity marshals as "0".
            Value::String(if string.is_empty() {
                "0".to_owned()
            } else {
                string
            })
        }
        "intstr.IntOrString" => int_or_string(bytes, name)?,
        "runtime.RawExtension" => raw_extension(schema, bytes, name, depth)?,
        "meta.v1.FieldsV1" => {
            let [_, raw] = last_fields(bytes, name)?;
            raw_json(len(raw, 1, name)?, name)?
        }
        _ => return Ok(None),
    };
    Ok(Some(value))
}

#[derive(Clone, Copy)]
enum Precision {
    /// `metav1.Time`: RFC 3339 in whole seconds.
    Seconds,
    /// `metav1.MicroTime`: RFC 3339 with exactly six fractional digits.
    Micros,
}

/// `{1: seconds, 2: nanos}` since the Unix epoch as RFC 3339 UTC; Go's zero time is `null`.
fn time(bytes: &[u8], name: &str, precision: Precision) -> Result<Value, DecodeError> {
    let [_, seconds, nanos] = last_fields(bytes, name)?;
    let seconds = int(seconds, 1, name)?;
    let nanos = int(nanos, 2, name)? as i32;
    // Go writes nothing for a zero time, and an empty message unmarshals to the zero time.
    if bytes.is_empty() || (seconds == GO_ZERO_TIME_SECONDS && nanos == 0) {
        return Ok(Value::Null);
    }
    let out_of_range = |e: jiff::Error| {
        DecodeError::new(format!(
            "{} {seconds}s {nanos}ns is out of range: {e}",
            short(name)
        ))
    };
    let timestamp = jiff::Timestamp::new(seconds, nanos).map_err(out_of_range)?;
    let civil = timestamp.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    let whole = civil.strftime("%Y-%m-%dT%H:%M:%S");
    Ok(Value::String(match precision {
        Precision::Seconds => format!("{whole}Z"),
        Precision::Micros => format!("{whole}.{:06}Z", civil.subsec_nanosecond() / 1000),
    }))
}

/// `{1: type, 2: intVal, 3: strVal}`: a number when type is 0 (Int), a string when 1.
fn int_or_string(bytes: &[u8], name: &str) -> Result<Value, DecodeError> {
    let [_, kind, int_val, str_val] = last_fields(bytes, name)?;
    Ok(if int(kind, 1, name)? == 1 {
        Value::String(text(str_val, 3, name)?)
    } else {
        Value::from(int(int_val, 2, name)? as i32)
    })
}

/// `{1: raw}`: the embedded object, JSON as clients send it, or nested Kubernetes protobuf.
fn raw_extension(
    schema: &Schema,
    bytes: &[u8],
    name: &str,
    depth: usize,
) -> Result<Value, DecodeError> {
    let [_, raw] = last_fields(bytes, name)?;
    let raw = len(raw, 1, name)?;
    if raw.starts_with(MAGIC) {
        return super::decode_envelope(schema, raw, depth + 1);
    }
    raw_json(raw, name)
}

/// Parses raw JSON bytes; empty is `null`, as Go marshals an empty RawExtension.
fn raw_json(raw: &[u8], name: &str) -> Result<Value, DecodeError> {
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(raw)
        .map_err(|e| DecodeError::new(format!("{} raw bytes are not JSON: {e}", short(name))))
}

/// Formats nanoseconds as Go's `time.Duration.String` does: `1h2m3.5s`, `1.5ms`, `0s`.
pub(super) fn go_duration(nanos: i64) -> String {
    const SECOND: u64 = 1_000_000_000;
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let body = if u == 0 {
        "0s".to_owned()
    } else if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", decimal(u, 3))
    } else if u < SECOND {
        format!("{}ms", decimal(u, 6))
    } else {
        let (whole, fraction) = (u / SECOND, u % SECOND);
        let seconds = format!("{}{}", whole % 60, fraction_digits(fraction, 9));
        let (minutes, hours) = (whole / 60 % 60, whole / 3600);
        if hours > 0 {
            format!("{hours}h{minutes}m{seconds}s")
        } else if minutes > 0 {
            format!("{minutes}m{seconds}s")
        } else {
            format!("{seconds}s")
        }
    };
    format!("{sign}{body}")
}

/// `value / 10^scale` with the fraction's trailing zeros trimmed: `decimal(1500, 3)` is `1.5`.
fn decimal(value: u64, scale: u32) -> String {
    let unit = 10u64.pow(scale);
    format!("{}{}", value / unit, fraction_digits(value % unit, scale))
}

/// `.5` for 500 at scale 3; empty for 0.
fn fraction_digits(fraction: u64, scale: u32) -> String {
    if fraction == 0 {
        return String::new();
    }
    let digits = format!("{fraction:0width$}", width = scale as usize);
    format!(".{}", digits.trim_end_matches('0'))
}
