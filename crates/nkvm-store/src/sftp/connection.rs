//! One SSH connection with its SFTP session: the host key checked against the store's
//! `known_hosts` file during the key exchange (before authentication, before any data),
//! then public-key authentication, then the `sftp` subsystem.

use super::SftpSettings;
use super::known_hosts::{self, Verdict};
use crate::StoreError;
use russh::client::{self, Handle};
use russh::keys::{Algorithm, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::StatusCode;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long connecting, the key exchange and authentication may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one SFTP request may wait for its answer.
const REQUEST_TIMEOUT_SECS: u64 = 60;

/// An open, authenticated connection and its SFTP session.
pub(crate) struct Connection {
    ssh: Handle<HostKeyCheck>,
    /// The SFTP session on it.
    pub(crate) sftp: SftpSession,
}

/// Whether an SFTP error says the file is not there.
pub(crate) fn is_missing(e: &russh_sftp::client::error::Error) -> bool {
    matches!(e, russh_sftp::client::error::Error::Status(s) if s.status_code == StatusCode::NoSuchFile)
}

impl Connection {
    /// Connects, checks the host key, authenticates and starts SFTP.
    pub(crate) async fn open(settings: &SftpSettings) -> Result<Self, StoreError> {
        let remote = |action: &str, detail: String| StoreError::Remote {
            store: settings.name.clone(),
            action: action.to_string(),
            detail,
        };
        let known =
            known_hosts::read(&settings.known_hosts).map_err(|detail| StoreError::Config {
                path: settings.known_hosts.clone(),
                detail: format!("store {:?}: {detail}", settings.name),
            })?;
        let refusal = Arc::new(Mutex::new(None));
        let handler = HostKeyCheck {
            settings: settings.clone(),
            known: known.clone(),
            refusal: refusal.clone(),
        };
        let config = Arc::new(client_config(&known, settings));
        let address = (settings.host.as_str(), settings.port);
        let connecting = client::connect(config, address, handler);
        let at = format!("connecting to {}:{}", settings.host, settings.port);
        let mut ssh = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => return Err(remote(&at, format!("timed out after {CONNECT_TIMEOUT:?}"))),
            Ok(Err(e)) => {
                let refused = refusal.lock().ok().and_then(|mut r| r.take());
                return Err(refused.unwrap_or_else(|| remote(&at, e.to_string())));
            }
            Ok(Ok(ssh)) => ssh,
        };
        authenticate(&mut ssh, settings)
            .await
            .map_err(|detail| remote("authenticating", detail))?;
        let sftp = start_sftp(&ssh)
            .await
            .map_err(|detail| remote("starting the SFTP subsystem", detail))?;
        Ok(Connection { ssh, sftp })
    }

    /// Ends the session and the connection; errors are of no use by then.
    pub(crate) async fn close(&self) {
        let closing = async {
            let _ = self.sftp.close().await;
            let _ = self
                .ssh
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        };
        // A server that is gone does not answer; the connection is dropped either way.
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }
}

/// The client's settings: keepalives so a dead server is noticed, and the host key types
/// `known_hosts` records for the server offered first (as OpenSSH's client does), so a
/// server with several host keys presents the one the file vouches for.
fn client_config(known: &str, settings: &SftpSettings) -> client::Config {
    let types = known_hosts::known_types(known, &settings.host, settings.port);
    let mut preferred = russh::Preferred::default();
    let mut keys: Vec<Algorithm> = preferred.key.to_vec();
    keys.sort_by_key(|a| {
        // known_hosts names every RSA signature variant by its key type.
        let name = if a.clone().is_rsa() {
            "ssh-rsa".to_string()
        } else {
            a.to_string()
        };
        types.iter().position(|t| *t == name).unwrap_or(usize::MAX)
    });
    preferred.key = Cow::Owned(keys);
    client::Config {
        inactivity_timeout: Some(Duration::from_secs(120)),
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        preferred,
        ..client::Config::default()
    }
}

/// Public-key authentication with the store's key; the error says what to check, never
/// anything about the key itself.
async fn authenticate(ssh: &mut Handle<HostKeyCheck>, s: &SftpSettings) -> Result<(), String> {
    let hash = if s.key.algorithm().is_rsa() {
        ssh.best_supported_rsa_hash()
            .await
            .map_err(|e| e.to_string())?
            .flatten()
    } else {
        None
    };
    let key = PrivateKeyWithHashAlg::new(s.key.clone(), hash);
    let result = ssh
        .authenticate_publickey(s.user.as_str(), key)
        .await
        .map_err(|e| e.to_string())?;
    if result.success() {
        Ok(())
    } else {
        Err(format!(
            "the server refused the key in {} for user {:?}: check the user and that the key's public half is in that user's authorized_keys on the server (credentials)",
            s.key_file.display(),
            s.user
        ))
    }
}

/// Opens a session channel with the `sftp` subsystem.
async fn start_sftp(ssh: &Handle<HostKeyCheck>) -> Result<SftpSession, String> {
    let channel = ssh
        .channel_open_session()
        .await
        .map_err(|e| e.to_string())?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| e.to_string())?;
    let config = russh_sftp::client::Config {
        request_timeout_secs: REQUEST_TIMEOUT_SECS,
        ..russh_sftp::client::Config::default()
    };
    SftpSession::new_with_config(channel.into_stream(), config)
        .await
        .map_err(|e| format!("{e} (is SFTP enabled on the server?)"))
}

/// Accepts the server's host key only if `known_hosts` vouches for it; otherwise records
/// why, for the error the connection then fails with.
struct HostKeyCheck {
    settings: SftpSettings,
    known: String,
    refusal: Arc<Mutex<Option<StoreError>>>,
}

impl HostKeyCheck {
    fn refuse(&self, fingerprint: String, problem: String) {
        let s = &self.settings;
        let error = StoreError::HostKeyRejected {
            store: s.name.clone(),
            host: known_hosts::host_entry(&s.host, s.port),
            fingerprint,
            problem,
            known_hosts: s.known_hosts.clone(),
        };
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(error);
        }
    }
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(cert) => {
                let fingerprint = known_hosts::fingerprint(&russh::keys::PublicKey::new(
                    cert.public_key().clone(),
                    "",
                ));
                self.refuse(
                    fingerprint,
                    "is a certificate, which the store does not accept".into(),
                );
                return Ok(false);
            }
        };
        let (s, fingerprint) = (&self.settings, known_hosts::fingerprint(key));
        let problem = match known_hosts::check(&self.known, &s.host, s.port, key) {
            Verdict::Known => return Ok(true),
            Verdict::Unknown => format!(
                "is not in the knownHostsFile (no {} entry for this host)",
                key.algorithm()
            ),
            Verdict::Changed(line) => format!(
                "does not match line {line} of the knownHostsFile: the server's key changed, or this is not the server"
            ),
            Verdict::Revoked(line) => {
                format!("is marked @revoked at line {line} of the knownHostsFile")
            }
        };
        self.refuse(fingerprint, problem);
        Ok(false)
    }
}
