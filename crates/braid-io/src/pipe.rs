//! A stand-in for the vNIC (or a NIC) that needs no root: one end of a Unix datagram socket
//! pair, each datagram one packet. Tests and benchmarks drive the real data-path worker
//! ([`crate::dataplane`]) with it: the test holds the other end ([`PipePort::pair`]) and reads
//! and writes IP packets as an application behind a TUN device would.
//!
//! It is not for production: one system call per packet, no offloads.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;

use crate::transport::{NicTransport, QueueError, RxBatch, TransportStats};

/// One end of the pair, owned by the worker.
#[derive(Debug)]
pub struct PipePort {
    sock: UnixDatagram,
    mtu: usize,
    queue: Vec<u8>,
    lens: Vec<usize>,
    max_queued: usize,
    stats: TransportStats,
}

impl PipePort {
    /// A port for the worker and the socket for the test. Packets up to `mtu` bytes; at most
    /// `max_queued` wait to be written.
    ///
    /// # Errors
    /// If the socket pair cannot be made or set non-blocking.
    pub fn pair(mtu: usize, max_queued: usize) -> io::Result<(Self, UnixDatagram)> {
        let (a, b) = UnixDatagram::pair()?;
        a.set_nonblocking(true)?;
        grow_buffers(&a);
        grow_buffers(&b);
        Ok((Self::new(a, mtu, max_queued), b))
    }

    /// Two ports joined to each other: a simulated link between two workers (no delay, no
    /// loss, no rate limit beyond the kernel's).
    ///
    /// # Errors
    /// If the socket pair cannot be made or set non-blocking.
    pub fn connected(mtu: usize, max_queued: usize) -> io::Result<(Self, Self)> {
        let (a, b) = UnixDatagram::pair()?;
        for s in [&a, &b] {
            s.set_nonblocking(true)?;
            grow_buffers(s);
        }
        Ok((Self::new(a, mtu, max_queued), Self::new(b, mtu, max_queued)))
    }

    fn new(sock: UnixDatagram, mtu: usize, max_queued: usize) -> Self {
        Self {
            sock,
            mtu,
            queue: vec![0u8; mtu * max_queued],
            lens: Vec::with_capacity(max_queued),
            max_queued,
            stats: TransportStats::default(),
        }
    }
}

/// Room for a few thousand packets each way, so a burst is not dropped by the kernel before
/// the worker reads it. Best effort: the kernel caps it at `net.core.wmem_max`.
fn grow_buffers(s: &UnixDatagram) {
    let fd = s.as_fd();
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(fd, 4 << 20);
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(fd, 4 << 20);
}

impl NicTransport for PipePort {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.sock.as_fd())
    }

    fn recv_batch(&mut self, batch: &mut RxBatch) -> io::Result<usize> {
        batch.clear();
        let slot = batch.slot_bytes();
        for k in 0..batch.slots() {
            let off = k * slot;
            let buf = &mut batch.arena_mut()[off..off + slot];
            match self.sock.recv(buf) {
                Ok(n) => {
                    if n > self.mtu {
                        self.stats.rx_drop_truncated += 1;
                        continue;
                    }
                    if !batch.push_segment(off, n) {
                        self.stats.rx_drop_batch_full += 1;
                        continue;
                    }
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.stats.rx_errors += 1;
                    return Err(e);
                }
            }
        }
        if !batch.is_empty() {
            self.stats.rx_batches += 1;
        }
        Ok(batch.len())
    }

    fn queue(&mut self, packet: &[u8]) -> Result<(), QueueError> {
        if packet.len() > self.mtu {
            self.stats.tx_drop_too_big += 1;
            return Err(QueueError::TooBig);
        }
        if self.lens.len() == self.max_queued {
            self.stats.tx_drop_queue_full += 1;
            return Err(QueueError::Full);
        }
        let off = self.lens.len() * self.mtu;
        self.queue[off..off + packet.len()].copy_from_slice(packet);
        self.lens.push(packet.len());
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut sent = 0;
        let mut result = Ok(());
        for (i, &len) in self.lens.iter().enumerate() {
            let off = i * self.mtu;
            match self.sock.send(&self.queue[off..off + len]) {
                Ok(_) => {
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += len as u64;
                    self.stats.tx_syscalls += 1;
                    sent += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // Drop this one (counted) and keep going with the rest.
                    self.stats.tx_errors += 1;
                    sent += 1;
                    result = Err(e);
                }
            }
        }
        // Keep what the kernel did not take, in order, at the front.
        let left = self.lens.len() - sent;
        if sent > 0 && left > 0 {
            self.queue
                .copy_within(sent * self.mtu..self.lens.len() * self.mtu, 0);
            self.lens.copy_within(sent.., 0);
        }
        self.lens.truncate(left);
        result
    }

    fn has_backlog(&self) -> bool {
        !self.lens.is_empty()
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn stats(&self) -> TransportStats {
        self.stats
    }

    fn maintain(&mut self) -> bool {
        false
    }
}
