//! TLS material from PEM: the gRPC listener's server configuration with client certificates
//! (`listen.callers.tls`) and the caller identity in a verified certificate.

use crate::config::CallerTls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// A server configuration that requires a client certificate signed by the caller CA, and
/// speaks HTTP/2 only (gRPC).
pub fn server_config(tls: &CallerTls) -> Result<rustls::ServerConfig, String> {
    crate::jwt::fetch::install_crypto_provider();
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert_file: {e}"))?;
    if certs.is_empty() {
        return Err("cert_file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).map_err(|e| format!("key_file: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&tls.client_ca_pem) {
        let ca = ca.map_err(|e| format!("client_ca_file: {e}"))?;
        roots.add(ca).map_err(|e| format!("client_ca_file: {e}"))?;
    }
    if roots.is_empty() {
        return Err("client_ca_file holds no certificate".into());
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| format!("client_ca_file: {e}"))?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert_file/key_file: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The URI subject alternative names of a DER certificate (SPIFFE ids live there).
pub fn uri_sans(cert: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else { return Vec::new() };
    let Ok(Some(san)) = parsed.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_string()),
            _ => None,
        })
        .collect()
}
