//! Security of mesh links (SPEC §6): certificates, TLS configuration, ML-DSA-65 channel
//! binding, and an async TLS stream adapter.
//!
//! - [`certs`]: the mesh CA and node certificates (node id as a `mesh://node/<id>` URI SAN,
//!   ML-DSA-65 public key in a private non-critical extension), [`NodeIdentity`], and
//!   [`read_node_certificate`].
//! - [`files`]: the directory `mesh certs` writes (`ca.pem`, `ca.key`, `node-<id>.pem`,
//!   `node-<id>.key`, `node-<id>.mldsa`) and the loaders a node uses.
//! - [`config`]: rustls server and client configurations: TLS 1.3 only, X25519MLKEM768 only,
//!   aws-lc-rs, mutual authentication against the mesh CA by node id rather than host name.
//! - [`mldsa`]: ML-DSA-65 keys, signatures, and the HELLO signature over the TLS exporter.
//! - [`stream`]: [`TlsStream`], driving a rustls connection over any `futures-io` transport
//!   (glommio's `TcpStream` included).
//!
//! # How a node uses it
//!
//! ```no_run
//! # async fn link<T>(tcp: T) -> Result<(), mesh_tls::Error>
//! # where T: futures_lite::io::AsyncRead + futures_lite::io::AsyncWrite + Unpin {
//! use std::num::NonZeroU64;
//! use mesh_tls::{ExpectedPeer, MeshTlsConfig, TlsStream, files, mldsa};
//!
//! // At start-up (`--cert`, `--key`, `--pq-key`, `--ca`):
//! let identity = files::load_node_identity(
//!     "node-1.pem".as_ref(), "node-1.key".as_ref(), "node-1.mldsa".as_ref())?;
//! let ca = files::load_ca_certificate("ca.pem".as_ref())?;
//! let tls = MeshTlsConfig::new(&identity, &ca)?;
//!
//! // Per dialed link (accepting: `mesh_tls::server_connection(&tls.server)?`):
//! let peer = ExpectedPeer::Node(NonZeroU64::new(2).unwrap());
//! let mut stream = TlsStream::new(tcp, mesh_tls::client_connection(&tls.client, peer)?);
//! stream.handshake().await?;                      // race against the handshake deadline
//! let creds = stream.peer_credentials()?;         // node id + ML-DSA key from the cert
//! let binding = stream.channel_binding()?;        // 32-byte TLS exporter
//! let hello_fields = b"...encoded HELLO without its signature...";
//! let sig = mldsa::sign_hello(identity.mldsa(), &binding, stream.side(),
//!                             identity.node_id(), hello_fields)?;
//! // ... send HELLO + sig, receive the peer's, then check (HELLO node id == creds.node_id):
//! # let (peer_fields, peer_sig) = (hello_fields, &sig);
//! mldsa::verify_hello(&creds.mldsa_public_key, &binding, stream.peer_side(),
//!                     creds.node_id, peer_fields, peer_sig)?;
//! # Ok(()) }
//! ```
//!
//! No `unsafe`. The only cryptography backend is aws-lc-rs (rustls provider, rcgen, ML-DSA).

#![forbid(unsafe_code)]

pub mod certs;
pub mod config;
pub mod error;
pub mod files;
pub mod mldsa;
pub mod stream;

pub use certs::{
    CertificateAuthority, IssuedNodeCert, NodeCertRequest, NodeIdentity, PeerCredentials, Validity,
    generate_node, read_node_certificate,
};
pub use config::{
    ALPN_MESH, ExpectedPeer, MeshTlsConfig, client_config, client_connection, crypto_provider,
    peer_credentials, server_config, server_connection,
};
pub use error::{CertProblem, Error, FileProblem};
pub use files::{
    GenerateOptions, GeneratedFiles, MeshDir, NodeSpec, load_ca_certificate,
    load_certificate_authority, load_node_identity, write_mesh_dir,
};
pub use mldsa::{ChannelBinding, MldsaKeyPair, MldsaPublicKey, MldsaSignature};
pub use stream::TlsStream;

// The types a caller needs to use this crate's API, so it does not have to depend on
// matching versions itself.
pub use rustls;
pub use rustls_pki_types::{CertificateDer, PrivateKeyDer};
