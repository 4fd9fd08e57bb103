//! The client side of the control socket, for the `mobike-agent` CLI: a
//! [`Client`] over trigger-client's eager Unix-socket connector, turning
//! [`ControlCommand`]s into `AgentControl` calls. The printing is in
//! [`super::render`].

use std::path::{Path, PathBuf};

use tonic::transport::Channel;
use trigger_client::ConnectError;
use trigger_proto::mobike_v1::{
    CommandResponse, InitiateRequest, RekeyRequest, SelectRequest, StatusRequest, StatusResponse,
    UpdateAddressesRequest, agent_control_client::AgentControlClient,
};

use super::{ControlCommand, ControlError, Selector};

/// A connection to a running agent's control socket.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    inner: AgentControlClient<Channel>,
}

impl Client {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ControlError> {
        // In the control socket's words (`ControlError`), as the CLI prints them.
        let tmp = std::env::temp_dir();
        let channel = async {
            trigger_client::check_socket_dir("mobike-agent", path, &tmp)?;
            trigger_client::unix::connect("mobike-agent", path).await
        }
        .await
        .map_err(|e| match e {
            ConnectError::Connect { socket, source, .. } => ControlError::Connect {
                path: socket,
                source,
            },
            ConnectError::Channel { socket, source, .. } => ControlError::Channel {
                path: socket,
                source,
            },
        })?;
        Ok(Self {
            path: path.to_owned(),
            inner: AgentControlClient::new(channel),
        })
    }

    fn call_err(&self, verb: &'static str) -> impl FnOnce(tonic::Status) -> ControlError + use<> {
        let path = self.path.clone();
        move |status| ControlError::Call {
            path,
            verb,
            status: Box::new(status),
        }
    }

    /// `Status`.
    pub async fn status(&mut self) -> Result<StatusResponse, ControlError> {
        let err = self.call_err("status");
        self.inner
            .status(StatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(err)
    }

    /// `Initiate`, `Terminate`, `Rekey` or `UpdateAddresses`.
    pub async fn command(&mut self, cmd: ControlCommand) -> Result<CommandResponse, ControlError> {
        let sel = |s: Selector| match s {
            Selector::Connection(connection) => SelectRequest {
                connection,
                ike_spi: 0,
            },
            Selector::Spi(ike_spi) => SelectRequest {
                connection: String::new(),
                ike_spi,
            },
        };
        let (verb, r) = match cmd {
            ControlCommand::Initiate(connection) => (
                "initiate",
                self.inner.initiate(InitiateRequest { connection }).await,
            ),
            ControlCommand::Terminate(s) => ("terminate", self.inner.terminate(sel(s)).await),
            ControlCommand::Rekey {
                select,
                child_spi_in,
            } => (
                "rekey",
                self.inner
                    .rekey(RekeyRequest {
                        select: Some(sel(select)),
                        child_spi_in: child_spi_in.unwrap_or(0),
                    })
                    .await,
            ),
            ControlCommand::UpdateAddresses {
                select,
                local,
                remote,
            } => (
                "update-addresses",
                self.inner
                    .update_addresses(UpdateAddressesRequest {
                        select: Some(sel(select)),
                        local: local.to_string(),
                        remote: remote.map(|r| r.to_string()).unwrap_or_default(),
                    })
                    .await,
            ),
        };
        r.map(tonic::Response::into_inner)
            .map_err(self.call_err(verb))
    }
}

/// Connects to the agent's control socket and asks for its status.
pub async fn status(path: &Path) -> Result<StatusResponse, ControlError> {
    Client::connect(path).await?.status().await
}
