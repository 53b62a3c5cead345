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
    #[error("the server closed the connection without an ACK")]
    Closed,
    #[error("no ACK within {0:?}")]
    Timeout(Duration),
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
