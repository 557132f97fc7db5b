//! A free list of packet buffers for packets in flight in the simulator, so that a run in
//! steady state does not allocate per packet.
//!
//! It owns buffer recycling only. Buffers keep their capacity when returned; a buffer taken
//! for a packet is filled with a copy of the host's bytes (the host writes into one scratch
//! buffer of the simulator's maximum packet size, so a buffer only grows to the largest packet
//! it has carried). The free list is bounded: buffers returned beyond `max_free` are released.

/// A bounded free list of `Vec<u8>` packet buffers.
#[derive(Debug)]
pub struct PacketPool {
    free: Vec<Vec<u8>>,
    max_free: usize,
    allocations: u64,
    released: u64,
}

impl PacketPool {
    /// An empty pool that keeps at most `max_free` idle buffers.
    #[must_use]
    pub const fn new(max_free: usize) -> Self {
        Self {
            free: Vec::new(),
            max_free,
            allocations: 0,
            released: 0,
        }
    }

    /// A buffer holding a copy of `data`: recycled if one is free, else newly allocated.
    pub fn take_copy(&mut self, data: &[u8]) -> Vec<u8> {
        if let Some(mut buf) = self.free.pop() {
            buf.clear();
            buf.extend_from_slice(data);
            buf
        } else {
            self.allocations += 1;
            data.to_vec()
        }
    }

    /// Returns a buffer to the free list (or releases it if the list is full).
    pub fn put(&mut self, buf: Vec<u8>) {
        if self.free.len() < self.max_free {
            self.free.push(buf);
        } else {
            self.released += 1;
        }
    }

    /// Buffers allocated because the free list was empty, since creation. Constant in a steady
    /// state.
    #[must_use]
    pub const fn allocations(&self) -> u64 {
        self.allocations
    }

    /// Buffers released because the free list was at `max_free`.
    #[must_use]
    pub const fn released(&self) -> u64 {
        self.released
    }

    /// Idle buffers in the free list.
    #[must_use]
    pub fn free_len(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_and_bounds() {
        let mut pool = PacketPool::new(1);
        let a = pool.take_copy(&[1, 2, 3]);
        let b = pool.take_copy(&[4]);
        assert_eq!(pool.allocations(), 2);
        pool.put(a);
        pool.put(b);
        assert_eq!(pool.free_len(), 1);
        assert_eq!(pool.released(), 1);
        let c = pool.take_copy(&[9, 9]);
        assert_eq!(c, [9, 9]);
        assert_eq!(pool.allocations(), 2, "recycled, not allocated");
    }
}
