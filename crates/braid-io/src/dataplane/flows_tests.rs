//! The handle's flow-table requests on two running workers joined by two in-memory links:
//! a page of TX flows at the sender and RX flows at the receiver, one flow by id, a move
//! with a pin (and where the flow's packets then go), refusals, a NIC taken down (its
//! administrative state in the snapshot, the pinned flow moved off it) and the refusal to
//! take down the last usable NIC.

use std::os::unix::net::UnixDatagram;
use std::thread;
use std::time::Instant as StdInstant;

use braid_core::engine::{
    ClassMatch, ClassPolicy, EngineConfig, FlowClass, FlowDirection, FlowQuery, NicSpec,
};
use braid_core::health::LinkState;
use braid_core::rss::ToeplitzKey;
use braid_core::{FlowId, NicSet};

use super::*;
use crate::pipe::PipePort;

struct Side {
    handle: DataplaneHandle,
    app: UnixDatagram,
    thread: thread::JoinHandle<io::Result<Stopped>>,
}

/// Two NICs; UDP to port 9 is one flow class whose flows the controller puts on one NIC.
fn engine() -> Engine {
    let nics = (0..2)
        .map(|i| NicSpec::udp_ipv4(NicId(i), &format!("n{i}"), 1_000_000_000, 1500))
        .collect();
    let mut cfg = EngineConfig::new(nics);
    // A second of silence before a link is down: the two workers start one after the other
    // on a shared machine, and a link that goes down moves the flows this test places.
    cfg.health.miss_threshold = 200;
    cfg.classes.push(FlowClass::new(
        "one-nic",
        ClassMatch::udp_dst_port(9),
        ClassPolicy::Pin,
    ));
    Engine::new(cfg, now()).expect("engine")
}

fn start(links: Vec<PipePort>) -> Side {
    let (vnic, app) = PipePort::pair(9000, 1024).expect("vnic");
    let nics = links
        .into_iter()
        .enumerate()
        .map(|(i, p)| NicPort {
            id: NicId(u8::try_from(i).expect("small")),
            name: format!("n{i}"),
            transport: Box::new(p),
        })
        .collect();
    let dp = Dataplane::new(
        engine(),
        nics,
        vec![Box::new(vnic) as Box<dyn NicTransport>],
        Rss::new(ToeplitzKey::MICROSOFT, 1).expect("rss"),
        DataplaneConfig::default(),
    )
    .expect("dataplane");
    let handle = dp.handle();
    Side {
        handle,
        app,
        thread: thread::spawn(move || dp.run()),
    }
}

fn stop(side: Side) -> Stopped {
    side.handle.stop();
    side.thread.join().expect("no panic").expect("ran")
}

/// A UDP/IPv4 packet 10.0.0.1:`sport` → 10.0.0.2:9 with 100 bytes of payload (128 bytes).
fn udp(sport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 128];
    braid_wire::ip::emit_udp_ipv4(
        &mut p,
        std::net::Ipv4Addr::new(10, 0, 0, 1),
        std::net::Ipv4Addr::new(10, 0, 0, 2),
        sport,
        9,
        0,
    )
    .expect("emit");
    p
}

/// Receive `n` packets at the application side of `side` (2 s at most each).
fn receive(side: &Side, n: usize) {
    side.app
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    for i in 0..n {
        side.app
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("packet {i} of {n}: {e}"));
    }
}

/// Poll `f` until it returns `Some` (2 s at most).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = StdInstant::now() + Duration::from_secs(2);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(StdInstant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Payload bytes each NIC of `side` has sent, from its latest snapshot.
fn payload(side: &Side) -> Vec<u64> {
    let snap = side.handle.snapshot().expect("snapshot");
    snap.nics
        .iter()
        .map(|n| n.engine.tx_payload_bytes_count)
        .collect()
}

#[test]
fn the_handle_lists_moves_and_pins_flows_and_reports_admin_state() {
    let mut a_links = Vec::new();
    let mut b_links = Vec::new();
    for _ in 0..2 {
        let (x, y) = PipePort::connected(1500, 256).expect("link");
        a_links.push(x);
        b_links.push(y);
    }
    let (a, b) = (start(a_links), start(b_links));
    for side in [&a, &b] {
        eventually("links up and measured", || {
            let snap = side.handle.snapshot()?;
            snap.nics
                .iter()
                .all(|n| {
                    n.link
                        .is_some_and(|l| l.state == LinkState::Up && !l.srtt.is_zero())
                })
                .then_some(())
        });
    }
    for _ in 0..3 {
        a.app.send(&udp(40_000)).expect("send");
    }
    a.app.send(&udp(40_001)).expect("send");
    receive(&b, 4);

    // The sender's TX flows and the receiver's RX flows, in pages.
    let tx = a.handle.flows(FlowQuery::default()).expect("answered");
    assert_eq!(tx.len(), 2, "{tx:?}");
    assert!(tx.iter().all(|r| r.direction == FlowDirection::Tx));
    let f = tx
        .iter()
        .find(|r| r.key.is_some_and(|k| k.src_port == 40_000))
        .expect("flow from 40000")
        .clone();
    assert_eq!((f.packets, f.bytes), (Some(3), Some(3 * 128)));
    assert_eq!(f.class_name.as_deref(), Some("one-nic"));
    assert_eq!(f.nics.len(), 1);
    let page = a
        .handle
        .flows(FlowQuery {
            limit: 1,
            ..FlowQuery::default()
        })
        .expect("answered");
    assert_eq!(page.len(), 2, "one row and the extra one");
    let rx = eventually("two RX flows", || {
        let rows = b
            .handle
            .flows(FlowQuery {
                direction: Some(FlowDirection::Rx),
                ..FlowQuery::default()
            })
            .expect("answered");
        (rows.len() == 2).then_some(rows)
    });
    let f_rx = rx.iter().find(|r| r.id == f.id).expect("same id");
    assert_eq!(f_rx.key, f.key);
    assert_eq!(f_rx.packets, Some(3));
    // One flow, by table and id.
    let one = a.handle.flow(FlowDirection::Tx, f.id).expect("answered");
    assert_eq!(one.map(|r| (r.id, r.key)), Some((f.id, f.key)));
    assert_eq!(a.handle.flow(FlowDirection::Rx, f.id), Some(None));

    // Move it to the other NIC and pin it: its packets go there.
    let from = f.nics.iter().next().expect("a NIC");
    let to = NicId(1 - from.0);
    let mv = |flow, nic, pin| Command::MoveFlow { flow, nic, pin };
    assert_eq!(a.handle.apply(mv(f.id, to, true)), Some(Ok(())));
    let moved = a
        .handle
        .flow(FlowDirection::Tx, f.id)
        .expect("answered")
        .expect("there");
    assert_eq!(moved.nics, NicSet::single(to));
    assert!(moved.pinned);
    let on_to = a
        .handle
        .flows(FlowQuery {
            nic: Some(to),
            ..FlowQuery::default()
        })
        .expect("answered");
    assert!(on_to.iter().any(|r| r.id == f.id));
    // Snapshots are published every 200 ms: wait for one with the first 4 packets.
    let before = eventually("a snapshot with the first packets", || {
        let p = payload(&a);
        (p.iter().sum::<u64>() == 4 * 128).then_some(p)
    });
    for _ in 0..5 {
        a.app.send(&udp(40_000)).expect("send");
    }
    receive(&b, 5);
    let after = eventually("a snapshot with the 5 packets", || {
        let p = payload(&a);
        (p.iter().sum::<u64>() == 9 * 128).then_some(p)
    });
    assert_eq!(
        after[usize::from(to.0)] - before[usize::from(to.0)],
        5 * 128
    );
    assert_eq!(after[usize::from(from.0)], before[usize::from(from.0)]);

    // Refusals through the handle.
    let unknown = FlowId(f.id.0 ^ 0x8000_0000);
    assert_eq!(
        a.handle.apply(mv(unknown, to, false)),
        Some(Err(CommandError::UnknownFlow(unknown)))
    );
    assert!(matches!(
        b.handle.apply(mv(f.id, to, false)),
        Some(Err(CommandError::FlowNotMovable { .. }))
    ));

    // Taking its NIC down moves the pinned flow off it, and the snapshot says so.
    let down = |nic| Command::SetNicAdmin { nic, up: false };
    assert_eq!(a.handle.apply(down(to)), Some(Ok(())));
    let row = a
        .handle
        .flow(FlowDirection::Tx, f.id)
        .expect("answered")
        .expect("there");
    assert_eq!(row.nics, NicSet::single(from));
    assert!(!row.pinned, "failover cleared the pin");
    let admin = eventually("the snapshot's admin state", || {
        let snap = a.handle.snapshot()?;
        let admin: Vec<bool> = snap.nics.iter().map(|n| n.admin_up).collect();
        (!admin[usize::from(to.0)]).then_some(admin)
    });
    assert!(admin[usize::from(from.0)], "{admin:?}");
    assert_eq!(
        a.handle.apply(down(from)),
        Some(Err(CommandError::LastUsableNic(from)))
    );
    let sa = stop(a);
    let _ = stop(b);
    assert_eq!(
        sa.engine.nic_admin_up(from),
        Some(true),
        "refused: still up"
    );
    assert_eq!(sa.engine.controller().stats().operator_moves, 1);
}
