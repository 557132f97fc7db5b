//! The send queue of one UDP transport: a contiguous byte arena that packets are copied into
//! back to back, and a list of `(offset, length)` descriptors. Both are allocated once, when
//! the transport opens; pushing, grouping and consuming never allocate.
//!
//! What this file owns: the arena, the descriptors and the choice of which queued packets go
//! out in one `sendmsg` (a GSO group). What it does not: sockets and error handling (see
//! [`super`]).
//!
//! Why packets are packed back to back instead of one MTU-sized slot each: a UDP GSO send
//! (`UDP_SEGMENT`, Linux ≥ 4.18) takes ONE buffer that the kernel cuts every `gso_size` bytes,
//! so consecutive packets of equal size must be adjacent in memory. Packed packets are adjacent
//! by construction, and a GSO group is just a sub-slice of the arena: no gather copy.

/// Where one queued packet lies in the arena.
#[derive(Clone, Copy, Debug)]
struct Desc {
    off: u32,
    len: u32,
}

/// Queued packets that go out in one send: `count` packets at `start..start + bytes` of the
/// arena, all `segment` bytes long except the last, which may be shorter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Group {
    /// Offset of the first byte in the arena.
    pub(super) start: usize,
    /// Total bytes of the group.
    pub(super) bytes: usize,
    /// Number of packets.
    pub(super) count: usize,
    /// Size of every packet but the last (the GSO segment size).
    pub(super) segment: usize,
}

/// A bounded FIFO of packets, packed into one arena.
#[derive(Debug)]
pub(super) struct SendQueue {
    /// `capacity × mtu` bytes: room for a full queue of MTU-sized packets.
    arena: Box<[u8]>,
    /// Descriptors; capacity fixed at construction, never grows.
    descs: Vec<Desc>,
    /// Index of the first unsent descriptor.
    head: usize,
    /// Bytes of the arena in use (end of the last descriptor).
    used: usize,
}

impl SendQueue {
    /// A queue of `capacity` packets of at most `mtu` bytes each.
    ///
    /// # Panics
    /// If `capacity × mtu` does not fit in `u32` (setup bug: the config is validated first).
    pub(super) fn new(capacity: usize, mtu: usize) -> Self {
        let bytes = capacity
            .checked_mul(mtu.max(1))
            .filter(|b| u32::try_from(*b).is_ok())
            .expect("invariant: send arena below 4 GiB");
        Self {
            arena: vec![0u8; bytes].into_boxed_slice(),
            descs: Vec::with_capacity(capacity),
            head: 0,
            used: 0,
        }
    }

    /// Copy `packet` to the end of the queue. `false` if the queue is full. The caller has
    /// checked `packet.len() <= mtu`.
    pub(super) fn push(&mut self, packet: &[u8]) -> bool {
        let end = self.used + packet.len();
        if self.descs.len() == self.descs.capacity() || end > self.arena.len() {
            return false;
        }
        self.arena[self.used..end].copy_from_slice(packet);
        // Both fit in u32: the arena is below 4 GiB (checked in `new`).
        self.descs.push(Desc {
            off: self.used as u32,
            len: packet.len() as u32,
        });
        self.used = end;
        true
    }

    /// Number of packets queued and not yet sent.
    pub(super) fn len(&self) -> usize {
        self.descs.len() - self.head
    }

    /// `true` if nothing is queued.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next packets to send together: the head packet, followed (if `max_segments > 1`)
    /// by the packets of the same size after it, and at most one shorter packet that ends the
    /// group, as long as the group holds at most `max_segments` packets and `max_bytes` bytes.
    /// This is the shape a UDP GSO send accepts (udp(7), `UDP_SEGMENT`).
    pub(super) fn next_group(&self, max_segments: usize, max_bytes: usize) -> Option<Group> {
        let first = *self.descs.get(self.head)?;
        let segment = first.len as usize;
        let mut group = Group {
            start: first.off as usize,
            bytes: segment,
            count: 1,
            segment,
        };
        // A zero-length datagram cannot be a GSO segment size; it goes alone.
        if max_segments <= 1 || segment == 0 {
            return Some(group);
        }
        for d in &self.descs[self.head + 1..] {
            let len = d.len as usize;
            if group.count == max_segments
                || len == 0
                || len > segment
                || group.bytes + len > max_bytes
            {
                break;
            }
            group.count += 1;
            group.bytes += len;
            if len < segment {
                break; // a shorter packet can only be the last segment
            }
        }
        Some(group)
    }

    /// The bytes of `group` (as returned by [`Self::next_group`]).
    pub(super) fn bytes(&self, group: &Group) -> &[u8] {
        &self.arena[group.start..group.start + group.bytes]
    }

    /// Forget the first `count` queued packets (sent or dropped).
    pub(super) fn consume(&mut self, count: usize) {
        self.head = (self.head + count).min(self.descs.len());
        if self.head == self.descs.len() {
            self.descs.clear();
            self.head = 0;
            self.used = 0;
        }
    }

    /// Forget everything queued; returns how many packets that was.
    pub(super) fn clear(&mut self) -> usize {
        let n = self.len();
        self.consume(n);
        n
    }

    /// Move the unsent packets to the front of the arena and of the descriptor list, so the
    /// whole capacity is free again behind them. Called after a send that left a backlog;
    /// moves at most `capacity × mtu` bytes and allocates nothing.
    pub(super) fn compact(&mut self) {
        if self.head == 0 {
            return;
        }
        let start = self.descs[self.head].off;
        self.arena.copy_within(start as usize..self.used, 0);
        let remaining = self.descs.len() - self.head;
        self.descs.copy_within(self.head.., 0);
        self.descs.truncate(remaining);
        for d in &mut self.descs {
            d.off -= start;
        }
        self.used -= start as usize;
        self.head = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(len: usize, tag: u8) -> Vec<u8> {
        (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn groups_equal_sizes_with_a_shorter_tail() {
        let mut q = SendQueue::new(16, 1000);
        for i in 0..4 {
            assert!(q.push(&pkt(1000, i)));
        }
        assert!(q.push(&pkt(300, 9))); // tail
        assert!(q.push(&pkt(300, 10))); // starts the next group
        assert!(q.push(&pkt(700, 11)));
        let g = q.next_group(64, 65_507).expect("queued");
        assert_eq!(
            g,
            Group {
                start: 0,
                bytes: 4300,
                count: 5,
                segment: 1000
            }
        );
        assert_eq!(&q.bytes(&g)[4000..], &pkt(300, 9)[..]);
        q.consume(g.count);
        // The second 300-byte packet is followed by a LARGER one: it cannot extend the group.
        let g = q.next_group(64, 65_507).expect("queued");
        assert_eq!((g.count, g.bytes, g.segment), (1, 300, 300));
        q.consume(1);
        let g = q.next_group(64, 65_507).expect("queued");
        assert_eq!((g.count, g.bytes), (1, 700));
        assert_eq!(q.bytes(&g), &pkt(700, 11)[..]);
        q.consume(1);
        assert!(q.is_empty());
        assert!(q.next_group(64, 65_507).is_none());
    }

    #[test]
    fn groups_respect_segment_and_byte_limits() {
        let mut q = SendQueue::new(64, 1400);
        for i in 0..64 {
            assert!(q.push(&pkt(1400, i)));
        }
        assert!(!q.push(&pkt(1, 0)), "full at capacity");
        // 65 507 / 1400 = 46 segments fit under the UDP payload limit.
        let g = q.next_group(64, 65_507).expect("queued");
        assert_eq!((g.count, g.bytes), (46, 46 * 1400));
        // The socket's own limit wins when smaller.
        let g = q.next_group(10, 65_507).expect("queued");
        assert_eq!(g.count, 10);
        // GSO off: one packet per send.
        let g = q.next_group(1, 65_507).expect("queued");
        assert_eq!(g.count, 1);
    }

    #[test]
    fn zero_length_packets_go_alone() {
        let mut q = SendQueue::new(4, 100);
        assert!(q.push(&[]));
        assert!(q.push(&[]));
        assert!(q.push(&pkt(100, 1)));
        assert!(q.push(&[]));
        assert_eq!(q.next_group(64, 65_507).map(|g| g.count), Some(1));
        q.consume(2);
        let g = q.next_group(64, 65_507).expect("queued");
        assert_eq!(
            (g.count, g.bytes),
            (1, 100),
            "an empty packet does not join a group"
        );
    }

    #[test]
    fn compact_keeps_order_and_frees_room() {
        let mut q = SendQueue::new(4, 10);
        for i in 0..4 {
            assert!(q.push(&pkt(10 - i as usize, i * 10)));
        }
        assert!(!q.push(&[1]));
        q.consume(3);
        q.compact();
        assert_eq!(q.len(), 1);
        for i in 4..7 {
            assert!(q.push(&pkt(10, i * 10)), "room again after compaction");
        }
        let expect: Vec<Vec<u8>> = vec![pkt(7, 30), pkt(10, 40), pkt(10, 50), pkt(10, 60)];
        for e in expect {
            let g = q.next_group(1, 65_507).expect("queued");
            assert_eq!(q.bytes(&g), &e[..]);
            q.consume(1);
        }
        assert!(q.is_empty());
        assert_eq!(q.clear(), 0);
    }
}
