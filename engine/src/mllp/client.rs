//! A small MLLP client: used by `orbiter send`, the load generator and the tests.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::codec::{FrameError, MllpCodec};

/// ACKs are small; anything bigger than this from a server is not an ACK.
const MAX_ACK_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("sending: {0}")]
    Send(std::io::Error),
    #[error("reading the ACK: {0}")]
    Receive(#[from] FrameError),
    #[error(
        "the server closed the connection without an ACK (a TLS listener closes connections that do not start with TLS)"
    )]
    Closed,
    #[error("no ACK within {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    /// The TCP connection was made but no TLS handshake came back: a plain MLLP port waits
    /// for a frame and never answers a ClientHello.
    #[error("no TLS handshake from {addr} within {timeout:?}: is it a TLS listener?")]
    TlsTimeout { addr: String, timeout: Duration },
    #[error("bad TLS server name {name:?}: {message}")]
    ServerName { name: String, message: String },
}

/// One MLLP connection.
pub struct MllpClient<S> {
    framed: Framed<S, MllpCodec>,
    timeout: Duration,
}

impl MllpClient<TcpStream> {
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(MllpClient::new(stream, timeout))
    }
}

impl MllpClient<tokio_rustls::client::TlsStream<TcpStream>> {
    /// Connects with TLS (`config` says whom to trust and which certificate to present);
    /// the server's certificate must carry `name`, by default the host of `addr`. `timeout`
    /// bounds the connection and the handshake together.
    pub async fn connect_tls(
        addr: &str,
        config: std::sync::Arc<rustls::ClientConfig>,
        name: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let name = name.unwrap_or_else(|| host.trim_matches(['[', ']']));
        let server_name =
            rustls_pki_types::ServerName::try_from(name.to_string()).map_err(|e| {
                ClientError::ServerName {
                    name: name.to_string(),
                    message: e.to_string(),
                }
            })?;
        // One timeout over both steps, but a handshake that never comes back is told apart
        // from a host that does not answer.
        let started = tokio::time::Instant::now();
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let handshake = tokio_rustls::TlsConnector::from(config).connect(server_name, tcp);
        let stream = tokio::time::timeout(timeout.saturating_sub(started.elapsed()), handshake)
            .await
            .map_err(|_| ClientError::TlsTimeout {
                addr: addr.to_string(),
                timeout,
            })?
            .map_err(|source| ClientError::Tls {
                addr: addr.to_string(),
                source,
            })?;
        Ok(MllpClient::new(stream, timeout))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> MllpClient<S> {
    pub fn new(stream: S, timeout: Duration) -> Self {
        MllpClient {
            framed: Framed::new(stream, MllpCodec::new(MAX_ACK_BYTES)),
            timeout,
        }
    }

    /// Writes one message without waiting for its ACK (for pipelining).
    pub async fn write(&mut self, message: &[u8]) -> Result<(), ClientError> {
        self.framed
            .send(BytesMut::from(message))
            .await
            .map_err(ClientError::Send)
    }

    /// Reads the next ACK.
    pub async fn read_ack(&mut self) -> Result<Bytes, ClientError> {
        match tokio::time::timeout(self.timeout, self.framed.next()).await {
            Err(_) => Err(ClientError::Timeout(self.timeout)),
            Ok(None) => Err(ClientError::Closed),
            Ok(Some(frame)) => Ok(frame?),
        }
    }

    /// Sends one message and waits for its ACK.
    pub async fn send(&mut self, message: &[u8]) -> Result<Bytes, ClientError> {
        self.write(message).await?;
        self.read_ack().await
    }

    pub fn into_inner(self) -> S {
        self.framed.into_inner()
    }
}
