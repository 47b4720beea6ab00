//! TLS for mesh links: the handshake on a fresh TCP connection, then the session's
//! [`ChannelSecurity`] — the exporter value that binds HELLO signatures to this connection, the
//! peer's certificate facts, and the ML-DSA-65 signer/verifier from `mesh-tls`.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use glommio::net::TcpStream;
use mesh_session::{
    AuthError, ChannelSecurity, HandshakeCrypto, PeerCredentials, Side, TlsChannel,
};
use mesh_tls::mldsa::{sign_hello, verify_hello};
use mesh_tls::{
    ChannelBinding, ExpectedPeer, MeshTlsConfig, MldsaPublicKey, MldsaSignature, NodeIdentity,
    TlsStream, client_connection, server_connection,
};

/// What a node needs to speak TLS on its links.
#[derive(Debug, Clone)]
pub struct TlsContext {
    /// rustls client and server configurations (TLS 1.3, X25519MLKEM768, mesh CA).
    pub config: MeshTlsConfig,
    /// This node's certificate, TLS key and ML-DSA-65 key.
    pub identity: Arc<NodeIdentity>,
}

/// Why a TLS handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsHandshakeError {
    /// The handshake did not finish within the deadline.
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
    /// TLS refused the peer (certificate, CA, expiry, node id) or the transport failed.
    #[error("TLS handshake failed: {0}")]
    Tls(#[from] mesh_tls::Error),
}

/// Runs the TLS handshake on `tcp` as `side` (initiators are TLS clients) within `deadline`,
/// and returns the stream and the session's channel security.
pub(crate) async fn handshake(
    ctx: &TlsContext,
    tcp: TcpStream,
    side: Side,
    deadline: Duration,
) -> Result<(TlsStream<TcpStream>, ChannelSecurity), TlsHandshakeError> {
    let conn: mesh_tls::rustls::Connection = match side {
        Side::Initiator => client_connection(&ctx.config.client, ExpectedPeer::AnyNode)?.into(),
        Side::Acceptor => server_connection(&ctx.config.server)?.into(),
    };
    let mut stream = TlsStream::new(tcp, conn);
    let done = glommio::timer::timeout(deadline, async {
        stream
            .handshake()
            .await
            .map_err(|e| glommio::GlommioError::<()>::IoError(std::io::Error::other(e)))
    })
    .await;
    match done {
        Ok(()) => {}
        Err(glommio::GlommioError::TimedOut(_)) => {
            return Err(TlsHandshakeError::Timeout(deadline));
        }
        Err(glommio::GlommioError::IoError(e)) => {
            let inner = e
                .into_inner()
                .and_then(|b| b.downcast::<mesh_tls::Error>().ok())
                .map_or_else(
                    || mesh_tls::Error::Transport(std::io::Error::other("handshake failed")),
                    |b| *b,
                );
            return Err(TlsHandshakeError::Tls(inner));
        }
        Err(other) => {
            return Err(TlsHandshakeError::Tls(mesh_tls::Error::Transport(
                std::io::Error::other(other.to_string()),
            )));
        }
    }
    let creds = stream.peer_credentials()?;
    let binding = stream.channel_binding()?;
    let security = ChannelSecurity::Tls(TlsChannel {
        channel_binding: binding.0,
        peer: PeerCredentials {
            cert_node_id: Some(creds.node_id.get()),
            cert_domain_id: None,
            ml_dsa_public_key: creds.mldsa_public_key.spki_der().to_vec(),
        },
        crypto: Box::new(MldsaCrypto {
            identity: ctx.identity.clone(),
            peer_key: creds.mldsa_public_key,
            binding,
        }),
    });
    Ok((stream, security))
}

/// ML-DSA-65 signing with this node's key and verification with the peer's key from its
/// certificate, over `mesh-tls`'s HELLO transcript (the same bytes as
/// `mesh_session::Transcript::to_bytes`).
struct MldsaCrypto {
    identity: Arc<NodeIdentity>,
    peer_key: MldsaPublicKey,
    binding: ChannelBinding,
}

fn tls_side(side: Side) -> mesh_tls::rustls::Side {
    match side {
        Side::Initiator => mesh_tls::rustls::Side::Client,
        Side::Acceptor => mesh_tls::rustls::Side::Server,
    }
}

impl HandshakeCrypto for MldsaCrypto {
    fn sign(&self, t: &mesh_session::Transcript<'_>) -> Result<Vec<u8>, AuthError> {
        let id = NonZeroU64::new(t.signer_node_id).ok_or(AuthError::SigningFailed {
            detail: "node id 0".into(),
        })?;
        let binding = ChannelBinding(*t.channel_binding);
        sign_hello(
            self.identity.mldsa(),
            &binding,
            tls_side(t.signer_side),
            id,
            t.hello_fields,
        )
        .map(|s| s.as_bytes().to_vec())
        .map_err(|e| AuthError::SigningFailed {
            detail: e.to_string(),
        })
    }

    fn verify(
        &self,
        _peer: &PeerCredentials,
        t: &mesh_session::Transcript<'_>,
        signature: &[u8],
    ) -> Result<(), AuthError> {
        let bad = || AuthError::BadSignature {
            node_id: t.signer_node_id,
            len: signature.len(),
        };
        let id = NonZeroU64::new(t.signer_node_id).ok_or_else(bad)?;
        if t.channel_binding != &self.binding.0 {
            return Err(bad());
        }
        let sig = MldsaSignature::try_from(signature).map_err(|_| bad())?;
        verify_hello(
            &self.peer_key,
            &self.binding,
            tls_side(t.signer_side),
            id,
            t.hello_fields,
            &sig,
        )
        .map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mesh-session` describes the signed HELLO transcript (its test double signs it) and
    /// `mesh-tls` builds it for the real ML-DSA signatures: the two must be the same bytes.
    #[test]
    fn session_and_tls_transcripts_are_the_same_bytes() {
        let binding = [7u8; 32];
        for side in [Side::Initiator, Side::Acceptor] {
            let t = mesh_session::Transcript {
                signer_side: side,
                signer_node_id: 0x0102_0304_0506_0708,
                channel_binding: &binding,
                hello_fields: b"\xa2\x01\x01\x03\x19\x03\xe9",
            };
            let tls = mesh_tls::mldsa::hello_transcript(
                &ChannelBinding(binding),
                tls_side(side),
                NonZeroU64::new(t.signer_node_id).unwrap(),
                t.hello_fields,
            );
            assert_eq!(t.to_bytes(), tls, "{side:?}");
        }
    }
}
