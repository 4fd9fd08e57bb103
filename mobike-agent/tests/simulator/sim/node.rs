//! One simulated node: an engine, the addresses it has, what it told the
//! outside world, and a model of its kernel SAD built from its kernel
//! actions.

use std::{collections::BTreeMap, net::IpAddr, time::Instant};

use mobike_agent::engine::{
    ChildSaInstall, Command, Endpoint, EndpointConfig, Entropy, Event, KernelAction, Transmit,
};

use super::{mobility::NodeMobility, net::Rng};

/// Seeded SPIs and nonces, so a seed replays the same run (only the DH
/// keys, and so the key bytes, differ between runs).
#[derive(Debug)]
pub struct SeededEntropy(pub Rng);

impl Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for chunk in buf.chunks_mut(8) {
            let v = self.0.next().to_be_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        true
    }
}

/// One endpoint plus what it told the outside world.
#[derive(Debug)]
pub struct Node {
    pub ep: Endpoint,
    /// The addresses it has now, in the order they were added: it receives
    /// what is sent to them and can send only from them.
    pub(super) addrs: Vec<IpAddr>,
    pub events: Vec<Event>,
    /// Kernel SAD model: inbound SPI -> install.
    pub kernel: BTreeMap<u32, ChildSaInstall>,
    pub kernel_log: Vec<KernelAction>,
    /// Every datagram it sent, as sent.
    pub sent: Vec<Transmit>,
    /// The kernel model refuses MIGRATE: the SA stays where it was and
    /// the engine is told ([`Command::MigrateFailed`]), as the runtime does.
    pub refuse_migrate: bool,
    /// The mobility manager, if the node runs one (see [`Sim::with_mobility`]).
    ///
    /// [`Sim::with_mobility`]: super::Sim::with_mobility
    pub mobility: Option<NodeMobility>,
}

impl Node {
    pub(super) fn new(cfg: EndpointConfig, addr: IpAddr, entropy_seed: u64) -> Self {
        Node {
            ep: Endpoint::with_entropy(cfg, Box::new(SeededEntropy(Rng::new(entropy_seed))))
                .expect("endpoint"),
            addrs: vec![addr],
            events: Vec::new(),
            kernel: BTreeMap::new(),
            kernel_log: Vec::new(),
            sent: Vec::new(),
            refuse_migrate: false,
            mobility: None,
        }
    }

    /// The addresses it has now.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    pub fn has_addr(&self, addr: IpAddr) -> bool {
        self.addrs.contains(&addr)
    }

    /// Collects events (initiating on a restart, as the runtime does),
    /// applies kernel actions to the kernel model (checking each is
    /// consistent with it) and returns the datagrams to send.
    pub(super) fn drain(&mut self, now: Instant) -> Vec<Transmit> {
        // As the runtime: the events go to the mobility manager, then it
        // drives the engine; its commands queue events of their own, so
        // round again until quiet.
        loop {
            let mut fresh = 0;
            while let Some(e) = self.ep.poll_event() {
                fresh += 1;
                if let Event::RestartDue { connection } = &e {
                    let cmd = Command::Initiate {
                        connection: connection.clone(),
                        local: None,
                    };
                    self.ep.handle_command(now, cmd).expect("restart");
                }
                if let Some(m) = self.mobility.as_mut() {
                    m.on_event(&self.ep, &e, now);
                }
                self.events.push(e);
            }
            if let Some(m) = self.mobility.as_mut() {
                m.drive(&mut self.ep, &self.addrs, now);
            }
            if fresh == 0 {
                break;
            }
        }
        while let Some(k) = self.ep.poll_kernel_action() {
            match &k {
                KernelAction::InstallChildSa(i) => {
                    assert!(
                        self.kernel.insert(i.inbound.spi, (**i).clone()).is_none(),
                        "SPI installed twice"
                    );
                }
                KernelAction::MigrateChildSa {
                    inbound_spi,
                    from,
                    to,
                    encap,
                    ..
                } => {
                    let sa = self
                        .kernel
                        .get_mut(inbound_spi)
                        .expect("migrate of an SA never installed");
                    assert_eq!((sa.local, sa.remote), *from, "migrated from where it was");
                    if self.refuse_migrate {
                        let cmd = Command::MigrateFailed {
                            inbound_spi: *inbound_spi,
                        };
                        self.ep.handle_command(now, cmd).expect("migrate failed");
                        self.kernel_log.push(k);
                        continue;
                    }
                    (sa.local, sa.remote) = *to;
                    sa.encap = *encap;
                }
                KernelAction::PrepareInbound { inbound_spi, .. } => {
                    assert!(
                        self.kernel.contains_key(inbound_spi),
                        "inbound copy of an SA never installed"
                    );
                }
                KernelAction::DeleteChildSa { inbound_spi, .. } => {
                    assert!(
                        self.kernel.remove(inbound_spi).is_some(),
                        "delete of an SA never installed"
                    );
                }
            }
            self.kernel_log.push(k);
        }
        let mut v = Vec::new();
        while let Some(t) = self.ep.poll_transmit() {
            self.sent.push(t.clone());
            v.push(t);
        }
        v
    }

    pub fn established(&self) -> usize {
        self.ep
            .ike_sas()
            .iter()
            .filter(|s| s.state == "established")
            .count()
    }

    /// Nothing at all is left: no IKE SA, no half-open, no index entry, no
    /// kernel SA, no virtual IP held.
    pub fn is_clean(&self) -> bool {
        self.ep.ike_sa_count() == 0
            && self.ep.init_index_len() == 0
            && self.kernel.is_empty()
            && self.ep.leases_online() == 0
    }
}
