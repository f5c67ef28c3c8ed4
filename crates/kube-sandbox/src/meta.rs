//! Object metadata: reading names and owners from JSON objects, minting uids, timestamps.

use rand::Rng;
use serde_json::{Value, json};

/// `metadata.name`, or "" when absent.
pub fn name(obj: &Value) -> &str {
    at(obj, "/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.namespace`, or "" when absent (cluster-scoped).
pub fn namespace(obj: &Value) -> &str {
    at(obj, "/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.uid`, or "" when absent.
pub fn uid(obj: &Value) -> &str {
    at(obj, "/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Value) -> bool {
    at(obj, "/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// The value at a JSON pointer, as [`Value::pointer`] finds it, but without allocating for each
/// token (`Value::pointer` unescapes every token into a new String). Every controller pass
/// reads a few fixed pointers of tens of thousands of objects, so this is a hot path.
pub fn at<'a>(obj: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.contains('~') {
        return obj.pointer(pointer);
    }
    if pointer.is_empty() {
        return Some(obj);
    }
    pointer
        .strip_prefix('/')?
        .split('/')
        .try_fold(obj, |target, token| match target {
            Value::Object(map) => map.get(token),
            Value::Array(list) => array_index(token).and_then(|i| list.get(i)),
            _ => None,
        })
}

/// An array index token as `Value::pointer` accepts it (no sign, no leading zero).
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

/// A string at a JSON pointer, or "".
pub fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    at(obj, pointer).and_then(Value::as_str).unwrap_or("")
}

/// The uid of the controlling owner (`controller: true`), if any.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    at(obj, "/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["controller"].as_bool() == Some(true))
        .and_then(|o| o["uid"].as_str())
}

/// Whether any owner reference of `obj` points at `owner_uid`.
pub fn is_owned_by(obj: &Value, owner_uid: &str) -> bool {
    at(obj, "/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|o| o["uid"].as_str() == Some(owner_uid)))
}

/// An ownerReference entry with `controller: true`, as controllers set them.
pub fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// A random RFC 4122 version-4 uid.
pub fn new_uid() -> String {
    let b: [u8; 16] = rand::rng().random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        (b[8] & 0x3) | 0x8,
        &hex[17..20],
        &hex[20..32]
    )
}

/// A random suffix of `n` characters from the alphabet Kubernetes uses for generated names.
pub fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The current time as Kubernetes writes it (`2026-11-26T00:00:00Z`).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Parses a Kubernetes timestamp into seconds since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// A short stable hash of a JSON value (pod-template-hash, controller-revision-hash).
pub fn short_hash(v: &Value) -> String {
    // FNV-1a: stable across runs and platforms, unlike std's randomised hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in v.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    let mut x = h;
    for _ in 0..10 {
        out.push(ALPHABET[(x % ALPHABET.len() as u32) as usize] as char);
        x /= ALPHABET.len() as u32;
        if x == 0 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_have_the_rfc4122_v4_shape() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(new_uid(), u);
    }

    #[test]
    fn at_finds_what_value_pointer_finds() {
        let v = json!({"a": {"b/c": 1, "d": [10, 20], "": 3}, "e~f": 4});
        for p in [
            "", "/", "/a", "/a/d", "/a/d/1", "/a/d/01", "/a/d/+1", "/a/d/9", "/a/b~1c", "/e~0f",
            "/a/x", "a", "/a/d/x", "/a/",
        ] {
            assert_eq!(at(&v, p), v.pointer(p), "{p}");
        }
    }

    #[test]
    fn timestamps_round_trip() {
        let t = now();
        assert!(t.ends_with('Z'));
        assert!(parse_time(&t).unwrap() > 1_700_000_000);
    }
}
