//! An eager gRPC channel over a Unix socket.
//!
//! [`connect`] opens the socket with connect(2) before it returns, so a
//! server that is not there fails at once with an error naming the socket
//! and the io error (no such file, connection refused, permission denied)
//! instead of on the first call. Later reconnects (the channel reconnects by
//! itself after the server restarts) dial the same path.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Why no channel could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket could not be opened: no such file (server not running),
    /// connection refused (stale socket), permission denied.
    #[error("cannot connect to {service} at {}", socket.display())]
    Connect {
        /// What serves on the socket, for the message.
        service: &'static str,
        /// Socket path.
        socket: PathBuf,
        /// The error of connect(2).
        #[source]
        source: std::io::Error,
    },
    /// The socket accepted, but no HTTP/2 channel could be set up on it.
    #[error("cannot open a gRPC channel to {service} at {}", socket.display())]
    Channel {
        /// What serves on the socket, for the message.
        service: &'static str,
        /// Socket path.
        socket: PathBuf,
        /// Cause.
        #[source]
        source: tonic::transport::Error,
    },
}

impl ConnectError {
    /// The socket path the failed connection was for.
    pub fn socket(&self) -> &Path {
        match self {
            ConnectError::Connect { socket, .. } | ConnectError::Channel { socket, .. } => socket,
        }
    }
}

/// Connects to `service` (a name for error messages) on `socket`, eagerly:
/// the socket is opened and the HTTP/2 connection set up before this
/// returns.
pub async fn connect(service: &'static str, socket: &Path) -> Result<Channel, ConnectError> {
    connect_with(service, socket, |e| e).await
}

/// [`connect`] with HTTP/2 settings of the caller's (`configure` gets the
/// endpoint before it is connected; e.g. window sizes).
pub async fn connect_with(
    service: &'static str,
    socket: &Path,
    configure: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, ConnectError> {
    // Open the socket ourselves first so that the error is the plain
    // io::Error of connect(2), then hand this stream to the first dial.
    let first = UnixStream::connect(socket)
        .await
        .map_err(|source| ConnectError::Connect {
            service,
            socket: socket.to_owned(),
            source,
        })?;
    let first = Arc::new(Mutex::new(Some(first)));
    let path = Arc::new(socket.to_owned());
    let channel_err = |source| ConnectError::Channel {
        service,
        socket: socket.to_owned(),
        source,
    };
    // The URI is required by the API but never dialled: the connector below
    // ignores it.
    let endpoint = configure(Endpoint::try_from("http://[::]:50051").map_err(channel_err)?);
    endpoint
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
        .map_err(channel_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_socket_names_path_and_cause() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nope.sock");
        let err = connect("trigger-db", &sock).await.unwrap_err();
        assert_eq!(err.socket(), sock);
        let ConnectError::Connect { source, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            format!("cannot connect to trigger-db at {}", sock.display())
        );
    }

    #[tokio::test]
    async fn stale_socket_is_connection_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let err = connect("trigger-db", &sock).await.unwrap_err();
        let ConnectError::Connect { source, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
