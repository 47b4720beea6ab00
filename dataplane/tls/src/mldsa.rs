//! ML-DSA-65 (FIPS 204) node keys and the HELLO channel-binding signature (SPEC §6).
//!
//! Each node holds an ML-DSA-65 key pair next to its TLS key. The public half travels in the
//! node certificate (see [`crate::certs`]), so the mesh CA vouches for it; the private half
//! signs the TLS channel binding in the session HELLO. An impersonator therefore needs both
//! the classical TLS key (ECDSA P-256) and the post-quantum key.
//!
//! # Channel binding
//!
//! After the TLS handshake both ends derive the same 32 bytes with the TLS 1.3 exporter
//! (RFC 8446 §7.5, label [`EXPORTER_LABEL`], no context): [`ChannelBinding`]. Each end signs
//!
//! ```text
//! HELLO_SIGNATURE_CONTEXT          (ASCII, NUL-terminated, domain separation)
//! role           1 byte            0x01 = signer is the TLS client, 0x02 = TLS server
//! signer node id 8 bytes           big-endian u64
//! channel binding 32 bytes         the exporter output
//! hello fields   the rest          the encoded HELLO fields the signature covers
//! ```
//!
//! with [`sign_hello`], and verifies the peer's with [`verify_hello`] under the public key
//! from the peer's certificate ([`crate::PeerCredentials`]). The role byte stops a signature
//! being reflected back to its signer; the exporter ties it to this one TLS session, so it
//! cannot be replayed on another; the node id ties it to the claimed identity.
//!
//! # Key file format
//!
//! The private key is stored as PKCS#8 v1 (RFC 5208) in seed form, as aws-lc-rs writes it
//! (algorithm OID id-ml-dsa-65, 2.16.840.1.101.3.4.3.18), PEM-armoured with the standard
//! label `PRIVATE KEY` (RFC 7468), so OpenSSL 3.5+ reads it (`openssl pkey -in node-7.mldsa
//! -text`). Loading rejects any other algorithm, so pointing `--pq-key` at the TLS key fails
//! with a clear error.

use std::fmt;
use std::num::NonZeroU64;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    KeyPair as _, ML_DSA_65, ML_DSA_65_SIGNING, ParsedPublicKey, PqdsaKeyPair,
};
use rustls::Side;
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::{CertProblem, Error, FileProblem};

/// Length of an ML-DSA-65 signature (FIPS 204, Table 2).
pub const MLDSA65_SIGNATURE_LEN: usize = 3309;

/// Length of a raw ML-DSA-65 public key (FIPS 204, Table 2).
pub const MLDSA65_PUBLIC_KEY_LEN: usize = 1952;

/// OID id-ml-dsa-65 (NIST CSOR, 2.16.840.1.101.3.4.3.18), the algorithm in the public key's
/// SubjectPublicKeyInfo and in the PKCS#8 private key.
pub const OID_ML_DSA_65: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 3, 18];

/// TLS exporter label for the HELLO channel binding (RFC 8446 §7.5; the `EXPORTER-` prefix
/// keeps it clear of labels TLS itself uses).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-mesh-hello-v1";

/// Length of the channel binding exported from TLS.
pub const CHANNEL_BINDING_LEN: usize = 32;

/// Domain-separation prefix of every HELLO signature transcript (see the module docs).
pub const HELLO_SIGNATURE_CONTEXT: &[u8] = b"mesh hello v1: ML-DSA-65 over TLS channel binding\0";

/// PEM label of the ML-DSA-65 private key file (standard PKCS#8 label).
pub const MLDSA_PRIVATE_KEY_PEM_LABEL: &str = "PRIVATE KEY";

/// A node's ML-DSA-65 key pair.
pub struct MldsaKeyPair {
    inner: PqdsaKeyPair,
}

impl fmt::Debug for MldsaKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material; the public key fingerprint is enough to tell keys apart.
        f.debug_struct("MldsaKeyPair")
            .field("public_key", &self.public_key())
            .finish()
    }
}

impl MldsaKeyPair {
    /// Generates a fresh key pair from the system's secure random source.
    pub fn generate() -> Result<Self, Error> {
        let inner = PqdsaKeyPair::generate(&ML_DSA_65_SIGNING)
            .map_err(|_| Error::MldsaKey("key generation"))?;
        Ok(Self { inner })
    }

    /// Parses a PKCS#8 DER private key; fails unless it is an ML-DSA-65 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, FileProblem> {
        PqdsaKeyPair::from_pkcs8(&ML_DSA_65_SIGNING, der)
            .map(|inner| Self { inner })
            .map_err(|e| FileProblem::BadKey(format!("not an ML-DSA-65 PKCS#8 private key ({e})")))
    }

    /// Parses the PEM file format described in the module docs.
    pub fn from_pem(pem_text: &[u8]) -> Result<Self, FileProblem> {
        let der = crate::certs::single_pem_block(pem_text, MLDSA_PRIVATE_KEY_PEM_LABEL)?;
        Self::from_pkcs8_der(&der)
    }

    /// The private key as PKCS#8 v1 DER (seed form).
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, Error> {
        self.inner
            .to_pkcs8v1()
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| Error::MldsaKey("PKCS#8 serialisation"))
    }

    /// The private key in the PEM file format described in the module docs.
    pub fn to_pem(&self) -> Result<String, Error> {
        Ok(pem::encode(&pem::Pem::new(
            MLDSA_PRIVATE_KEY_PEM_LABEL,
            self.to_pkcs8_der()?,
        )))
    }

    /// The public half, as carried in the node certificate.
    ///
    /// # Panics
    /// Only if aws-lc-rs fails to encode the public key of a key pair it holds, or encodes
    /// it as something other than ML-DSA-65: a broken invariant of the library, not an input
    /// error.
    pub fn public_key(&self) -> MldsaPublicKey {
        let spki = self
            .inner
            .public_key()
            .as_der()
            .expect("aws-lc-rs encodes the public key of a key pair it holds");
        MldsaPublicKey::from_spki_der(spki.as_ref())
            .expect("aws-lc-rs encodes an ML-DSA-65 public key as an ML-DSA-65 SPKI")
    }

    /// Signs `message` (pure ML-DSA, empty context, hedged randomness).
    ///
    /// # Panics
    /// Only if aws-lc-rs returns an ML-DSA-65 signature of a length other than
    /// [`MLDSA65_SIGNATURE_LEN`] (a broken library invariant).
    pub fn sign(&self, message: &[u8]) -> Result<MldsaSignature, Error> {
        let mut sig = vec![0u8; MLDSA65_SIGNATURE_LEN];
        let len = self
            .inner
            .sign(message, &mut sig)
            .map_err(|_| Error::MldsaKey("signing"))?;
        assert_eq!(
            len, MLDSA65_SIGNATURE_LEN,
            "ML-DSA-65 signatures have one length"
        );
        Ok(MldsaSignature(sig.into_boxed_slice()))
    }
}

/// An ML-DSA-65 public key, parsed and validated once.
///
/// Its encoding is a DER SubjectPublicKeyInfo with algorithm [`OID_ML_DSA_65`] and no
/// parameters (the form of draft-ietf-lamps-dilithium-certificates / RFC 9881), which is
/// also the value of the certificate extension.
#[derive(Clone)]
pub struct MldsaPublicKey {
    spki_der: Box<[u8]>,
    parsed: ParsedPublicKey,
}

impl MldsaPublicKey {
    /// Parses a DER SubjectPublicKeyInfo; fails unless it is exactly one well-formed
    /// ML-DSA-65 key with nothing after it.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, CertProblem> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| CertProblem::BadMldsaKey(format!("not a SubjectPublicKeyInfo: {e}")))?;
        if !rest.is_empty() {
            return Err(CertProblem::BadMldsaKey(format!(
                "{} trailing bytes after the SubjectPublicKeyInfo",
                rest.len()
            )));
        }
        if !oid_is(&spki.algorithm.algorithm, OID_ML_DSA_65) {
            return Err(CertProblem::BadMldsaKey(format!(
                "algorithm is {}, not id-ml-dsa-65",
                spki.algorithm.algorithm
            )));
        }
        if spki.algorithm.parameters.is_some() {
            return Err(CertProblem::BadMldsaKey(
                "id-ml-dsa-65 must have absent parameters".to_owned(),
            ));
        }
        let raw_len = spki.subject_public_key.data.len();
        if raw_len != MLDSA65_PUBLIC_KEY_LEN {
            return Err(CertProblem::BadMldsaKey(format!(
                "public key is {raw_len} bytes, ML-DSA-65 keys are {MLDSA65_PUBLIC_KEY_LEN}"
            )));
        }
        let parsed = ParsedPublicKey::new(&ML_DSA_65, der)
            .map_err(|e| CertProblem::BadMldsaKey(format!("rejected by aws-lc-rs: {e}")))?;
        Ok(Self {
            spki_der: der.into(),
            parsed,
        })
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Verifies `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature: &MldsaSignature) -> Result<(), Error> {
        self.parsed
            .verify_sig(message, &signature.0)
            .map_err(|_| Error::SignatureInvalid)
    }
}

impl PartialEq for MldsaPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki_der == other.spki_der
    }
}

impl Eq for MldsaPublicKey {}

impl fmt::Debug for MldsaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 1952 bytes are useless in a log; the first bytes of a digest identify the key.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.spki_der);
        write!(f, "MldsaPublicKey(sha256:")?;
        for b in &digest.as_ref()[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// An ML-DSA-65 signature: exactly [`MLDSA65_SIGNATURE_LEN`] bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct MldsaSignature(Box<[u8]>);

impl MldsaSignature {
    /// The signature bytes, for putting on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<&[u8]> for MldsaSignature {
    type Error = Error;

    fn try_from(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() == MLDSA65_SIGNATURE_LEN {
            Ok(Self(bytes.into()))
        } else {
            Err(Error::SignatureLength {
                expected: MLDSA65_SIGNATURE_LEN,
                got: bytes.len(),
            })
        }
    }
}

impl fmt::Debug for MldsaSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MldsaSignature({} bytes)", self.0.len())
    }
}

/// The 32-byte TLS exporter output both ends of one TLS session share (see module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChannelBinding(pub [u8; CHANNEL_BINDING_LEN]);

impl fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not secret (both ends know it, and it reveals nothing about traffic keys), but
        // keep logs short.
        write!(f, "ChannelBinding(..)")
    }
}

/// Derives the channel binding of an established TLS connection.
///
/// Fails with [`Error::Tls`] while the handshake is still in progress.
pub fn export_channel_binding(conn: &rustls::Connection) -> Result<ChannelBinding, Error> {
    let out = conn.export_keying_material([0u8; CHANNEL_BINDING_LEN], EXPORTER_LABEL, None)?;
    Ok(ChannelBinding(out))
}

/// Builds the signed transcript (see module docs). Public so that tests and other
/// implementations can reproduce it byte for byte.
pub fn hello_transcript(
    binding: &ChannelBinding,
    signer_role: Side,
    signer: NonZeroU64,
    hello_fields: &[u8],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(
        HELLO_SIGNATURE_CONTEXT.len() + 1 + 8 + CHANNEL_BINDING_LEN + hello_fields.len(),
    );
    t.extend_from_slice(HELLO_SIGNATURE_CONTEXT);
    t.push(match signer_role {
        Side::Client => 0x01,
        Side::Server => 0x02,
    });
    t.extend_from_slice(&signer.get().to_be_bytes());
    t.extend_from_slice(&binding.0);
    t.extend_from_slice(hello_fields);
    t
}

/// Signs this node's HELLO: `key` is our ML-DSA-65 key, `our_role` our side of the TLS
/// connection, `our_id` our node id, `hello_fields` the encoded HELLO fields the signature
/// covers (everything in the HELLO except the signature itself).
pub fn sign_hello(
    key: &MldsaKeyPair,
    binding: &ChannelBinding,
    our_role: Side,
    our_id: NonZeroU64,
    hello_fields: &[u8],
) -> Result<MldsaSignature, Error> {
    key.sign(&hello_transcript(binding, our_role, our_id, hello_fields))
}

/// Verifies the peer's HELLO signature: `peer_key` and `peer_id` come from the peer's
/// certificate ([`crate::PeerCredentials`]), `peer_role` is the peer's side of the TLS
/// connection (the opposite of ours).
pub fn verify_hello(
    peer_key: &MldsaPublicKey,
    binding: &ChannelBinding,
    peer_role: Side,
    peer_id: NonZeroU64,
    hello_fields: &[u8],
    signature: &MldsaSignature,
) -> Result<(), Error> {
    peer_key.verify(
        &hello_transcript(binding, peer_role, peer_id, hello_fields),
        signature,
    )
}

/// Whether `oid` is exactly the arc `want` (false for arcs with components above `u64`).
pub(crate) fn oid_is(oid: &x509_parser::oid_registry::Oid<'_>, want: &[u64]) -> bool {
    oid.iter().is_some_and(|it| it.eq(want.iter().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> NonZeroU64 {
        NonZeroU64::new(n).unwrap()
    }

    #[test]
    fn sign_verify_and_reject() {
        let a = MldsaKeyPair::generate().unwrap();
        let b = MldsaKeyPair::generate().unwrap();
        let sig = a.sign(b"transcript").unwrap();
        assert_eq!(sig.as_bytes().len(), MLDSA65_SIGNATURE_LEN);
        a.public_key().verify(b"transcript", &sig).unwrap();
        assert!(matches!(
            a.public_key().verify(b"transcripT", &sig),
            Err(Error::SignatureInvalid)
        ));
        assert!(matches!(
            b.public_key().verify(b"transcript", &sig),
            Err(Error::SignatureInvalid)
        ));
        assert_ne!(a.public_key(), b.public_key());
    }

    #[test]
    fn public_key_is_an_ml_dsa_65_spki() {
        let k = MldsaKeyPair::generate().unwrap();
        let pk = k.public_key();
        let (_, spki) = SubjectPublicKeyInfo::from_der(pk.spki_der()).unwrap();
        assert!(oid_is(&spki.algorithm.algorithm, OID_ML_DSA_65));
        assert_eq!(spki.subject_public_key.data.len(), MLDSA65_PUBLIC_KEY_LEN);
        // Raw keys and truncated or padded encodings are refused.
        let raw = spki.subject_public_key.data.to_vec();
        assert!(MldsaPublicKey::from_spki_der(&raw).is_err());
        let der = pk.spki_der();
        assert!(MldsaPublicKey::from_spki_der(&der[..der.len() - 1]).is_err());
        let mut padded = der.to_vec();
        padded.push(0);
        assert!(MldsaPublicKey::from_spki_der(&padded).is_err());
    }

    #[test]
    fn pem_round_trip_keeps_the_key() {
        let k = MldsaKeyPair::generate().unwrap();
        let pem_text = k.to_pem().unwrap();
        assert!(pem_text.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = MldsaKeyPair::from_pem(pem_text.as_bytes()).unwrap();
        assert_eq!(back.public_key(), k.public_key());
        let sig = back.sign(b"m").unwrap();
        k.public_key().verify(b"m", &sig).unwrap();
    }

    #[test]
    fn other_algorithms_are_not_ml_dsa_keys() {
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(matches!(
            MldsaKeyPair::from_pem(ec.serialize_pem().as_bytes()),
            Err(FileProblem::BadKey(_))
        ));
        let spki = rcgen::PublicKeyData::subject_public_key_info(&ec);
        assert!(matches!(
            MldsaPublicKey::from_spki_der(&spki),
            Err(CertProblem::BadMldsaKey(_))
        ));
    }

    #[test]
    fn signature_length_is_checked() {
        assert!(matches!(
            MldsaSignature::try_from(&[0u8; 10][..]),
            Err(Error::SignatureLength {
                expected: MLDSA65_SIGNATURE_LEN,
                got: 10
            })
        ));
        assert!(MldsaSignature::try_from(&[0u8; MLDSA65_SIGNATURE_LEN][..]).is_ok());
    }

    #[test]
    fn hello_signature_binds_role_id_binding_and_fields() {
        let k = MldsaKeyPair::generate().unwrap();
        let pk = k.public_key();
        let cb = ChannelBinding([7; 32]);
        let sig = sign_hello(&k, &cb, Side::Client, id(5), b"fields").unwrap();
        verify_hello(&pk, &cb, Side::Client, id(5), b"fields", &sig).unwrap();
        // Each bound input, changed alone, breaks verification.
        assert!(verify_hello(&pk, &cb, Side::Server, id(5), b"fields", &sig).is_err());
        assert!(verify_hello(&pk, &cb, Side::Client, id(6), b"fields", &sig).is_err());
        assert!(
            verify_hello(
                &pk,
                &ChannelBinding([8; 32]),
                Side::Client,
                id(5),
                b"fields",
                &sig
            )
            .is_err()
        );
        assert!(verify_hello(&pk, &cb, Side::Client, id(5), b"field", &sig).is_err());
    }

    #[test]
    fn transcript_layout() {
        let t = hello_transcript(&ChannelBinding([0xAA; 32]), Side::Server, id(0x0102), b"x");
        let n = HELLO_SIGNATURE_CONTEXT.len();
        assert_eq!(&t[..n], HELLO_SIGNATURE_CONTEXT);
        assert_eq!(t[n], 0x02);
        assert_eq!(&t[n + 1..n + 9], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&t[n + 9..n + 41], &[0xAA; 32]);
        assert_eq!(&t[n + 41..], b"x");
    }
}
