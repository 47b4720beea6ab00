//! The crate's one error type, [`Error`], and the two enums that say what is wrong with a
//! certificate ([`CertProblem`]) or a file ([`FileProblem`]).
//!
//! Every error that comes from a file names the file; every error that comes from a peer says
//! which check failed, so the engine can count handshake failures by reason (SPEC §8) and
//! close the session with a typed reason.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in `mesh-tls`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed at the operating-system level.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A file was read but its contents are not what they must be.
    #[error("{}: {problem}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: FileProblem,
    },
    /// A file that generation would write already exists; nothing is overwritten.
    #[error("{} already exists; refusing to overwrite it (move it away to re-issue)", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A private key does not belong to the certificate it was loaded with.
    #[error("{} does not match the {kind} public key in {}", key_path.display(), cert_path.display())]
    KeyMismatch {
        /// Which key: `"TLS"`, `"ML-DSA-65"` or `"CA"`.
        kind: &'static str,
        /// The certificate.
        cert_path: PathBuf,
        /// The private key file.
        key_path: PathBuf,
    },
    /// An in-memory certificate (a peer's, or one just generated) is not a valid mesh node
    /// certificate.
    #[error("certificate: {0}")]
    Certificate(#[from] CertProblem),
    /// Generation parameters were rejected before anything was generated.
    #[error("invalid certificate parameters: {0}")]
    InvalidParameters(String),
    /// rcgen failed to build or sign a certificate or to generate a key.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// aws-lc-rs failed to generate or serialise an ML-DSA-65 key (should not happen).
    #[error("ML-DSA-65 key operation failed: {0}")]
    MldsaKey(&'static str),
    /// The system's secure random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// An ML-DSA-65 signature did not verify under the given public key and message.
    #[error("ML-DSA-65 signature does not verify")]
    SignatureInvalid,
    /// A byte string is not an ML-DSA-65 signature (wrong length).
    #[error("ML-DSA-65 signature must be {expected} bytes, got {got}")]
    SignatureLength {
        /// [`crate::mldsa::MLDSA65_SIGNATURE_LEN`].
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// rustls refused the configuration, the handshake, or a record (including certificate
    /// verification failures: expired, unknown CA, wrong node id, missing ML-DSA key).
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The transport under the TLS stream failed.
    #[error("transport: {0}")]
    Transport(#[source] io::Error),
    /// The transport reached end of stream before the handshake completed.
    #[error("transport closed during the TLS handshake")]
    HandshakeEof,
    /// Peer credentials were asked for before the peer presented a certificate.
    #[error("the peer has not presented a certificate (handshake not complete)")]
    NoPeerCertificate,
}

/// What is wrong with a certificate as a mesh node (or CA) certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertProblem {
    /// The DER does not parse as an X.509 certificate.
    #[error("not a parseable X.509 certificate: {0}")]
    Unparseable(String),
    /// There is no `mesh://node/<id>` URI in the subject alternative names.
    #[error("no mesh://node/<id> URI subject alternative name")]
    NoNodeId,
    /// There is more than one `mesh://node/` URI: the identity would be ambiguous.
    #[error("more than one mesh://node/ URI subject alternative name")]
    MultipleNodeIds,
    /// The `mesh://node/` URI does not end in a canonical non-zero decimal `u64`.
    #[error("node URI {uri:?} does not hold a canonical non-zero decimal u64 node id")]
    BadNodeId {
        /// The URI as found.
        uri: String,
    },
    /// The ML-DSA-65 public key extension is absent.
    #[error(
        "no ML-DSA-65 public key extension (OID {})",
        crate::certs::OID_MLDSA65_PUBLIC_KEY_TEXT
    )]
    NoMldsaKey,
    /// The ML-DSA-65 public key extension is present but not a valid ML-DSA-65 key.
    #[error("ML-DSA-65 public key extension: {0}")]
    BadMldsaKey(String),
    /// The ML-DSA-65 public key extension is marked critical; mesh issues it non-critical so
    /// that generic X.509 software can still process the certificate.
    #[error("ML-DSA-65 public key extension is marked critical")]
    CriticalMldsaKey,
    /// A CA certificate was expected but this one is not a CA.
    #[error("not a CA certificate (basicConstraints cA is not true)")]
    NotCa,
}

/// What is wrong with the contents of a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileProblem {
    /// The file holds no PEM block with the label that was needed.
    #[error("no PEM block labelled {label:?}")]
    NoPemBlock {
        /// The expected PEM label, e.g. `CERTIFICATE` or `PRIVATE KEY`.
        label: &'static str,
    },
    /// The file holds more than one PEM block with the label, where exactly one is needed.
    #[error("more than one PEM block labelled {label:?}; expected exactly one")]
    ManyPemBlocks {
        /// The PEM label.
        label: &'static str,
    },
    /// The PEM armour itself is malformed.
    #[error("malformed PEM: {0}")]
    BadPem(String),
    /// The certificate in the file is not a valid mesh certificate.
    #[error("{0}")]
    BadCertificate(CertProblem),
    /// The private key in the file cannot be used.
    #[error("unusable private key: {0}")]
    BadKey(String),
    /// The file is a valid node certificate, but for another node than its name says.
    #[error("certificate is for node {found}, expected node {expected}")]
    WrongNode {
        /// The node id the file name (or the caller) asked for.
        expected: std::num::NonZeroU64,
        /// The node id the certificate names.
        found: std::num::NonZeroU64,
    },
}
