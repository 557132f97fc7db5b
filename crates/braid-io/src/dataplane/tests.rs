//! Steering between workers without threads: the hand-off, the stash that keeps a flow in
//! order when a lane is full, and the "more work waiting" signal that keeps a worker from
//! sleeping on a half-read lane.

use std::os::unix::net::UnixDatagram;

use braid_core::engine::{EngineConfig, NicSpec};
use braid_core::rss::ToeplitzKey;

use super::*;
use crate::channel::PacketBuf;
use crate::pipe::PipePort;

fn worker(st: Steering) -> (Dataplane, UnixDatagram) {
    let cfg = EngineConfig::new(vec![NicSpec::udp_ipv4(NicId(0), "n0", 1_000_000_000, 1500)]);
    let engine = Engine::new(cfg, now()).expect("engine");
    let (vnic, app) = PipePort::pair(9000, 4096).expect("pair");
    app.set_nonblocking(true).expect("nonblocking");
    let dp = Dataplane::new(
        engine,
        Vec::new(),
        vec![Box::new(vnic) as Box<dyn NicTransport>],
        Rss::new(ToeplitzKey::MICROSOFT, 2).expect("rss"),
        DataplaneConfig::default(),
    )
    .expect("dataplane")
    .with_steering(st)
    .expect("one queue");
    (dp, app)
}

fn pair() -> ((Dataplane, UnixDatagram), (Dataplane, UnixDatagram)) {
    let mut st = Steering::build(2, 2048).expect("build");
    let s1 = st.pop().expect("two");
    let s0 = st.pop().expect("two");
    (worker(s0), worker(s1))
}

/// Packet `i`: 100 bytes that say `i`.
fn pkt(steer: &mut Steering, i: u32) -> PacketBuf {
    let mut b = steer.pool.alloc().expect("a buffer");
    let mut bytes = [0u8; 100];
    bytes[..4].copy_from_slice(&i.to_be_bytes());
    b.fill_from(&bytes).expect("fits");
    b
}

/// Everything the application side of a pipe has, as packet numbers.
fn received(app: &UnixDatagram) -> Vec<u32> {
    let mut out = Vec::new();
    let mut buf = [0u8; 200];
    while let Ok(n) = app.recv(&mut buf) {
        assert_eq!(n, 100);
        out.push(u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")));
    }
    out
}

#[test]
fn a_worker_with_more_handles_than_one_turn_takes_does_not_sleep() {
    let ((mut w0, _app0), (mut w1, app1)) = pair();
    let s0 = w0.steer.as_mut().expect("steered");
    // More than one turn's worth (4 × 256), within the lane (1024) plus what w1 frees.
    let n = u32::try_from(steer::INBOX * steer::INBOX_TURNS).expect("small") - 24;
    for i in 0..n {
        let b = pkt(s0, i);
        assert!(s0.hand_off(1, b), "room in the lane");
    }
    let s1 = w1.steer.as_mut().expect("steered");
    assert!(s1.has_work(), "handles wait: sleep must not wait");
    w1.read_steered();
    assert!(!w1.steer.as_mut().expect("steered").has_work());
    assert_eq!(received(&app1), (0..n).collect::<Vec<_>>(), "all, in order");

    // A lane refilled beyond one turn: the first turn leaves work, which `has_work` reports.
    let s0 = w0.steer.as_mut().expect("steered");
    s0.pool.reclaim();
    for i in 0..1024 {
        let b = pkt(s0, i);
        assert!(s0.hand_off(1, b));
    }
    let s1 = w1.steer.as_mut().expect("steered");
    assert!(s1.has_work());
    w1.read_steered();
    assert_eq!(received(&app1).len(), 1024);
    assert!(!w1.steer.as_mut().expect("steered").has_work());
}

#[test]
fn a_full_lane_stashes_the_packet_and_nothing_overtakes_it() {
    let ((mut w0, _app0), (mut w1, app1)) = pair();
    let s0 = w0.steer.as_mut().expect("steered");
    let mut i = 0u32;
    // Fill the lane.
    loop {
        let b = pkt(s0, i);
        if !s0.hand_off(1, b) {
            break;
        }
        i += 1;
    }
    assert_eq!(i as usize, steer::LANE_CAPACITY);
    assert_eq!(s0.stats.lane_full, 1);
    assert!(s0.has_work(), "a stashed packet keeps the worker awake");
    // Still full: the stash stays, and must go before anything else.
    assert!(!s0.retry_stash());
    w1.read_steered();
    let s0 = w0.steer.as_mut().expect("steered");
    assert!(s0.retry_stash(), "room now");
    assert!(!s0.has_work());
    let b = pkt(s0, i + 1);
    assert!(s0.hand_off(1, b));
    w1.read_steered();
    let got = received(&app1);
    assert_eq!(got, (0..=i + 1).collect::<Vec<_>>(), "in order, none lost");
}
