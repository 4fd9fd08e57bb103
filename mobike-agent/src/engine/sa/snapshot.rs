//! Copies of an IKE SA for [`Endpoint::try_clone`]: everything an SA holds
//! is plain data and is copied, except our Diffie-Hellman private key while
//! an IKE_SA_INIT or a CREATE_CHILD_SA with KE of ours is outstanding:
//! ring's ephemeral private keys cannot be copied (by design, they are
//! used once), so an SA holding one has no copy; the copy could not
//! complete the exchange as the original would. A key shared between the
//! two would not do either: only one of them could use it.

#[cfg(doc)]
use crate::engine::Endpoint;

use super::{
    IkeSa, InitState, Window,
    request::{BuiltRequest, ChildOffer, SentRequest},
};

impl IkeSa {
    /// An independent IKE SA in the same state; None while it holds a
    /// Diffie-Hellman private key.
    pub(in crate::engine) fn try_clone(&self) -> Option<Self> {
        Some(IkeSa {
            id: self.id,
            conn: self.conn,
            initiator: self.initiator,
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            state: self.state,
            path: self.path,
            peer_mobike: self.peer_mobike,
            local_auth: self.local_auth,
            remote_auth: self.remote_auth,
            peer_cert: self.peer_cert.clone(),
            children: self.children.clone(),
            window: self.window.try_clone()?,
            crypto: self.crypto.clone(),
            init: self.init.try_clone()?,
            nat: self.nat.clone(),
            rekey: self.rekey.clone(),
            life: self.life.clone(),
            vips: self.vips.clone(),
            addrs: self.addrs.clone(),
            moving: self.moving.clone(),
        })
    }
}

impl Window {
    fn try_clone(&self) -> Option<Self> {
        Some(Window {
            next_msg_id: self.next_msg_id,
            in_flight: match &self.in_flight {
                Some(r) => Some(r.try_clone()?),
                None => None,
            },
            queue: self.queue.clone(),
            peer_next_msg_id: self.peer_next_msg_id,
            cached_response: self.cached_response.clone(),
            reply_path: self.reply_path,
            answer_path: self.answer_path,
        })
    }
}

impl InitState {
    fn try_clone(&self) -> Option<Self> {
        if self.share.is_some() {
            return None;
        }
        Some(InitState {
            share: None,
            request: self.request.clone(),
            response: self.response.clone(),
            cookie: self.cookie.clone(),
            restarts: self.restarts,
            half_open_peer: self.half_open_peer,
            initial_contact: self.initial_contact,
            peer_error: self.peer_error,
            peer_hashes: self.peer_hashes.clone(),
            peer_certreq: self.peer_certreq.clone(),
        })
    }
}

impl ChildOffer {
    fn try_clone(&self) -> Option<Self> {
        if self.share.is_some() {
            return None;
        }
        Some(ChildOffer {
            cfg: self.cfg,
            spi: self.spi,
            nonce: self.nonce.clone(),
            share: None,
            rekey_of: self.rekey_of,
            local_ts: self.local_ts.clone(),
            remote_ts: self.remote_ts.clone(),
        })
    }
}

impl BuiltRequest {
    fn try_clone(&self) -> Option<Self> {
        Some(match self {
            BuiltRequest::Auth(offer) => BuiltRequest::Auth(match offer {
                Some(o) => Some(o.try_clone()?),
                None => None,
            }),
            BuiltRequest::Dpd => BuiltRequest::Dpd,
            BuiltRequest::DeleteIke(reason) => BuiltRequest::DeleteIke(*reason),
            BuiltRequest::DeleteChild(spis) => BuiltRequest::DeleteChild(spis.clone()),
            BuiltRequest::CreateChild(offer) => BuiltRequest::CreateChild(offer.try_clone()?),
            // Its offer always holds a key share.
            BuiltRequest::RekeyIke(_) => return None,
            BuiltRequest::UpdateAddresses {
                old,
                cookie2,
                rest,
                unanswered,
                moved_early,
            } => BuiltRequest::UpdateAddresses {
                old: *old,
                cookie2: cookie2.clone(),
                rest: rest.clone(),
                unanswered: unanswered.clone(),
                moved_early: *moved_early,
            },
            BuiltRequest::PathTest(test) => BuiltRequest::PathTest(test.clone()),
            BuiltRequest::AnnounceAddresses => BuiltRequest::AnnounceAddresses,
            BuiltRequest::ReturnRoutability { cookie2 } => BuiltRequest::ReturnRoutability {
                cookie2: cookie2.clone(),
            },
        })
    }
}

impl SentRequest {
    fn try_clone(&self) -> Option<Self> {
        Some(SentRequest {
            msg_id: self.msg_id,
            exchange: self.exchange,
            bytes: self.bytes.clone(),
            request: match &self.request {
                Some(r) => Some(r.try_clone()?),
                None => None,
            },
            sent: self.sent,
            next: self.next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_pair::{A, endpoint, established, shuttle};
    use crate::engine::{Command, Endpoint, Entropy};

    #[test]
    fn a_copy_answers_as_the_original_and_apart_from_it() {
        let (now, mut a, mut b) = established();
        let mut copy = b.try_clone().expect("nothing pending on B");
        assert_eq!(copy.ike_sas(), b.ike_sas());
        assert_eq!(copy.stats(), b.stats());
        assert!(copy.indexes_agree());

        let id = a.ike_sas()[0].id;
        a.handle_command(now, Command::Dpd(id)).unwrap();
        let req = a.poll_transmit().expect("A's liveness check");
        copy.handle_datagram(now, req.remote, req.local, &req.payload);
        let from_copy = copy.poll_transmit().expect("the copy answers");
        assert!(b.poll_transmit().is_none(), "the original saw nothing");
        assert_ne!(copy.stats(), b.stats());
        assert_ne!(
            copy.ike_sas()[0].next_peer_request_id,
            b.ike_sas()[0].next_peer_request_id
        );

        // The original, given the same request, answers byte for byte the
        // same: same keys, message IDs and IV counter.
        b.handle_datagram(now, req.remote, req.local, &req.payload);
        let from_b = b.poll_transmit().expect("the original answers");
        assert_eq!(from_copy, from_b);
        assert_eq!(copy.ike_sas(), b.ike_sas());

        // And A takes the copy's answer: its keys work.
        a.handle_datagram(now, from_copy.remote, from_copy.local, &from_copy.payload);
        assert_eq!(a.stats().integrity_failures, 0);
        assert_eq!(a.stats().unexpected, 0);
        assert_eq!(a.ike_sas()[0].state, "established");
    }

    #[test]
    fn no_copy_while_our_dh_key_waits_for_the_answer() {
        let now = std::time::Instant::now();
        let mut a = endpoint(A);
        assert!(a.try_clone().is_some(), "no SA yet");
        a.handle_command(
            now,
            Command::Initiate {
                connection: "ab".into(),
                local: None,
            },
        )
        .unwrap();
        assert!(a.try_clone().is_none(), "IKE_SA_INIT out");

        let (now, mut a, mut b) = established();
        let id = a.ike_sas()[0].id;
        a.handle_command(now, Command::RekeyIkeSa(id)).unwrap();
        assert!(a.try_clone().is_none(), "IKE SA rekey out");
        assert!(b.try_clone().is_some());
        shuttle(now, &mut a, &mut b);
        assert!(a.try_clone().is_some(), "rekey done");
    }

    #[test]
    fn no_copy_of_an_entropy_source_that_cannot_be_copied() {
        #[derive(Debug)]
        struct Ones;
        impl Entropy for Ones {
            fn fill(&mut self, buf: &mut [u8]) -> bool {
                buf.fill(1);
                true
            }
        }
        let cfg = endpoint(A).config().clone();
        let e = Endpoint::with_entropy(cfg, Box::new(Ones)).unwrap();
        assert!(e.try_clone().is_none());
    }
}
