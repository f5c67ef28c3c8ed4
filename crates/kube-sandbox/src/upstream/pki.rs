//! The upstream control plane's certificates and keys: one CA, the API server's serving and
//! kubelet-client certificates, client certificates for the admin, controller-manager,
//! scheduler and nodes, kubelet serving certificates, and the ServiceAccount signing key.
//!
//! Everything is minted fresh at each start (a restarted sandbox gets new identities) and the
//! files the Go components read are written under `<state-dir>/pki` with mode 0600.

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertPair {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM PKCS#8 private key.
    pub key_pem: String,
}

/// The CA, able to sign more certificates (node identities are minted as nodes register).
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// PEM of the CA certificate.
    pub ca_pem: String,
}

/// What a certificate is for.
pub enum Usage<'a> {
    /// A TLS client identity: common name (user) and organizations (groups).
    Client {
        /// The user name.
        user: &'a str,
        /// The groups.
        groups: &'a [&'a str],
    },
    /// A TLS server identity valid for these names and IP addresses.
    Server {
        /// Common name.
        name: &'a str,
        /// DNS names and IP addresses.
        hosts: &'a [String],
    },
}

impl Authority {
    /// Mints a new CA.
    pub fn new() -> Result<Authority, rcgen::Error> {
        let params = crate::tls::ca_params("nkvm-upstream-ca")?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            issuer: Issuer::new(params, key),
            ca_pem: cert.pem(),
        })
    }

    /// Signs a new certificate for `usage`.
    pub fn sign(&self, usage: Usage<'_>) -> Result<CertPair, rcgen::Error> {
        let mut params = match usage {
            Usage::Client { user, groups } => {
                let mut p = CertificateParams::new(Vec::<String>::new())?;
                p.distinguished_name.push(DnType::CommonName, user);
                for g in groups {
                    p.distinguished_name
                        .push(DnType::OrganizationName, g.to_string());
                }
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                p
            }
            Usage::Server { name, hosts } => {
                let mut p = CertificateParams::new(hosts.to_vec())?;
                p.distinguished_name.push(DnType::CommonName, name);
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                p
            }
        };
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Paths of the files the Go components read.
pub struct PkiFiles {
    /// Directory holding them.
    pub dir: PathBuf,
}

impl PkiFiles {
    /// The path of `name` in the PKI directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `content` as `name`, readable by the owner only.
    pub fn write(&self, name: &str, content: &str) -> std::io::Result<PathBuf> {
        let path = self.path(name);
        write_private(&path, content)?;
        Ok(path)
    }

    /// Writes a certificate pair as `<stem>.crt` and `<stem>.key`.
    pub fn write_pair(&self, stem: &str, pair: &CertPair) -> std::io::Result<()> {
        self.write(&format!("{stem}.crt"), &pair.cert_pem)?;
        self.write(&format!("{stem}.key"), &pair.key_pem)?;
        Ok(())
    }
}

/// Writes a file with mode 0600 (keys and kubeconfigs with client keys).
pub fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())
}

/// A ServiceAccount signing key pair: (private PKCS#8 PEM, public PKIX PEM).
pub fn service_account_keys() -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certificates_carry_user_and_groups() {
        let ca = Authority::new().expect("CA");
        let pair = ca
            .sign(Usage::Client {
                user: "system:node:n1",
                groups: &["system:nodes"],
            })
            .expect("signed");
        assert!(pair.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pair.key_pem.contains("PRIVATE KEY"));
        let (private, public) = service_account_keys().expect("keys");
        assert!(private.contains("PRIVATE KEY") && public.contains("PUBLIC KEY"));
    }
}
