//! The stores file's SFTP entry: where the server is, who to log in as, and the files that
//! hold the client key and vouch for the server's host key.

use super::SftpSettings;
use crate::StoreError;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// An SFTP entry of the stores file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SftpConfig {
    /// The store's name.
    pub name: String,
    /// The server's host name or address.
    pub host: String,
    /// The server's port (22 by default).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// The client's private key (OpenSSH format).
    pub private_key_file: PathBuf,
    /// A file holding the private key's passphrase, if it is encrypted.
    pub private_key_passphrase_file: Option<PathBuf>,
    /// The OpenSSH `known_hosts` file holding the server's host key.
    pub known_hosts_file: PathBuf,
    /// The absolute directory on the server archives go under.
    pub path: String,
}

fn default_port() -> u16 {
    22
}

impl SftpConfig {
    /// Checks the entry's fields; the error names the entry and what is wrong.
    pub(crate) fn check(&self) -> Result<(), String> {
        let name = &self.name;
        if self.host.is_empty() || self.host.contains(['/', ' ', '@']) {
            return Err(format!(
                "store {name:?}: host {:?} must be a host name or address (the user goes in `user`)",
                self.host
            ));
        }
        if self.port == 0 {
            return Err(format!("store {name:?}: port must be between 1 and 65535"));
        }
        if self.user.is_empty() {
            return Err(format!("store {name:?}: user must not be empty"));
        }
        let segments_ok = self.path.split('/').skip(1).all(|s| s != "." && s != "..");
        if !self.path.starts_with('/') || !segments_ok {
            return Err(format!(
                "store {name:?}: path {:?} must be an absolute directory on the server without '.' or '..', like \"/srv/nkvm\"",
                self.path
            ));
        }
        for (field, path) in [
            ("privateKeyFile", &self.private_key_file),
            ("knownHostsFile", &self.known_hosts_file),
        ] {
            if path.as_os_str().is_empty() {
                return Err(format!("store {name:?}: {field} must not be empty"));
            }
        }
        Ok(())
    }

    /// The store's settings, reading the key (and its passphrase) from their files.
    pub fn settings(&self) -> Result<SftpSettings, StoreError> {
        let passphrase = match &self.private_key_passphrase_file {
            Some(p) => Some(crate::config::read_secret(
                &self.name,
                "privateKeyPassphraseFile",
                p,
            )?),
            None => None,
        };
        let key = super::load_key(&self.name, &self.private_key_file, passphrase.as_deref())?;
        let path = match self.path.trim_end_matches('/') {
            "" => "/".to_string(),
            trimmed => trimmed.to_string(),
        };
        Ok(SftpSettings {
            name: self.name.clone(),
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            key: Arc::new(key),
            key_file: self.private_key_file.clone(),
            known_hosts: self.known_hosts_file.clone(),
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{StoreConfig, parse};

    #[test]
    fn an_sftp_entry_parses_with_port_22_by_default() {
        let stores = parse(
            "stores:\n- {name: nas, type: sftp, host: nas.lan, user: backup, privateKeyFile: /k, knownHostsFile: /kh, path: /srv/nkvm}\n",
        )
        .expect("valid");
        let StoreConfig::Sftp(c) = &stores[0] else {
            panic!("an SFTP entry: {stores:?}");
        };
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str()),
            ("nas.lan", 22, "backup")
        );
        assert_eq!(c.path, "/srv/nkvm");
    }

    #[test]
    fn bad_sftp_entries_are_refused_naming_what_is_wrong() {
        let base = "name: a, type: sftp, user: u, privateKeyFile: /k, knownHostsFile: /kh";
        for (fields, expected) in [
            ("host: h, path: srv", "absolute"),
            ("host: h, path: /srv/../etc", "absolute"),
            ("host: u@h, path: /srv", "host"),
            ("host: h, path: /srv, port: 0", "port"),
            (
                "host: h, path: /srv, password: x",
                "unknown field `password`",
            ),
            ("path: /srv", "missing field `host`"),
        ] {
            let yaml = format!("stores:\n- {{{base}, {fields}}}\n");
            let e = parse(&yaml).expect_err(&yaml);
            assert!(e.contains(expected), "{yaml}: {e}");
        }
    }

    #[test]
    fn an_unreadable_key_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "not a key").unwrap();
        let yaml = format!(
            "stores:\n- {{name: nas, type: sftp, host: h, user: u, privateKeyFile: {}, knownHostsFile: /kh, path: /srv}}\n",
            key.display()
        );
        let StoreConfig::Sftp(c) = &parse(&yaml).unwrap()[0] else {
            panic!("an SFTP entry");
        };
        let e = c.settings().expect_err("refused").to_string();
        assert!(e.contains("privateKeyFile") && e.contains("/key"), "{e}");
        assert!(
            !e.contains("not a key"),
            "the key's content is never shown: {e}"
        );
    }
}
