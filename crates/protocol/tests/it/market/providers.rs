//! Providers: owner approvals, stake to register, announced peer addresses.

use gridwork_protocol::{dev_keypair, Event, TxError};
use gridwork_types::{OwnerApproval, TxKind};

use super::support::{gpu_box, provider, Market, CHAIN, PROVIDERS};

#[test]
fn an_owner_approval_must_be_the_owners_signature_for_this_worker_and_chain() {
    let mut m = Market::new();
    let owner = dev_keypair(PROVIDERS + 1);
    let for_someone_else = OwnerApproval::sign(CHAIN, &owner, &provider(2).address());
    let err = m.refused(
        &provider(1),
        TxKind::RegisterProvider {
            hardware: gpu_box(),
            owner: Some(for_someone_else),
        },
    );
    assert!(matches!(err, TxError::BadOwnerApproval { .. }), "{err}");
    let other_chain = OwnerApproval::sign("another-chain", &owner, &provider(1).address());
    let err = m.refused(
        &provider(1),
        TxKind::RegisterProvider {
            hardware: gpu_box(),
            owner: Some(other_chain),
        },
    );
    assert!(matches!(err, TxError::BadOwnerApproval { .. }), "{err}");
    // Claiming an owner with someone else's key in the approval does not verify either.
    let forged = OwnerApproval {
        owner: owner.public(),
        signature: provider(1).sign(&OwnerApproval::message(CHAIN, &provider(1).address())),
    };
    let err = m.refused(
        &provider(1),
        TxKind::RegisterProvider {
            hardware: gpu_box(),
            owner: Some(forged),
        },
    );
    assert!(matches!(err, TxError::BadOwnerApproval { .. }), "{err}");
    assert_eq!(
        m.state.provider(&provider(1).address()).unwrap().owner,
        provider(1).address()
    );
}

#[test]
fn providers_need_stake_to_register() {
    let mut m = Market::new();
    let newcomer = dev_keypair(PROVIDERS + 1);
    let err = m.refused(
        &newcomer,
        TxKind::RegisterProvider {
            hardware: gpu_box(),
            owner: None,
        },
    );
    assert!(matches!(err, TxError::StakeTooLow { .. }), "{err}");
    let err = m.refused(&newcomer, TxKind::Heartbeat);
    assert!(matches!(err, TxError::NotAProvider { .. }), "{err}");
}

#[test]
fn providers_announce_usable_peer_addresses_and_can_withdraw_them() {
    let mut m = Market::new();
    let endpoint = dev_keypair(PROVIDERS + 7).public();
    let peer = |addrs: &[&str]| TxKind::AnnouncePeer {
        peer: gridwork_types::PeerAddr {
            endpoint,
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
        },
    };
    for bad in [
        &["0.0.0.0:7000"][..],
        &["10.0.0.1:0"],
        &["not an address"],
        &[
            "10.0.0.1:1",
            "10.0.0.1:2",
            "10.0.0.1:3",
            "10.0.0.1:4",
            "10.0.0.1:5",
        ],
    ] {
        let err = m.refused(&provider(1), peer(bad));
        assert!(
            matches!(err, TxError::BadPeerAddress { .. }),
            "{bad:?}: {err}"
        );
    }
    let stranger = dev_keypair(PROVIDERS + 2);
    let err = m.refused(&stranger, peer(&["10.0.0.1:7000"]));
    assert!(matches!(err, TxError::NotAProvider { .. }), "{err}");

    let tx = m.tx(&provider(1), peer(&["10.0.0.1:7000", "[fd00::1]:7000"]));
    let events = m.block(vec![tx]);
    assert!(events.contains(&Event::PeerAnnounced {
        provider: provider(1).address()
    }));
    let record = m.state.provider(&provider(1).address()).unwrap();
    assert_eq!(
        record.peer.as_ref().map(|p| (p.endpoint, p.addrs.len())),
        Some((endpoint, 2))
    );
    let tx = m.tx(&provider(1), peer(&[]));
    m.block(vec![tx]);
    assert_eq!(m.state.provider(&provider(1).address()).unwrap().peer, None);
}
