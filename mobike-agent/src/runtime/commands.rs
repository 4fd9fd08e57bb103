//! What the runtime loop does with the control socket's requests, between
//! two engine steps: a [`StatusSnapshot`] of the engine's IKE SAs, and
//! [`ControlCommand`]s carried out as engine [`Command`]s (the datagrams
//! they queue go out with the next flush). Starting a connection as
//! initiator ([`initiate`]) is here too, shared with the loop's own starts
//! and restarts.

use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use tracing::warn;

use crate::{
    config_file::Backend,
    control::{ControlCommand, Counters, Refused, Selector, StatusSnapshot},
    engine::{Command, CommandError, Endpoint, IkeSaInfo},
};

/// Every IKE SA of `ep` now, with the CHILD_SA counters the kernel backend
/// read.
pub(super) fn snapshot(ep: &Endpoint, backend: Backend, counters: Counters) -> StatusSnapshot {
    let at = Instant::now();
    StatusSnapshot {
        at,
        wall: std::time::SystemTime::now(),
        ike_sas: ep.ike_sas(),
        backend,
        counters,
        mobility: None,
        stats: ep.stats().clone(),
    }
}

/// Carries out a control command on the engine and says which IKE SAs it
/// acted on (for `Initiate`, the ones it started). `listening_on` says
/// whether an IKE socket can send from a local address.
pub(super) fn execute(
    ep: &mut Endpoint,
    now: Instant,
    cmd: ControlCommand,
    listening_on: impl Fn(IpAddr) -> bool,
) -> Result<Vec<IkeSaInfo>, Refused> {
    if let ControlCommand::UpdateAddresses { local, .. } = &cmd
        && !listening_on(*local)
    {
        return Err(Refused::NotListening(*local));
    }
    let before = ep.ike_sas();
    let chosen = |sel: Selector| -> Result<Vec<IkeSaInfo>, Refused> {
        let v: Vec<IkeSaInfo> = before
            .iter()
            .filter(|i| match &sel {
                Selector::Connection(c) => &i.connection == c,
                Selector::Spi(s) => i.spi_i == *s || i.spi_r == *s,
            })
            .cloned()
            .collect();
        if v.is_empty() {
            return Err(Refused::NoMatch(sel));
        }
        Ok(v)
    };
    match cmd {
        ControlCommand::Initiate(connection) => {
            initiate(ep, now, &connection)?;
            Ok(ep
                .ike_sas()
                .into_iter()
                .filter(|i| !before.iter().any(|b| b.id == i.id))
                .collect())
        }
        ControlCommand::Terminate(sel) => {
            let v = chosen(sel)?;
            for i in &v {
                ep.handle_command(now, Command::DeleteIkeSa(i.id))?;
            }
            Ok(v)
        }
        ControlCommand::Rekey {
            select,
            child_spi_in,
        } => {
            let v = chosen(select)?;
            for i in &v {
                let cmd = match child_spi_in {
                    Some(inbound_spi) => Command::RekeyChildSa {
                        sa: i.id,
                        inbound_spi,
                    },
                    None => Command::RekeyIkeSa(i.id),
                };
                ep.handle_command(now, cmd)?;
            }
            Ok(v)
        }
        ControlCommand::UpdateAddresses {
            select,
            local,
            remote,
        } => {
            let v = chosen(select)?;
            for i in &v {
                let remote = remote.unwrap_or(i.path.remote.ip());
                if local.is_ipv4() != remote.is_ipv4() {
                    return Err(Refused::MixedFamilies { local, remote });
                }
                // The ports in use (4500 once floated) stay.
                let cmd = Command::UpdateAddresses {
                    sa: i.id,
                    local: SocketAddr::new(local, i.path.local.port()),
                    remote: SocketAddr::new(remote, i.path.remote.port()),
                    fallback: Vec::new(),
                };
                ep.handle_command(now, cmd)?;
            }
            Ok(v)
        }
    }
}

/// Starts the connection `name` as initiator. Without a configured local
/// address ("any"), the source the kernel would use towards the peer is
/// taken (RFC 7296 §2.23 NAT detection hashes the exact address).
pub(super) fn initiate(ep: &mut Endpoint, now: Instant, name: &str) -> Result<(), CommandError> {
    let local = match ep.connection(name) {
        Some(c) if c.local_addr.is_none() => match c.remote_addr {
            Some(remote) => match crate::udp::source_towards(remote) {
                Ok(ip) => Some(SocketAddr::new(ip, crate::proto::IKE_PORT)),
                Err(e) => {
                    warn!(connection = name, %remote, error = %e, "no route to the peer");
                    None
                }
            },
            None => None,
        },
        _ => None,
    };
    ep.handle_command(
        now,
        Command::Initiate {
            connection: name.to_owned(),
            local,
        },
    )
}
