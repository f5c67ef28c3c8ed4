//! Backup identities and settings shared by the store, the engine and the front-ends.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A backup's id: `<UTC yyyymmddThhmmssZ>-<8 hex>`. The time makes ids sort by start; the
/// random part keeps two backups of one claim started in the same second apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId(String);

impl BackupId {
    /// An id from a start time (`yyyymmddThhmmssZ`) and 32 random bits.
    pub fn new(started: &str, random: u32) -> Result<Self, String> {
        format!("{started}-{random:08x}").parse()
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `yyyymmddThhmmssZ` part.
    pub fn timestamp(&self) -> &str {
        &self.0[..16]
    }
}

impl FromStr for BackupId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        let ok = b.len() == 25
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..15].iter().all(u8::is_ascii_digit)
            && b[15] == b'Z'
            && b[16] == b'-'
            && b[17..]
                .iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
        if ok {
            Ok(BackupId(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not a backup id (expected yyyymmddThhmmssZ-xxxxxxxx, as `nkvm backups` lists them)"
            ))
        }
    }
}

impl TryFrom<String> for BackupId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<BackupId> for String {
    fn from(id: BackupId) -> String {
        id.0
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd with its frame checksum (the default).
    #[default]
    Zstd,
    /// gzip, for `tar xzf` users.
    Gzip,
    /// A plain tar.
    None,
}

impl Compression {
    /// The archive's file extension after `.tar`.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => ".tar.zst",
            Compression::Gzip => ".tar.gz",
            Compression::None => ".tar",
        }
    }

    /// The name used in flags, manifests and history.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "zstd" => Ok(Compression::Zstd),
            "gzip" => Ok(Compression::Gzip),
            "none" => Ok(Compression::None),
            other => Err(format!(
                "unknown compression {other:?}: use zstd, gzip or none"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_refuse_other_shapes() {
        let id = BackupId::new("20261126T010203Z", 0xdead_beef).unwrap();
        assert_eq!(id.as_str(), "20261126T010203Z-deadbeef");
        assert_eq!(id.timestamp(), "20261126T010203Z");
        assert_eq!(id.as_str().parse::<BackupId>().unwrap(), id);
        for bad in [
            "",
            "20261126T010203Z",
            "20261126T010203Z-DEADBEEF",
            "../../etc/passwd-000000",
        ] {
            assert!(bad.parse::<BackupId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn compression_names_and_extensions() {
        assert_eq!(
            "gzip".parse::<Compression>().unwrap().extension(),
            ".tar.gz"
        );
        assert!(
            "lz4"
                .parse::<Compression>()
                .unwrap_err()
                .contains("use zstd, gzip or none")
        );
    }
}
