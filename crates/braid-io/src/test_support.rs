//! Helpers shared by the transports' unit tests (UDP, AF_PACKET): a packet pattern, a bounded
//! receive loop, and send-everything. Test-only; owns nothing else.

use std::time::{Duration, Instant};

use crate::transport::{NicTransport, RxBatch};

/// A packet of `len` bytes whose content depends on `tag`.
pub(crate) fn pkt(len: usize, tag: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (tag as usize * 31 + i * 7) as u8 ^ (tag >> 8) as u8)
        .collect()
}

/// Receive until `n` packets arrived or 2 s passed.
pub(crate) fn recv_n(t: &mut impl NicTransport, batch: &mut RxBatch, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        let k = t.recv_batch(batch).expect("recv");
        assert_eq!(k, batch.len());
        out.extend(batch.iter().map(<[u8]>::to_vec));
        if k == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    out
}

/// Nothing more arrives within 50 ms.
pub(crate) fn assert_silent(t: &mut impl NicTransport, batch: &mut RxBatch) {
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(t.recv_batch(batch).expect("recv"), 0, "no extra packet");
}

/// Queue every packet and flush once; the kernel (loopback, veth) takes the whole batch.
pub(crate) fn send_all(t: &mut impl NicTransport, packets: &[Vec<u8>]) {
    for p in packets {
        t.queue(p).expect("room in the queue");
    }
    t.flush().expect("flush");
    assert!(!t.has_backlog(), "the kernel took the whole batch");
}
