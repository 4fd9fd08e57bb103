//! Configuration reload: unchanged connections keep their SAs, changed and
//! removed ones are taken down.

use std::time::Duration;

use mobike_agent::engine::{Command, CommandError, DeleteReason};

use crate::{
    IKE_1, deleted_reasons, sa_id,
    sim::{LinkModel, Sim, configs},
};

#[test]
fn a_reload_keeps_unchanged_connections_and_replaces_changed_ones() {
    let (a, b) = configs(IKE_1, "aes256gcm16");
    let (a0, b0) = (a.clone(), b.clone());
    let mut s = Sim::new(a, b, 15, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    let first = sa_id(&s, 0);

    // The same configuration: nothing happens to the SA.
    let r = s.nodes[1].ep.reload(s.now, b0.clone());
    assert_eq!(r.unchanged, ["ab"]);
    assert!(r.added.is_empty() && r.changed.is_empty() && r.removed.is_empty());
    s.run_for(Duration::from_secs(10));
    assert!(s.both_established());
    assert_eq!(sa_id(&s, 0), first);

    // B's connection changes (another ESP proposal first): B deletes the
    // IKE SA with A; A's next SA is made with B's new configuration.
    let mut b1 = b0.clone();
    b1.connections[0].children[0].esp_proposals = vec![
        mobike_agent::proposal::EspProposal::parse("chacha20poly1305").unwrap(),
        mobike_agent::proposal::EspProposal::parse("aes256gcm16").unwrap(),
    ];
    let r = s.nodes[1].ep.reload(s.now, b1);
    assert_eq!(r.changed, ["ab"]);
    assert!(s.run_until(Duration::from_secs(30), |s| {
        s.nodes.iter().all(|n| n.ep.ike_sa_count() == 0)
    }));
    assert_eq!(deleted_reasons(&s, 0), [DeleteReason::PeerDeleted]);
    assert_eq!(deleted_reasons(&s, 1), [DeleteReason::Local]);
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    assert!(s.children_pair_up());

    // A gains a connection and loses "ab": its SA goes, the name with it.
    let mut a1 = a0.clone();
    a1.connections[0].name = "other".into();
    let r = s.nodes[0].ep.reload(s.now, a1);
    assert_eq!(
        (r.added.clone(), r.removed.clone()),
        (vec!["other".to_string()], vec!["ab".to_string()])
    );
    assert!(s.run_until(Duration::from_secs(30), |s| {
        s.nodes.iter().all(|n| n.ep.ike_sa_count() == 0)
    }));
    let gone = s.nodes[0].ep.handle_command(
        s.now,
        Command::Initiate {
            connection: "ab".into(),
            local: None,
        },
    );
    assert_eq!(gone, Err(CommandError::UnknownConnection("ab".into())));
    assert!(s.nodes[0].ep.connection("other").is_some());
    assert!(s.all_clean());
}
