//! rustls configurations for mesh links (SPEC §6) and the certificate verifiers behind them.
//!
//! Both sides: TLS 1.3 only, key exchange X25519MLKEM768 only (hybrid post-quantum; a peer
//! that cannot do it fails the handshake rather than falling back), the aws-lc-rs provider,
//! ALPN [`ALPN_MESH`], no session resumption (every link does a full handshake with a fresh
//! hybrid key exchange and a full certificate check, so an expired or replaced certificate
//! takes effect on the next connection), no early data.
//!
//! Mutual authentication against the mesh CA, which is the only trust anchor:
//!
//! - The **server** requires a client certificate that webpki chains to the CA (signature,
//!   validity period, clientAuth usage), and that carries a node id and an ML-DSA-65 key
//!   ([`crate::certs::read_node_certificate`]). Any node may dial; the engine learns which
//!   from [`crate::PeerCredentials`] and checks it against the HELLO.
//! - The **client** checks the server certificate the same way (webpki chain to the CA,
//!   serverAuth usage, the same mesh fields), and then,
//!   instead of a DNS name, the node id: when dialing a known peer
//!   ([`ExpectedPeer::Node`]) the certificate must name exactly that node, otherwise
//!   ([`ExpectedPeer::AnyNode`], e.g. a `--connect` address whose node is not yet known) any
//!   node id is accepted and reported.
//!
//! One [`ClientConfig`] serves all peers: [`client_connection`] encodes the expected peer in
//! the rustls `ServerName` (`node-<id>.mesh.invalid` or `any-node.mesh.invalid`, under the
//! RFC 6761 `.invalid` TLD), which the verifier decodes. SNI is disabled, so the name never
//! leaves the node. A `ServerName` of any other form is refused by the verifier.

use std::num::NonZeroU64;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, DistinguishedName,
    OtherError, RootCertStore, ServerConfig, ServerConnection, SignatureScheme,
    SupportedCipherSuite,
};
use rustls_pki_types::{CertificateDer, DnsName, ServerName, UnixTime};

use crate::certs::{NodeIdentity, PeerCredentials, node_uri, read_node_certificate};
use crate::error::Error;

/// The ALPN protocol id of mesh links, so a mesh endpoint never mistakes another TLS
/// protocol (or vice versa) sharing the same certificates.
pub const ALPN_MESH: &[u8] = b"mesh/1";

const ANY_NODE_SERVER_NAME: &str = "any-node.mesh.invalid";
const NODE_SERVER_NAME_PREFIX: &str = "node-";
const NODE_SERVER_NAME_SUFFIX: &str = ".mesh.invalid";

/// The aws-lc-rs provider restricted to mesh's choices: TLS 1.3 cipher suites only and the
/// X25519MLKEM768 key exchange only.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768];
    provider
        .cipher_suites
        .retain(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
    Arc::new(provider)
}

/// Which node the client expects to find at the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedPeer {
    /// Exactly this node; any other node id fails the handshake.
    Node(NonZeroU64),
    /// Any node with a valid certificate from the mesh CA.
    AnyNode,
}

impl ExpectedPeer {
    fn server_name(self) -> ServerName<'static> {
        let name = match self {
            ExpectedPeer::Node(id) => {
                format!("{NODE_SERVER_NAME_PREFIX}{id}{NODE_SERVER_NAME_SUFFIX}")
            }
            ExpectedPeer::AnyNode => ANY_NODE_SERVER_NAME.to_owned(),
        };
        ServerName::DnsName(DnsName::try_from(name).expect("mesh server names are valid DNS"))
    }

    fn from_server_name(name: &ServerName<'_>) -> Option<Self> {
        let ServerName::DnsName(dns) = name else {
            return None;
        };
        let dns = dns.as_ref();
        if dns == ANY_NODE_SERVER_NAME {
            return Some(ExpectedPeer::AnyNode);
        }
        let digits = dns
            .strip_prefix(NODE_SERVER_NAME_PREFIX)?
            .strip_suffix(NODE_SERVER_NAME_SUFFIX)?;
        // Only names produced by `server_name` are accepted, so the round trip is exact.
        let id = digits.parse::<u64>().ok().and_then(NonZeroU64::new)?;
        (id.to_string() == digits).then_some(ExpectedPeer::Node(id))
    }
}

/// The server configuration for accepting mesh links.
pub fn server_config(
    identity: &NodeIdentity,
    ca: &CertificateDer<'static>,
) -> Result<Arc<ServerConfig>, Error> {
    let provider = crypto_provider();
    let roots = root_store(ca)?;
    let webpki = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| Error::Tls(rustls::Error::General(format!("client verifier: {e}"))))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(MeshClientVerifier { inner: webpki }))
        .with_single_cert(
            vec![identity.certificate().clone()],
            identity.tls_key().clone_key(),
        )?;
    config.alpn_protocols = vec![ALPN_MESH.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// The client configuration for dialing mesh links; use it through [`client_connection`].
pub fn client_config(
    identity: &NodeIdentity,
    ca: &CertificateDer<'static>,
) -> Result<Arc<ClientConfig>, Error> {
    let provider = crypto_provider();
    let verifier = MeshServerVerifier {
        roots: root_store(ca)?,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(
            vec![identity.certificate().clone()],
            identity.tls_key().clone_key(),
        )?;
    config.alpn_protocols = vec![ALPN_MESH.to_vec()];
    config.resumption = Resumption::disabled();
    config.enable_sni = false;
    config.enable_early_data = false;
    Ok(Arc::new(config))
}

/// Both configurations of a node, built once at start-up and shared by every core.
#[derive(Debug, Clone)]
pub struct MeshTlsConfig {
    /// For accepted connections.
    pub server: Arc<ServerConfig>,
    /// For dialed connections.
    pub client: Arc<ClientConfig>,
}

impl MeshTlsConfig {
    /// Builds both configurations from the node's identity and the mesh CA certificate.
    pub fn new(identity: &NodeIdentity, ca: &CertificateDer<'static>) -> Result<Self, Error> {
        Ok(Self {
            server: server_config(identity, ca)?,
            client: client_config(identity, ca)?,
        })
    }
}

/// A client connection to `expected` (see the module docs), ready to be driven by
/// [`crate::TlsStream`].
pub fn client_connection(
    config: &Arc<ClientConfig>,
    expected: ExpectedPeer,
) -> Result<ClientConnection, Error> {
    Ok(ClientConnection::new(
        Arc::clone(config),
        expected.server_name(),
    )?)
}

/// A server connection for an accepted transport, ready to be driven by
/// [`crate::TlsStream`].
pub fn server_connection(config: &Arc<ServerConfig>) -> Result<ServerConnection, Error> {
    Ok(ServerConnection::new(Arc::clone(config))?)
}

/// The peer's node id and ML-DSA-65 public key, from its end-entity certificate, once the
/// handshake has verified it.
pub fn peer_credentials(conn: &rustls::CommonState) -> Result<PeerCredentials, Error> {
    let end_entity = conn
        .peer_certificates()
        .and_then(<[_]>::first)
        .ok_or(Error::NoPeerCertificate)?;
    Ok(read_node_certificate(end_entity)?)
}

fn root_store(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    Ok(Arc::new(roots))
}

/// The mesh-specific part of both verifiers: the certificate must name a node and carry its
/// ML-DSA-65 key.
fn check_node_certificate(
    end_entity: &CertificateDer<'_>,
) -> Result<PeerCredentials, rustls::Error> {
    read_node_certificate(end_entity).map_err(|problem| {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(problem))))
    })
}

/// Checks server certificates: chain to the mesh CA via webpki, then the node id.
#[derive(Debug)]
struct MeshServerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let expected = ExpectedPeer::from_server_name(server_name).ok_or_else(|| {
            rustls::Error::General(format!(
                "{server_name:?} is not a mesh peer name; create connections with \
                 mesh_tls::client_connection"
            ))
        })?;
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let credentials = check_node_certificate(end_entity)?;
        match expected {
            ExpectedPeer::Node(id) if id != credentials.node_id => {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForNameContext {
                        // `node-<id>.mesh.invalid`: names the expected node id.
                        expected: server_name.to_owned(),
                        presented: vec![node_uri(credentials.node_id)],
                    },
                ))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable with a TLS 1.3-only config; delegated rather than refused so the
        // verifier stays correct if it is ever reused.
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Checks client certificates: webpki against the mesh CA, then the mesh fields.
#[derive(Debug)]
struct MeshClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_node_certificate(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{CertificateAuthority, Validity, generate_node};
    use crate::error::CertProblem;
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, SanType};

    fn cert_problem(e: &rustls::Error) -> Option<&CertProblem> {
        match e {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
                inner.downcast_ref::<CertProblem>()
            }
            _ => None,
        }
    }

    /// A certificate the mesh CA signed but without the ML-DSA-65 extension passes webpki
    /// and still fails both mesh verifiers.
    #[test]
    fn verifiers_require_the_mesh_fields() {
        let ca = CertificateAuthority::generate("t", Validity::ca_default()).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let validity = Validity::node_default();
        params.not_before = validity.not_before().into();
        params.not_after = validity.not_after().into();
        params.subject_alt_names = vec![SanType::URI("mesh://node/5".try_into().unwrap())];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let classical_only = params.signed_by(&key, ca.issuer()).unwrap();
        let der = classical_only.der();

        let provider = crypto_provider();
        let roots = root_store(ca.certificate()).unwrap();
        let server_verifier = MeshServerVerifier {
            roots: roots.clone(),
            algorithms: provider.signature_verification_algorithms,
        };
        let client_verifier = MeshClientVerifier {
            inner: WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .unwrap(),
        };
        let now = UnixTime::now();
        let any = ExpectedPeer::AnyNode.server_name();
        let err = server_verifier
            .verify_server_cert(der, &[], &any, &[], now)
            .unwrap_err();
        assert_eq!(
            cert_problem(&err),
            Some(&CertProblem::NoMldsaKey),
            "{err:?}"
        );
        let err = client_verifier
            .verify_client_cert(der, &[], now)
            .unwrap_err();
        assert_eq!(
            cert_problem(&err),
            Some(&CertProblem::NoMldsaKey),
            "{err:?}"
        );

        // A proper node certificate passes both, and only under mesh peer names.
        let (good, _) = generate_node(&ca, NonZeroU64::new(5).unwrap(), &[], validity).unwrap();
        server_verifier
            .verify_server_cert(&good.certificate, &[], &any, &[], now)
            .unwrap();
        client_verifier
            .verify_client_cert(&good.certificate, &[], now)
            .unwrap();
        let dns = ServerName::try_from("localhost").unwrap();
        assert!(matches!(
            server_verifier.verify_server_cert(&good.certificate, &[], &dns, &[], now),
            Err(rustls::Error::General(_))
        ));
    }

    #[test]
    fn server_names_round_trip() {
        for peer in [
            ExpectedPeer::AnyNode,
            ExpectedPeer::Node(NonZeroU64::new(1).unwrap()),
            ExpectedPeer::Node(NonZeroU64::new(u64::MAX).unwrap()),
        ] {
            assert_eq!(
                ExpectedPeer::from_server_name(&peer.server_name()),
                Some(peer)
            );
        }
        for other in [
            "example.com",
            "node-0.mesh.invalid",
            "node-01.mesh.invalid",
            "node-x.mesh.invalid",
            "node-7.mesh.invalid.example",
        ] {
            let name = ServerName::try_from(other).unwrap();
            assert_eq!(ExpectedPeer::from_server_name(&name), None, "{other}");
        }
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        assert_eq!(ExpectedPeer::from_server_name(&ip), None);
    }

    #[test]
    fn provider_is_tls13_and_hybrid_only() {
        let p = crypto_provider();
        assert_eq!(p.kx_groups.len(), 1);
        assert_eq!(p.kx_groups[0].name(), rustls::NamedGroup::X25519MLKEM768);
        assert!(!p.cipher_suites.is_empty());
        assert!(
            p.cipher_suites
                .iter()
                .all(|s| s.version() == &rustls::version::TLS13)
        );
    }
}
