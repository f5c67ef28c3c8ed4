//! The stores file (`NKVM_STORES_FILE`, `--stores`): the named stores beside `local`.
//!
//! ```yaml
//! stores:
//! - name: offsite
//!   type: s3
//!   endpoint: https://s3.example
//!   region: eu-west-1
//!   bucket: nkvm
//!   prefix: prod/
//!   accessKeyIdFile: /etc/nkvm/s3/access-key-id       # optional
//!   secretAccessKeyFile: /etc/nkvm/s3/secret-access-key
//!   encryption: {ageRecipients: ["age1..."]}         # optional, on any entry
//! - name: nas
//!   type: local                                       # another directory
//!   path: /mnt/nas/nkvm
//! - name: nas
//!   type: sftp
//!   host: nas.lan
//!   port: 22                                       # the default
//!   user: backup
//!   privateKeyFile: /etc/nkvm/sftp/key
//!   knownHostsFile: /etc/nkvm/sftp/known_hosts
//!   path: /srv/nkvm
//! ```
//!
//! Credentials are never in the file: an S3 entry names files holding them, or takes them from
//! the standard AWS sources (environment, shared profile files, web identity); an SFTP entry
//! names its key file (and `privateKeyPassphraseFile` for an encrypted key).
//! `encryption` is read apart from the store's own fields, so every type of entry takes it:
//! it holds public keys only.

use crate::StoreError;
pub use crate::sftp::SftpConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The name of the always-present local directory store.
pub const LOCAL: &str = "local";

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoresFile {
    stores: Vec<StoreConfig>,
}

/// One entry of the stores file.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StoreConfig {
    /// An S3-compatible bucket.
    S3(S3Config),
    /// A directory (a mount of another disk or a NAS), like the built-in `local`.
    Local(LocalConfig),
    /// A directory on an SFTP server.
    Sftp(SftpConfig),
}

impl StoreConfig {
    /// The entry's name.
    pub fn name(&self) -> &str {
        match self {
            StoreConfig::S3(c) => &c.name,
            StoreConfig::Local(c) => &c.name,
            StoreConfig::Sftp(c) => &c.name,
        }
    }
}

/// One entry with the settings every type of store takes.
#[derive(Debug, Clone)]
pub struct StoreEntry {
    /// The store itself.
    pub store: StoreConfig,
    /// Client-side encryption of its archives, when set.
    pub encryption: Option<EncryptionConfig>,
}

/// `encryption:` of an entry: archives are age files for these recipients.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptionConfig {
    /// X25519 public keys (`age1...`), as `age-keygen` prints them.
    pub age_recipients: Vec<String>,
}

/// A `type: local` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalConfig {
    /// The store's name.
    pub name: String,
    /// The directory archives go under (absolute; created on the first backup).
    pub path: PathBuf,
}

/// An S3 entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Config {
    /// The store's name.
    pub name: String,
    /// Endpoint URL; AWS when absent.
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Bucket.
    pub bucket: String,
    /// Key prefix (`prod/`).
    #[serde(default)]
    pub prefix: String,
    /// File holding the access key id.
    pub access_key_id_file: Option<PathBuf>,
    /// File holding the secret access key.
    pub secret_access_key_file: Option<PathBuf>,
    /// File holding a session token.
    pub session_token_file: Option<PathBuf>,
    /// Server-side encryption with this KMS key.
    pub sse_kms_key_id: Option<String>,
    /// Part size in MiB (5 to 512; 8 by default).
    pub part_size_mib: Option<usize>,
    /// Whether the nkvm agent in a helper pod uploads archives itself (true by default; only
    /// with static credentials).
    pub direct_upload: Option<bool>,
}

/// Reads and checks the stores file.
pub fn load(path: &Path) -> Result<Vec<StoreEntry>, StoreError> {
    let error = |detail: String| StoreError::Config {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot be read: {e}")))?;
    parse_entries(&text).map_err(error)
}

/// Parses and checks the stores file's text; the error names the entry and what is wrong.
pub fn parse(text: &str) -> Result<Vec<StoreConfig>, String> {
    Ok(parse_entries(text)?.into_iter().map(|e| e.store).collect())
}

/// Parses and checks the stores file's text, with each entry's `encryption`.
pub fn parse_entries(text: &str) -> Result<Vec<StoreEntry>, String> {
    let mut value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let encryptions = take_encryptions(&mut value)?;
    let file: StoresFile = serde_yaml_ng::from_value(value).map_err(|e| e.to_string())?;
    check_entries(&file.stores)?;
    let entries: Vec<StoreEntry> = file
        .stores
        .into_iter()
        .zip(encryptions)
        .map(|(store, encryption)| StoreEntry { store, encryption })
        .collect();
    for entry in &entries {
        if let Some(e) = &entry.encryption {
            crate::AgeRecipients::parse(&e.age_recipients)
                .map_err(|why| format!("store {:?}: encryption: {why}", entry.store.name()))?;
        }
    }
    Ok(entries)
}

/// Takes each entry's `encryption` out of the parsed file, in entry order.
fn take_encryptions(
    value: &mut serde_yaml_ng::Value,
) -> Result<Vec<Option<EncryptionConfig>>, String> {
    let Some(entries) = value.get_mut("stores").and_then(|s| s.as_sequence_mut()) else {
        // Not a list: the typed parse says what is wrong.
        return Ok(Vec::new());
    };
    entries
        .iter_mut()
        .enumerate()
        .map(|(i, entry)| {
            let Some(map) = entry.as_mapping_mut() else {
                return Ok(None);
            };
            map.remove("encryption")
                .map(|e| {
                    serde_yaml_ng::from_value(e)
                        .map_err(|e| format!("entry {}: encryption: {e}", i + 1))
                })
                .transpose()
        })
        .collect()
}

/// Checks names and each entry's own fields.
fn check_entries(stores: &[StoreConfig]) -> Result<(), String> {
    let mut seen = vec![LOCAL.to_string()];
    for entry in stores {
        let name = entry.name();
        if !valid_name(name) {
            return Err(format!(
                "store name {name:?} must be 1 to 63 lower-case letters, digits and '-', starting with a letter"
            ));
        }
        if seen.iter().any(|s| s == name) {
            return Err(format!(
                "store name {name:?} is used twice (\"local\" is the built-in directory store)"
            ));
        }
        seen.push(name.to_string());
        match entry {
            StoreConfig::S3(c) => check_s3(c)?,
            StoreConfig::Local(c) if !c.path.is_absolute() => {
                return Err(format!(
                    "store {name:?}: path {:?} must be an absolute directory path",
                    c.path
                ));
            }
            StoreConfig::Local(_) => {}
            StoreConfig::Sftp(c) => c.check()?,
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn check_s3(c: &S3Config) -> Result<(), String> {
    let name = &c.name;
    if c.bucket.is_empty() {
        return Err(format!("store {name:?}: bucket must not be empty"));
    }
    if c.access_key_id_file.is_some() != c.secret_access_key_file.is_some() {
        return Err(format!(
            "store {name:?}: accessKeyIdFile and secretAccessKeyFile go together (or leave both out to use the AWS environment)"
        ));
    }
    if let Some(endpoint) = &c.endpoint
        && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
    {
        return Err(format!(
            "store {name:?}: endpoint {endpoint:?} must be an http:// or https:// URL"
        ));
    }
    if let Some(size) = c.part_size_mib
        && !(5..=512).contains(&size)
    {
        return Err(format!(
            "store {name:?}: partSizeMib {size} must be between 5 and 512"
        ));
    }
    let prefix_ok = c.prefix.is_empty()
        || (c.prefix.ends_with('/')
            && c.prefix
                .trim_end_matches('/')
                .split('/')
                .all(crate::layout::is_safe_segment));
    if !prefix_ok {
        return Err(format!(
            "store {name:?}: prefix {:?} must be empty or plain path segments ending in '/', like \"prod/\"",
            c.prefix
        ));
    }
    Ok(())
}

/// Reads a credential file: its content without surrounding whitespace. The error names the
/// file, never its content.
pub(crate) fn read_secret(store: &str, field: &str, path: &Path) -> Result<String, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|e| StoreError::Config {
        path: path.to_path_buf(),
        detail: format!("store {store:?}: {field} cannot be read: {e}"),
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(StoreError::Config {
            path: path.to_path_buf(),
            detail: format!("store {store:?}: {field} is empty"),
        });
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_entry_parses_with_its_defaults() {
        let stores = parse(
            "stores:\n- {name: offsite, type: s3, endpoint: 'https://s3.example', region: eu-west-1, bucket: nkvm, prefix: prod/}\n",
        )
        .expect("valid");
        let StoreConfig::S3(c) = &stores[0] else {
            panic!("an S3 entry: {stores:?}");
        };
        assert_eq!((c.name.as_str(), c.bucket.as_str()), ("offsite", "nkvm"));
        assert_eq!(c.prefix, "prod/");
        assert!(c.access_key_id_file.is_none());
    }

    #[test]
    fn any_entry_takes_encryption_with_its_recipients() {
        let key = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
        let yaml = format!(
            "stores:\n- {{name: offsite, type: s3, bucket: b, encryption: {{ageRecipients: [{key}]}}}}\n- {{name: nas, type: local, path: /srv/nkvm}}\n"
        );
        let entries = parse_entries(&yaml).expect("valid");
        let encryption = entries[0].encryption.as_ref().expect("encrypted");
        assert_eq!(encryption.age_recipients, [key]);
        let StoreConfig::Local(nas) = &entries[1].store else {
            panic!("a local entry: {entries:?}");
        };
        assert_eq!(nas.path, Path::new("/srv/nkvm"));
        assert!(entries[1].encryption.is_none());
    }

    #[test]
    fn bad_entries_are_refused_naming_what_is_wrong() {
        for (yaml, expected) in [
            (
                "stores:\n- {name: local, type: s3, bucket: b}\n",
                "used twice",
            ),
            (
                "stores:\n- {name: Off, type: s3, bucket: b}\n",
                "lower-case",
            ),
            (
                "stores:\n- {name: a, type: s3, bucket: b}\n- {name: a, type: s3, bucket: c}\n",
                "used twice",
            ),
            (
                "stores:\n- {name: a, type: ftp, bucket: b}\n",
                "unknown variant `ftp`",
            ),
            (
                "stores:\n- {name: a, type: s3, bucket: b, secretAccessKey: x}\n",
                "unknown field `secretAccessKey`",
            ),
            (
                "stores:\n- {name: a, type: s3, bucket: b, accessKeyIdFile: /k}\n",
                "go together",
            ),
            (
                "stores:\n- {name: a, type: s3, bucket: b, endpoint: s3.example}\n",
                "http:// or https://",
            ),
            (
                "stores:\n- {name: a, type: s3, bucket: b, prefix: ../x/}\n",
                "prefix",
            ),
            (
                "stores:\n- {name: a, type: s3, bucket: b, partSizeMib: 1}\n",
                "partSizeMib",
            ),
            (
                "stores:\n- {name: a, type: local, path: rel/dir}\n",
                "absolute",
            ),
            (
                "stores:\n- {name: a, type: s3, bucket: b, encryption: {ageRecipients: []}}\n",
                "at least one",
            ),
            (
                "stores:\n- {name: a, type: s3, bucket: b, encryption: {ageRecipients: [age1nope]}}\n",
                "\"age1nope\" is not an age X25519 public key",
            ),
            (
                "stores:\n- {name: a, type: s3, bucket: b, encryption: {passphrase: x}}\n",
                "unknown field `passphrase`",
            ),
        ] {
            let e = parse(yaml).expect_err(yaml);
            assert!(e.contains(expected), "{yaml}: {e}");
        }
    }
}
