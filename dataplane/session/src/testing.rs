//! Test doubles (feature `testing`, and this crate's own tests). Never in a node binary.
//!
//! [`TestCrypto`] stands in for ML-DSA-65: a "key pair" is one `u64`, the public key is its
//! eight big-endian bytes, and a signature is a deterministic 3,309-byte expansion of
//! (key, transcript). It has the properties the session's rules depend on — a signature
//! verifies only for the same key and the same transcript — and none of the security.

use crate::auth::{
    AuthError, CHANNEL_BINDING_LEN, ChannelSecurity, HandshakeCrypto, PeerCredentials, TlsChannel,
    Transcript,
};
use crate::rng::SplitMix64;

/// Length of a test signature: that of a real ML-DSA-65 signature, so frames have real sizes.
pub const TEST_SIGNATURE_LEN: usize = 3309;

/// A deterministic, insecure signer and verifier keyed by a `u64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCrypto {
    key: u64,
    fail_signing: bool,
}

impl TestCrypto {
    /// A signer holding `key`.
    pub fn new(key: u64) -> Self {
        Self {
            key,
            fail_signing: false,
        }
    }

    /// A signer whose `sign` always fails (to test the `Internal` close).
    pub fn failing_signer(key: u64) -> Self {
        Self {
            key,
            fail_signing: true,
        }
    }

    /// The public key matching `key`, as it would sit in a certificate.
    pub fn public_key(key: u64) -> Vec<u8> {
        key.to_be_bytes().to_vec()
    }

    /// Credentials of a peer whose certificate names `node_id` and carries the public key of
    /// `key`.
    pub fn credentials(node_id: u64, key: u64) -> PeerCredentials {
        PeerCredentials {
            cert_node_id: Some(node_id),
            cert_domain_id: None,
            ml_dsa_public_key: Self::public_key(key),
        }
    }

    /// A complete TLS channel: this node signs with `own_key`; the peer's certificate is
    /// `peer`; both ends of one connection must use the same `channel_binding`.
    pub fn tls(
        own_key: u64,
        channel_binding: [u8; CHANNEL_BINDING_LEN],
        peer: PeerCredentials,
    ) -> ChannelSecurity {
        ChannelSecurity::Tls(TlsChannel {
            channel_binding,
            peer,
            crypto: Box::new(Self::new(own_key)),
        })
    }

    fn expand(key: u64, transcript: &[u8]) -> Vec<u8> {
        // FNV-1a over the transcript, keyed, then stretched with SplitMix64.
        let mut h: u64 = 0xCBF2_9CE4_8422_2325 ^ key;
        for b in transcript {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01B3);
        }
        let mut rng = SplitMix64::new(h);
        let mut sig = Vec::with_capacity(TEST_SIGNATURE_LEN);
        while sig.len() < TEST_SIGNATURE_LEN {
            sig.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        sig.truncate(TEST_SIGNATURE_LEN);
        sig
    }
}

impl HandshakeCrypto for TestCrypto {
    fn sign(&self, transcript: &Transcript<'_>) -> Result<Vec<u8>, AuthError> {
        if self.fail_signing {
            return Err(AuthError::SigningFailed {
                detail: "test signer told to fail".into(),
            });
        }
        Ok(Self::expand(self.key, &transcript.to_bytes()))
    }

    fn verify(
        &self,
        peer: &PeerCredentials,
        transcript: &Transcript<'_>,
        signature: &[u8],
    ) -> Result<(), AuthError> {
        let node_id = peer.cert_node_id.unwrap_or(0);
        let key: [u8; 8] = peer
            .ml_dsa_public_key
            .as_slice()
            .try_into()
            .map_err(|_| AuthError::UnknownKey { node_id })?;
        if Self::expand(u64::from_be_bytes(key), &transcript.to_bytes()) == signature {
            Ok(())
        } else {
            Err(AuthError::BadSignature {
                node_id,
                len: signature.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Side;

    #[test]
    fn verifies_only_same_key_and_transcript() {
        let t = Transcript {
            signer_side: Side::Initiator,
            signer_node_id: 1,
            channel_binding: &[0; 32],
            hello_fields: b"t",
        };
        let u = Transcript {
            hello_fields: b"u",
            ..t
        };
        let c = TestCrypto::new(5);
        let sig = c.sign(&t).unwrap();
        assert_eq!(sig.len(), TEST_SIGNATURE_LEN);
        assert!(c.verify(&TestCrypto::credentials(1, 5), &t, &sig).is_ok());
        assert!(c.verify(&TestCrypto::credentials(1, 6), &t, &sig).is_err());
        assert!(c.verify(&TestCrypto::credentials(1, 5), &u, &sig).is_err());
        assert_eq!(
            c.verify(&PeerCredentials::default(), &t, &sig),
            Err(AuthError::UnknownKey { node_id: 0 })
        );
        assert!(TestCrypto::failing_signer(5).sign(&t).is_err());
    }
}
