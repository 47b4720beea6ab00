//! Authentication of a session's peer (SPEC §6), with the crypto injected by the shell.
//!
//! The shell runs TLS 1.3 (rustls, aws-lc-rs, mutual authentication against the mesh CA) and
//! hands the session what TLS established, as a [`ChannelSecurity`]:
//!
//! - [`ChannelSecurity::Tls`]: the TLS exporter value (channel binding), the peer's
//!   [`PeerCredentials`] taken from its verified certificate, and a [`HandshakeCrypto`] that
//!   signs with this node's ML-DSA-65 key and verifies peers' signatures.
//! - [`ChannelSecurity::Plain`]: plain TCP (`--tls` off).
//!
//! The rules the session applies to the peer's HELLO:
//!
//! 1. Plain TCP: allowed unless `require_tls`, in which case the session refuses at once with
//!    CLOSE `TlsRequired` (reason 26). No signature is sent or required (one is ignored if
//!    present: there is no channel to bind it to); the session is marked *unauthenticated*.
//! 2. TLS: the certificate must name a node id, equal to the HELLO's `node_id`; the HELLO must
//!    carry a signature; and [`HandshakeCrypto::verify`] must accept it over the peer's
//!    [`Transcript`]. Any failure is CLOSE `AuthenticationFailed` (reason 21). An attacker
//!    must therefore hold both the classical TLS key and the ML-DSA key of the node it claims
//!    to be.
//!
//! **Transcript** (the bytes signed, and verified), [`Transcript::to_bytes`]:
//!
//! ```text
//! TRANSCRIPT_LABEL   50 bytes   "mesh hello v1: ML-DSA-65 over TLS channel binding\0"
//! signer side         1 byte    0x01 initiator (dialer, TLS client), 0x02 acceptor (TLS server)
//! signer node id      8 bytes   big-endian, the node_id of the HELLO being signed
//! channel binding    32 bytes   TLS exporter, label EXPORTER_LABEL, no context, 32 bytes
//! hello fields        n bytes   the HELLO's signed fields exactly as sent (see `hello`)
//! ```
//!
//! This is byte for byte the layout of `mesh_tls::mldsa::hello_transcript` (same labels), so
//! the shell may implement [`HandshakeCrypto`] either by signing [`Transcript::to_bytes`] with
//! the raw ML-DSA key or by calling `mesh_tls::sign_hello` / `verify_hello` with the parts of
//! the [`Transcript`]; both produce the same signatures.
//!
//! Both HELLOs are sent at once, so neither signature can cover the other HELLO; what ties the
//! two together is the exporter, which is unique to this TLS connection and derived from its
//! whole handshake (both randoms, both certificates, the X25519MLKEM768 shared secret). A
//! signature therefore cannot be replayed on another connection, the side byte keeps it from
//! being reflected back to its signer on the same one, and the node id ties it to the claimed
//! identity.

use crate::session::Side;

/// Domain-separation label at the start of every transcript (NUL-terminated ASCII).
pub const TRANSCRIPT_LABEL: &[u8] = b"mesh hello v1: ML-DSA-65 over TLS channel binding\0";
/// The TLS exporter label (RFC 8446 §7.5) the shell uses to compute the channel binding, with
/// no context and [`CHANNEL_BINDING_LEN`] bytes of output.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-mesh-hello-v1";
/// Length of the channel binding (TLS exporter output).
pub const CHANNEL_BINDING_LEN: usize = 32;

/// Why a peer failed authentication, or why this node could not sign. Every variant but
/// [`AuthError::SigningFailed`] closes the session with `AuthenticationFailed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The peer's TLS certificate names no node id.
    #[error("the peer's certificate names no node id")]
    CertificateWithoutNodeId,
    /// The certificate's node id differs from the one the HELLO claims.
    #[error("the certificate names node {cert_node_id} but the HELLO claims node {hello_node_id}")]
    NodeIdMismatch {
        /// Node id in the certificate.
        cert_node_id: u64,
        /// Node id in the HELLO.
        hello_node_id: u64,
    },
    /// Over TLS, the HELLO carried no signature.
    #[error("the HELLO of node {node_id} carries no signature")]
    MissingSignature {
        /// The node id the HELLO claims.
        node_id: u64,
    },
    /// The signature does not verify under the peer's key.
    #[error("the signature of {len} bytes from node {node_id} does not verify")]
    BadSignature {
        /// The node id the HELLO claims.
        node_id: u64,
        /// Length of the signature received.
        len: usize,
    },
    /// No ML-DSA public key is known for the peer (neither in its certificate nor in the
    /// trust store).
    #[error("no ML-DSA public key known for node {node_id}")]
    UnknownKey {
        /// The node id.
        node_id: u64,
    },
    /// Signing this node's HELLO failed (a local fault: closes with `Internal`).
    #[error("signing the HELLO failed: {detail}")]
    SigningFailed {
        /// What the crypto backend reported.
        detail: String,
    },
}

/// What TLS established about the peer, extracted by the shell from the verified certificate
/// chain. The session reads `cert_node_id`; the rest is for the shell's own
/// [`HandshakeCrypto::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerCredentials {
    /// The node id the certificate names (e.g. from a `mesh-node-<id>` SAN), `None` when it
    /// names none (then authentication fails).
    pub cert_node_id: Option<u64>,
    /// The domain the certificate names, if any (informational; not checked by the session).
    pub cert_domain_id: Option<u32>,
    /// The peer's ML-DSA-65 public key if the certificate carries one; opaque to the session.
    /// Empty when the shell looks keys up elsewhere.
    pub ml_dsa_public_key: Vec<u8>,
}

/// What a HELLO signature covers, in parts (module docs). [`Transcript::to_bytes`] is the
/// message ML-DSA signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transcript<'a> {
    /// The side of the node whose HELLO this is.
    pub signer_side: Side,
    /// The node id in that HELLO (for the peer's HELLO: already checked equal to its
    /// certificate's).
    pub signer_node_id: u64,
    /// The TLS exporter value of this connection.
    pub channel_binding: &'a [u8; CHANNEL_BINDING_LEN],
    /// The HELLO's signed fields as sent.
    pub hello_fields: &'a [u8],
}

impl Transcript<'_> {
    /// The message to sign or verify.
    pub fn to_bytes(&self) -> Vec<u8> {
        let side: u8 = match self.signer_side {
            Side::Initiator => 0x01,
            Side::Acceptor => 0x02,
        };
        let mut t = Vec::with_capacity(
            TRANSCRIPT_LABEL.len() + 1 + 8 + CHANNEL_BINDING_LEN + self.hello_fields.len(),
        );
        t.extend_from_slice(TRANSCRIPT_LABEL);
        t.push(side);
        t.extend_from_slice(&self.signer_node_id.to_be_bytes());
        t.extend_from_slice(self.channel_binding);
        t.extend_from_slice(self.hello_fields);
        t
    }
}

/// The signing and verification the shell provides (aws-lc-rs ML-DSA-65 in the node, through
/// `mesh-tls`; `mesh_session::testing::TestCrypto` (feature `testing`) in tests). One boxed instance per TLS session, so
/// it may hold per-connection state (e.g. the peer's parsed public key). Each method is called
/// at most once per session: `sign` from [`crate::Session::new`], `verify` when the peer's
/// HELLO arrives, after its node id was checked against the certificate.
pub trait HandshakeCrypto {
    /// Signs `transcript.to_bytes()` with this node's ML-DSA-65 private key. The signature
    /// must be at most [`crate::hello::MAX_SIGNATURE_LEN`] bytes (ML-DSA-65: 3,309).
    fn sign(&self, transcript: &Transcript<'_>) -> Result<Vec<u8>, AuthError>;

    /// Verifies `signature` over `transcript.to_bytes()` with the ML-DSA-65 public key of the
    /// peer described by `peer`. `Ok` only when the signature is valid.
    fn verify(
        &self,
        peer: &PeerCredentials,
        transcript: &Transcript<'_>,
        signature: &[u8],
    ) -> Result<(), AuthError>;
}

/// What protects the connection a session runs on.
pub enum ChannelSecurity {
    /// Plain TCP: no channel binding, no signatures, the peer is unauthenticated.
    Plain,
    /// TLS 1.3 with mutual authentication, handshake complete.
    Tls(TlsChannel),
}

impl ChannelSecurity {
    /// Whether the channel is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, ChannelSecurity::Tls(_))
    }
}

impl core::fmt::Debug for ChannelSecurity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ChannelSecurity::Plain => f.write_str("Plain"),
            ChannelSecurity::Tls(t) => f.debug_tuple("Tls").field(t).finish(),
        }
    }
}

/// A completed TLS handshake, as the session needs it.
pub struct TlsChannel {
    /// The TLS exporter value ([`EXPORTER_LABEL`], empty context, 32 bytes).
    pub channel_binding: [u8; CHANNEL_BINDING_LEN],
    /// What the peer's certificate says.
    pub peer: PeerCredentials,
    /// Signs this node's HELLO and verifies the peer's. Dropped once the handshake is over.
    pub crypto: Box<dyn HandshakeCrypto + Send>,
}

impl core::fmt::Debug for TlsChannel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlsChannel")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_layout() {
        let t = Transcript {
            signer_side: Side::Acceptor,
            signer_node_id: 0x0102_0304_0506_0708,
            channel_binding: &[9; 32],
            hello_fields: b"fields",
        };
        let b = t.to_bytes();
        let n = TRANSCRIPT_LABEL.len();
        assert_eq!(n, 50);
        assert_eq!(&b[..n], TRANSCRIPT_LABEL);
        assert_eq!(b[n], 0x02);
        assert_eq!(&b[n + 1..n + 9], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[n + 9..n + 41], &[9; 32]);
        assert_eq!(&b[n + 41..], b"fields");
        let other_side = Transcript {
            signer_side: Side::Initiator,
            ..t
        };
        assert_eq!(other_side.to_bytes()[n], 0x01);
        assert_ne!(b, other_side.to_bytes());
        let other_binding = Transcript {
            channel_binding: &[8; 32],
            ..t
        };
        assert_ne!(b, other_binding.to_bytes());
    }

    #[test]
    fn debug_does_not_need_the_crypto() {
        let c = ChannelSecurity::Tls(TlsChannel {
            channel_binding: [0; 32],
            peer: PeerCredentials::default(),
            crypto: Box::new(crate::testing::TestCrypto::new(1)),
        });
        assert!(c.is_tls());
        assert!(format!("{c:?}").contains("TlsChannel"));
        assert!(!ChannelSecurity::Plain.is_tls());
    }
}
