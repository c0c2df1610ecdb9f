//! The QUIC client configuration: rustls trusting only the cluster CA, the client ALPN,
//! and the transport settings (keep-alive, idle timeout).

use std::sync::Arc;

use chorus_protocol::ALPN_CLIENT;
use quinn::crypto::rustls::QuicClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::{ClientConfig, Credentials};
use crate::error::ClientError;

/// Builds the quinn client config for `credentials` and `config`.
///
/// The crypto provider is named explicitly (ring): two providers end up in a Chorus
/// build, so rustls has no process default to fall back on.
pub(crate) fn quic_client_config(
    credentials: &Credentials,
    config: &ClientConfig,
) -> Result<quinn::ClientConfig, ClientError> {
    let roots = root_store(&credentials.ca_pem)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| ClientError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_CLIENT.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| ClientError::Tls(e.to_string()))?;

    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(config.keep_alive_interval));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(config.idle_timeout)
            .map_err(|_| ClientError::InvalidConfig("idle_timeout: too long".into()))?,
    ));
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(Arc::new(transport));
    Ok(client)
}

/// Every certificate in the PEM, as trust anchors; at least one is required.
fn root_store(ca_pem: &[u8]) -> Result<rustls::RootCertStore, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| ClientError::InvalidCa(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| ClientError::InvalidCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ClientError::InvalidCa(
            "no CERTIFICATE section in the PEM".into(),
        ));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_without_certificates_is_refused() {
        for pem in [
            &b""[..],
            b"not a pem",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            assert!(matches!(root_store(pem), Err(ClientError::InvalidCa(_))));
        }
    }

    #[test]
    fn a_certificate_that_is_not_der_is_refused() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(root_store(pem), Err(ClientError::InvalidCa(_))));
    }
}
