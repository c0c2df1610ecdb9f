//! TLS of the node's one QUIC endpoint as the links see it: the server side serves the
//! client protocol and links, asking for (but not requiring) a client certificate; the
//! dialing side presents the node's certificate and checks the peer's against the
//! cluster CA under the peer's node name.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::tls::{TlsError, TlsPaths, crypto_provider, load_certs};

/// How a link connection is kept alive and when a silent peer counts as gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkTiming {
    /// Interval of QUIC keep-alive packets on a dialed link.
    pub keep_alive: Duration,
    /// A link with no packet from the peer for this long is closed; QUIC uses the
    /// smaller of both ends' values, so the dialer's value bounds both ends.
    pub idle_timeout: Duration,
}

impl Default for LinkTiming {
    /// Keep-alive every 1 s; a peer silent for 5 s is gone.
    fn default() -> Self {
        LinkTiming {
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
        }
    }
}

fn tls_error(reason: impl Into<String>) -> TlsError {
    TlsError::Rustls(rustls::Error::General(reason.into()))
}

/// The cluster CA's certificates as a root store.
pub fn cluster_roots(paths: &TlsPaths) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in load_certs(&paths.ca_cert)? {
        roots.add(ca)?;
    }
    Ok(Arc::new(roots))
}

/// The server configuration of the node's endpoint when it also serves links: ALPN
/// `chorus/1` (client protocol, no client certificate) and `chorus-link/2` or `/1`
/// (links); a
/// client certificate, when presented, must chain to the cluster CA, and the links
/// layer closes a link connection that presented none.
pub fn link_server_config(
    paths: &TlsPaths,
    cert: Arc<crate::tls::NodeCert>,
    max_concurrent_streams: u32,
    idle_timeout: Duration,
) -> Result<quinn::ServerConfig, TlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(cluster_roots(paths)?, crypto_provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls_error(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    // The server's order decides: a peer that offers both link versions gets the newer.
    tls.alpn_protocols = std::iter::once(chorus_protocol::ALPN_CLIENT)
        .chain(chorus_protocol::ALPN_LINKS)
        .map(<[u8]>::to_vec)
        .collect();
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| tls_error(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(max_concurrent_streams.into());
    transport.max_concurrent_uni_streams(0u32.into());
    transport.max_idle_timeout(Some(
        idle_timeout
            .try_into()
            .map_err(|_| tls_error("idle timeout too large"))?,
    ));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The client configuration a node dials its peers with: ALPN `chorus-link/2` or `/1`, this
/// node's certificate as the client certificate, the peer checked against the cluster
/// CA (the server name to dial with is the peer's node id), keep-alive and idle timeout
/// from `timing`.
pub fn link_client_config(
    paths: &TlsPaths,
    cert: Arc<crate::tls::NodeCert>,
    timing: LinkTiming,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(cluster_roots(paths)?)
        .with_client_cert_resolver(cert);
    tls.alpn_protocols = chorus_protocol::ALPN_LINKS
        .iter()
        .map(|alpn| alpn.to_vec())
        .collect();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| tls_error(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(timing.keep_alive));
    transport.max_idle_timeout(Some(
        timing
            .idle_timeout
            .try_into()
            .map_err(|_| tls_error("idle timeout too large"))?,
    ));
    // The peer never opens streams on a link: the dialer opens the one stream.
    transport.max_concurrent_bidi_streams(0u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Checks that a certificate chain presented by a peer belongs to the node it claims to
/// be: it chains to the cluster CA and names the node.
#[derive(Clone, Debug)]
pub struct PeerVerifier {
    verifier: Arc<WebPkiServerVerifier>,
}

impl PeerVerifier {
    /// A verifier for certificates of the cluster CA in `paths`.
    pub fn new(paths: &TlsPaths) -> Result<Self, TlsError> {
        let verifier =
            WebPkiServerVerifier::builder_with_provider(cluster_roots(paths)?, crypto_provider())
                .build()
                .map_err(|e| tls_error(e.to_string()))?;
        Ok(PeerVerifier { verifier })
    }

    /// Whether `chain` (end entity first) is a cluster certificate for node `name`.
    pub fn names(&self, chain: &[CertificateDer<'static>], name: &str) -> bool {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return false;
        };
        let Ok(server_name) = ServerName::try_from(name.to_string()) else {
            return false;
        };
        self.verifier
            .verify_server_cert(
                end_entity,
                intermediates,
                &server_name,
                &[],
                UnixTime::now(),
            )
            .is_ok()
    }
}

/// The certificate chain the peer of `connection` presented and the TLS layer verified,
/// if it presented one.
pub fn peer_chain(connection: &quinn::Connection) -> Option<Vec<CertificateDer<'static>>> {
    connection
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()
        .map(|chain| *chain)
        .filter(|chain| !chain.is_empty())
}

/// The link ALPN `connection` agreed on (one of [`chorus_protocol::ALPN_LINKS`]), if it
/// is a link.
pub fn link_alpn(connection: &quinn::Connection) -> Option<&'static [u8]> {
    let agreed = negotiated_alpn(connection)?;
    chorus_protocol::ALPN_LINKS
        .into_iter()
        .find(|alpn| *alpn == agreed.as_slice())
}

/// The ALPN protocol `connection` agreed on.
pub fn negotiated_alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection
        .handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}
