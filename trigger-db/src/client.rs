//! The client connector: a `TriggerService` gRPC client over trigger-db's
//! Unix socket, for triggerctl, the system tests and the benchmarks.
//!
//! [`connect`] connects eagerly, so a daemon that is not there fails at once
//! with an error naming the socket and the cause (no such file, connection
//! refused, permission denied) instead of on the first call. Later
//! reconnects (the channel reconnects by itself after the daemon restarts)
//! dial the same path. This module does not retry, time out long-lived
//! streams or interpret replies; it only makes the channel.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use trigger_proto::v1::trigger_service_client::TriggerServiceClient;

use crate::paths;

/// A client of trigger-db over its Unix socket.
pub type Client = TriggerServiceClient<Channel>;

/// Why no channel to trigger-db could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be opened: no such file (daemon not running),
    /// connection refused (stale socket), permission denied.
    #[error("cannot connect to trigger-db at {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The socket accepted, but no HTTP/2 channel could be set up on it.
    #[error("cannot open a gRPC channel to trigger-db at {}", socket.display())]
    Channel {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
}

impl ClientError {
    /// The socket path the failed connection was for.
    pub fn socket(&self) -> &Path {
        match self {
            ClientError::Connect { socket, .. } | ClientError::Channel { socket, .. } => socket,
        }
    }
}

/// The socket triggerctl and the tests use when none is given:
/// `$TRIGGER_DB_SOCKET` if set and not empty, else the daemon's default.
pub fn socket_from_env() -> PathBuf {
    std::env::var_os(paths::SOCKET_ENV)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(paths::default_socket)
}

/// Connects to trigger-db on `socket`, eagerly: the socket is opened and the
/// HTTP/2 connection set up before this returns.
pub async fn connect(socket: &Path) -> Result<Client, ClientError> {
    // Open the socket ourselves first so that the error is the plain
    // io::Error of connect(2), then hand this stream to the first dial.
    let first = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            socket: socket.to_owned(),
            source,
        })?;
    let first = Arc::new(Mutex::new(Some(first)));
    let path = Arc::new(socket.to_owned());
    let channel_err = |source| ClientError::Channel {
        socket: socket.to_owned(),
        source,
    };
    // The URI is required by the API but never dialled: the connector below
    // ignores it.
    let endpoint = Endpoint::try_from("http://[::]:50051").map_err(channel_err)?;
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let first = Arc::clone(&first);
            let path = Arc::clone(&path);
            async move {
                let ready = first.lock().ok().and_then(|mut f| f.take());
                let stream = match ready {
                    Some(s) => s,
                    None => UnixStream::connect(path.as_path()).await?,
                };
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(channel_err)?;
    Ok(TriggerServiceClient::new(channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_socket_names_path_and_cause() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nope.sock");
        let err = connect(&sock).await.unwrap_err();
        assert_eq!(err.socket(), sock);
        let ClientError::Connect { source, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert!(err.to_string().contains("nope.sock"), "{err}");
    }

    #[tokio::test]
    async fn stale_socket_is_connection_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let err = connect(&sock).await.unwrap_err();
        let ClientError::Connect { source, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
