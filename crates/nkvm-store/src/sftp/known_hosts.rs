//! Checking a server's host key against an OpenSSH `known_hosts` file, before anything else
//! is sent: the entries for `host` (or `[host]:port` when the port is not 22), plain, with
//! `*`/`?` wildcards and `!` negations, or hashed (`|1|salt|hmac`, as `ssh-keygen -H` writes
//! them). `@revoked` entries refuse a key; `@cert-authority` entries are not used (the store
//! accepts plain host keys only).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use russh::keys::{HashAlg, PublicKey};
use std::path::Path;

/// What the file says about the key a server presented.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// An entry for the host holds this key.
    Known,
    /// No entry for the host holds a key of this type.
    Unknown,
    /// An entry for the host holds another key of the same type (at this 1-based line).
    Changed(usize),
    /// The key is marked `@revoked` (at this 1-based line).
    Revoked(usize),
}

/// The name the file records a server under: `host`, or `[host]:port` off port 22.
pub(crate) fn host_entry(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The key's fingerprint as `ssh-keygen -lf` prints it: `SHA256:` and unpadded base64.
pub(crate) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The key types the file records for the server, in file order (to offer them first).
pub(crate) fn known_types(text: &str, host: &str, port: u16) -> Vec<String> {
    let name = host_entry(host, port);
    let mut types: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(entry) = Entry::parse(line)
            && entry.marker.is_none()
            && matches_host(entry.hosts, &name)
            && !types.iter().any(|t| t == entry.key_type)
        {
            types.push(entry.key_type.to_string());
        }
    }
    types
}

/// Checks `key` against the file's text for `host` and `port`.
pub(crate) fn check(text: &str, host: &str, port: u16, key: &PublicKey) -> Verdict {
    let name = host_entry(host, port);
    let offered = key.to_bytes().unwrap_or_default();
    let offered_type = key.algorithm().to_string();
    let mut verdict = Verdict::Unknown;
    for (idx, line) in text.lines().enumerate() {
        let Some(entry) = Entry::parse(line) else {
            continue;
        };
        if !matches_host(entry.hosts, &name) {
            continue;
        }
        let same_key = STANDARD
            .decode(entry.key)
            .is_ok_and(|blob| !offered.is_empty() && blob == offered);
        match entry.marker {
            Some("@revoked") if same_key => return Verdict::Revoked(idx + 1),
            Some(_) => {}
            None if same_key => verdict = Verdict::Known,
            None if entry.key_type == offered_type && verdict == Verdict::Unknown => {
                verdict = Verdict::Changed(idx + 1);
            }
            None => {}
        }
    }
    verdict
}

/// Reads the file, naming it in the error.
pub(crate) fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("knownHostsFile {} cannot be read: {e}", path.display()))
}

/// One line of the file: `[@marker] hosts type base64-key [comment]`.
struct Entry<'a> {
    marker: Option<&'a str>,
    hosts: &'a str,
    key_type: &'a str,
    key: &'a str,
}

impl<'a> Entry<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split_whitespace();
        let first = fields.next()?;
        let (marker, hosts) = if first.starts_with('@') {
            (Some(first), fields.next()?)
        } else {
            (None, first)
        };
        Some(Entry {
            marker,
            hosts,
            key_type: fields.next()?,
            key: fields.next()?,
        })
    }
}

/// Whether a comma-separated pattern list names `name`: some pattern matches and no negated
/// one does.
fn matches_host(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard(negated, name) {
                return false;
            }
        } else if let Some(hashed) = pattern.strip_prefix("|1|") {
            matched |= hashed_matches(hashed, name);
        } else {
            matched |= wildcard(pattern, name);
        }
    }
    matched
}

/// `salt|hash` (both base64): whether HMAC-SHA1(salt, name) is the hash.
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// Glob match with `*` (any run) and `?` (one character), case-insensitive like OpenSSH's.
fn wildcard(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let n: Vec<char> = name.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two ed25519 host keys generated by ssh-keygen for these tests.
    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGT33O9WJAE9HAZfk+svj4LO1E93bkjWq9cFBmbVtmlr";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM5SQ5fAmsOcvjw+nt8g5vOeGkL3N7u8ID8juVL6CBZj";

    fn key(line: &str) -> PublicKey {
        PublicKey::from_openssh(line).expect("a public key")
    }

    #[test]
    fn a_plain_entry_on_a_non_default_port_is_found_by_bracketed_name() {
        let text = format!("# comment\n\n[nas.lan]:2222 {KEY_A}\nnas.lan {KEY_B}\n");
        assert_eq!(check(&text, "nas.lan", 2222, &key(KEY_A)), Verdict::Known);
        assert_eq!(check(&text, "nas.lan", 22, &key(KEY_B)), Verdict::Known);
        assert_eq!(
            check(&text, "nas.lan", 22, &key(KEY_A)),
            Verdict::Changed(4)
        );
        assert_eq!(check(&text, "other", 22, &key(KEY_A)), Verdict::Unknown);
        assert_eq!(known_types(&text, "nas.lan", 2222), ["ssh-ed25519"]);
    }

    #[test]
    fn wildcards_negations_markers_and_hashes_follow_openssh() {
        let text = format!("*.lan,!bad.lan {KEY_A}\n@revoked * {KEY_B}\n");
        assert_eq!(check(&text, "nas.lan", 22, &key(KEY_A)), Verdict::Known);
        assert_eq!(check(&text, "bad.lan", 22, &key(KEY_A)), Verdict::Unknown);
        assert_eq!(
            check(&text, "nas.lan", 22, &key(KEY_B)),
            Verdict::Revoked(2)
        );
        // `ssh-keygen -H` of `[127.0.0.1]:2222`, salt and HMAC-SHA1 computed here.
        let salt = [7u8; 20];
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hashed = format!(
            "|1|{}|{} {KEY_A}\n",
            STANDARD.encode(salt),
            STANDARD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(
            check(&hashed, "127.0.0.1", 2222, &key(KEY_A)),
            Verdict::Known
        );
        assert_eq!(
            check(&hashed, "127.0.0.1", 22, &key(KEY_A)),
            Verdict::Unknown
        );
    }

    #[test]
    fn the_fingerprint_is_printed_like_ssh_keygen() {
        // `ssh-keygen -lf` of KEY_A.
        assert_eq!(
            fingerprint(&key(KEY_A)),
            "SHA256:yqQxMgoVhXfJ0A6fzOrJsk4jThkdjYoiwqHRob6t+JE"
        );
    }
}
