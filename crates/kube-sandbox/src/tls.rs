//! The sandbox's own certificate authority, its serving certificate, and the kubeconfig that
//! trusts them.

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

/// A fresh CA and a server certificate signed by it.
pub struct ServingIdentity {
    /// PEM of the CA certificate (goes into the kubeconfig and pods' `ca.crt`).
    pub ca_pem: String,
    /// rustls configuration serving the signed certificate.
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Errors while minting certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen could not build a certificate.
    #[error("generating the sandbox certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate.
    #[error("configuring TLS: {0}")]
    Configure(#[from] rustls::Error),
}

/// The parameters of a self-signed certificate authority named `common_name`, for the
/// embedded sandbox's CA and the upstream control plane's.
pub(crate) fn ca_params(common_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Mints a CA and a serving certificate valid for `hosts` (names or IP addresses).
pub fn mint(hosts: &[String]) -> Result<ServingIdentity, TlsError> {
    let ca_params = ca_params("kube-sandbox-ca")?;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(hosts.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    // HTTP/1.1 only: exec upgrades to WebSocket need it, and kubectl is content with it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServingIdentity {
        ca_pem: ca_cert.pem(),
        server_config: Arc::new(config),
    })
}

/// A kubeconfig for `server` trusting `ca_pem`, authenticating with `token`.
pub fn kubeconfig(server: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: sandbox-admin
  user:
    token: {token}
contexts:
- name: sandbox
  context:
    cluster: sandbox
    user: sandbox-admin
    namespace: default
current-context: sandbox
"
    )
}
