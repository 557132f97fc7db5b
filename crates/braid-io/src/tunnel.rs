//! Tunnel ports: the sockets through which braid is a VXLAN (RFC 7348) or GRE (RFC
//! 2784/2890) endpoint towards peers that are not braid (braid-core's `engine::tunnel`).
//!
//! One [`TunnelPort`] serves every tunnel of one kind on one local address:
//!
//! - **TX**: a raw socket `AF_INET`/`AF_INET6`, `SOCK_RAW`, `IPPROTO_RAW` (the kernel takes
//!   the IP header from the packet: `IP_HDRINCL`, implied by `IPPROTO_RAW` for both
//!   families), bound to the NIC's device. The engine's
//!   `poll_tunnel_transmit` output, a whole outer IP packet, is queued as it is and sent in
//!   batches (`sendmmsg`, each to the destination of its own IP header). The kernel refuses a
//!   packet above the device's MTU (`EMSGSIZE`: no fragmentation of a packet whose header is
//!   ours): counted in `tx_errors`; the engine drops those first ([`TunnelPort`] is the second
//!   line).
//! - **RX, VXLAN**: a UDP socket bound to the local address and the VXLAN port (4789), so the
//!   kernel checks the outer headers and the UDP checksum, reassembles outer fragments, and
//!   sends no ICMP port unreachable. Its payload (VXLAN header onward) comes out as
//!   [`TunnelRx::Payload`] with the source address and port.
//! - **RX, GRE**: a raw `IPPROTO_GRE` socket bound to the local address (it sees every GRE
//!   packet to that address, after the kernel's reassembly). Over IPv4 it receives the whole
//!   IP packet ([`TunnelRx::Outer`]); over IPv6 the kernel strips the IPv6 header
//!   ([`TunnelRx::Payload`] with the source address). With a raw socket open the kernel sends
//!   no ICMP protocol unreachable for GRE even where no GRE module is loaded.
//!
//! Both receive paths are batched (`recvmmsg`, up to [`TunnelPortConfig::batch`] a call). The
//! batched calls are in `sys::tunnel` (the only unsafe code); the sockets come from socket2.
//! A port opened with `receive = false` sends only: the daemon gives every worker its own TX
//! sockets and worker 0 alone the receiving ones (a UDP port can be bound once, and two raw
//! GRE sockets would each get a copy of every packet).
//!
//! What this module does not own: the packets' contents (the engine builds and checks them),
//! which tunnel a packet belongs to (the engine matches addresses, VNI and key), routing and
//! neighbours (the kernel's, on the NIC's device).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};

use braid_wire::tunnel::{PayloadKind, PayloadMeta};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::sys::tunnel::{MMSG_CHUNK, RecvFrom, recv_from_batch, send_to_batch};
use crate::transport::{QueueError, TransportStats};

/// `IPPROTO_RAW`: a raw socket that sends packets with their own IP header.
const IPPROTO_RAW: i32 = 255;
/// `IPPROTO_GRE` (RFC 2784).
const IPPROTO_GRE: i32 = 47;

/// What a port carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelKind {
    /// VXLAN over UDP to `port` (4789 by RFC 7348).
    Vxlan {
        /// The UDP port the receiving socket is bound to.
        port: u16,
    },
    /// GRE (IP protocol 47).
    Gre,
}

/// How to open a [`TunnelPort`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelPortConfig {
    /// VXLAN (with its UDP port) or GRE.
    pub kind: TunnelKind,
    /// The local tunnel endpoint: its family picks IPv4 or IPv6; the receiving socket is
    /// bound to it.
    pub local: IpAddr,
    /// The NIC's device: both sockets are bound to it (`SO_BINDTODEVICE`). `None`: routing
    /// decides.
    pub device: Option<String>,
    /// Open the receiving socket (one port per local address and kind receives).
    pub receive: bool,
    /// Packets per receive batch and per send batch (default 64, at most 64).
    pub batch: usize,
    /// Largest outer packet sent, bytes (default 9216): the send queue's slot size. Larger
    /// packets are refused ([`QueueError::TooBig`]).
    pub max_tx_bytes: usize,
    /// Largest packet received, bytes (default 16384; a reassembled outer datagram may be up
    /// to 65535): larger ones are truncated by the kernel and dropped, counted.
    pub max_rx_bytes: usize,
    /// Send and receive socket buffer sizes asked for, bytes (default 4 MiB).
    pub socket_buffer_bytes: usize,
}

impl TunnelPortConfig {
    /// A receiving port with the defaults.
    #[must_use]
    pub fn new(kind: TunnelKind, local: IpAddr, device: Option<String>) -> Self {
        Self {
            kind,
            local,
            device,
            receive: true,
            batch: MMSG_CHUNK,
            max_tx_bytes: 9216,
            max_rx_bytes: 16_384,
            socket_buffer_bytes: 4 << 20,
        }
    }
}

/// Why a port could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelPortError {
    /// A socket could not be created.
    #[error("create the {what} socket")]
    Socket {
        /// Which socket.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A socket option could not be set.
    #[error("set {option} on the {what} socket")]
    Option {
        /// Which socket.
        what: &'static str,
        /// The option.
        option: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The receiving socket could not be bound to the local address.
    #[error("bind the receiving socket to {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A size in the configuration is zero.
    #[error("{field} must be > 0")]
    Config {
        /// The field.
        field: &'static str,
    },
}

/// One received tunnel packet, as [`TunnelPort::recv_batch`] hands it out.
#[derive(Clone, Copy, Debug)]
pub enum TunnelRx<'a> {
    /// A whole outer packet from its IP header (GRE over IPv4): for the engine's
    /// `handle_tunnel_rx`.
    Outer(&'a [u8]),
    /// A payload without the outer headers (VXLAN; GRE over IPv6) and what the socket said
    /// about it: for the engine's `handle_tunnel_payload_rx`.
    Payload(PayloadMeta, &'a [u8]),
}

/// The sockets of one kind of tunnel on one local address (see the module doc).
#[derive(Debug)]
pub struct TunnelPort {
    cfg: TunnelPortConfig,
    tx: Socket,
    rx: Option<Socket>,
    /// The send queue: `tx_len` packets in fixed slots of `max_tx_bytes`, from `tx_sent`.
    tx_arena: Box<[u8]>,
    tx_lens: Vec<usize>,
    tx_dsts: Vec<IpAddr>,
    tx_sent: usize,
    /// Receive slots of `max_rx_bytes`, and what `recvmmsg` said of each.
    rx_arena: Box<[u8]>,
    rx_metas: Vec<RecvFrom>,
    stats: TransportStats,
}

impl TunnelPort {
    /// Open the sending socket and, with [`TunnelPortConfig::receive`], the receiving one.
    ///
    /// # Errors
    /// [`TunnelPortError`] naming the socket and the call that failed (creating a raw socket
    /// needs `CAP_NET_RAW`; binding to a device `CAP_NET_RAW` too).
    pub fn open(cfg: TunnelPortConfig) -> Result<Self, TunnelPortError> {
        for (field, v) in [
            ("batch", cfg.batch),
            ("max_tx_bytes", cfg.max_tx_bytes),
            ("max_rx_bytes", cfg.max_rx_bytes),
        ] {
            if v == 0 {
                return Err(TunnelPortError::Config { field });
            }
        }
        let batch = cfg.batch.min(MMSG_CHUNK);
        let domain = if cfg.local.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let tx = raw_socket(&cfg, domain, IPPROTO_RAW, "sending")?;
        let rx = if cfg.receive {
            Some(match cfg.kind {
                TunnelKind::Vxlan { port } => {
                    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(
                        |source| TunnelPortError::Socket {
                            what: "VXLAN UDP",
                            source,
                        },
                    )?;
                    setup(&s, &cfg, "VXLAN UDP")?;
                    let addr = SocketAddr::new(cfg.local, port);
                    s.bind(&SockAddr::from(addr))
                        .map_err(|source| TunnelPortError::Bind { addr, source })?;
                    s
                }
                TunnelKind::Gre => {
                    let s = raw_socket(&cfg, domain, IPPROTO_GRE, "GRE")?;
                    let addr = SocketAddr::new(cfg.local, 0);
                    s.bind(&SockAddr::from(addr))
                        .map_err(|source| TunnelPortError::Bind { addr, source })?;
                    s
                }
            })
        } else {
            None
        };
        Ok(Self {
            tx_arena: vec![0u8; batch * cfg.max_tx_bytes].into_boxed_slice(),
            tx_lens: Vec::with_capacity(batch),
            tx_dsts: Vec::with_capacity(batch),
            tx_sent: 0,
            rx_arena: if rx.is_some() {
                vec![0u8; batch * cfg.max_rx_bytes].into_boxed_slice()
            } else {
                Box::default()
            },
            rx_metas: vec![RecvFrom::default(); batch],
            tx,
            rx,
            cfg: TunnelPortConfig { batch, ..cfg },
            stats: TransportStats::default(),
        })
    }

    /// The configuration it was opened with.
    #[must_use]
    pub fn config(&self) -> &TunnelPortConfig {
        &self.cfg
    }

    /// The receiving socket's descriptor, to wait on (`None` for a send-only port).
    #[must_use]
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.rx.as_ref().map(AsFd::as_fd)
    }

    /// The counters (`rx_drop_foreign`: datagrams without a usable source address).
    #[must_use]
    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    /// Receive what is ready, without blocking, and hand each packet to `each`. Returns how
    /// many datagrams the kernel gave (truncated ones are dropped and counted). "Would block"
    /// is `Ok(0)`; a send-only port always returns `Ok(0)`.
    ///
    /// # Errors
    /// An I/O error other than "would block" (counted in `rx_errors`); the port stays usable.
    pub fn recv_batch(&mut self, mut each: impl FnMut(TunnelRx<'_>)) -> io::Result<usize> {
        let Some(rx) = self.rx.as_ref() else {
            return Ok(0);
        };
        let slot = self.cfg.max_rx_bytes;
        let mut bufs: [IoSliceMut<'_>; MMSG_CHUNK] =
            std::array::from_fn(|_| IoSliceMut::new(&mut []));
        for (b, chunk) in bufs.iter_mut().zip(self.rx_arena.chunks_mut(slot)) {
            *b = IoSliceMut::new(chunk);
        }
        let n = self.cfg.batch;
        let got = match recv_from_batch(rx.as_fd(), &mut bufs[..n], &mut self.rx_metas[..n]) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            Err(e) => {
                self.stats.rx_errors += 1;
                return Err(e);
            }
        };
        if got > 0 {
            self.stats.rx_batches += 1;
        }
        for (i, meta) in self.rx_metas[..got].iter().enumerate() {
            if meta.truncated || meta.len > slot {
                self.stats.rx_drop_truncated += 1;
                continue;
            }
            let bytes = &self.rx_arena[i * slot..i * slot + meta.len];
            let rx = match (self.cfg.kind, self.cfg.local) {
                (TunnelKind::Gre, IpAddr::V4(_)) => TunnelRx::Outer(bytes),
                (kind, local) => {
                    let Some(src) = meta.src else {
                        self.stats.rx_drop_foreign += 1;
                        continue;
                    };
                    let kind = match kind {
                        TunnelKind::Vxlan { .. } => PayloadKind::Vxlan {
                            src_port: src.port(),
                        },
                        TunnelKind::Gre => PayloadKind::Gre,
                    };
                    TunnelRx::Payload(
                        PayloadMeta {
                            src: src.ip(),
                            dst: local,
                            kind,
                        },
                        bytes,
                    )
                }
            };
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += bytes.len() as u64;
            each(rx);
        }
        Ok(got)
    }

    /// Queue one whole outer IP packet (IPv4 or IPv6, of the port's family) for sending; it
    /// is copied. A full queue is flushed first.
    ///
    /// # Errors
    /// [`QueueError::TooBig`] above [`TunnelPortConfig::max_tx_bytes`] or not an IP packet of
    /// the port's family (counted in `tx_drop_too_big`); [`QueueError::Full`] if the kernel
    /// takes nothing to make room (counted in `tx_drop_queue_full`).
    pub fn queue(&mut self, packet: &[u8]) -> Result<(), QueueError> {
        let Some(dst) = destination(packet, self.cfg.local.is_ipv4()) else {
            self.stats.tx_drop_too_big += 1;
            return Err(QueueError::TooBig);
        };
        if packet.len() > self.cfg.max_tx_bytes {
            self.stats.tx_drop_too_big += 1;
            return Err(QueueError::TooBig);
        }
        if self.tx_lens.len() == self.cfg.batch {
            // Errors were counted; what matters here is whether room was made.
            let _ = self.flush();
            if self.tx_lens.len() == self.cfg.batch {
                self.stats.tx_drop_queue_full += 1;
                return Err(QueueError::Full);
            }
        }
        let slot = self.tx_lens.len() * self.cfg.max_tx_bytes;
        self.tx_arena[slot..slot + packet.len()].copy_from_slice(packet);
        self.tx_lens.push(packet.len());
        self.tx_dsts.push(dst);
        Ok(())
    }

    /// Make room in the send queue for `packets` more: the fragments of one outer datagram,
    /// which must go all or none (a peer holds a partial datagram's fragments until its
    /// reassembly timeout). A queue with fewer free slots is flushed first. More packets than
    /// a batch ([`TunnelPortConfig::batch`]) never fit at once: then an empty queue is
    /// enough, and the later ones are queued as [`Self::queue`]'s flushes make room (a
    /// socket whose buffer fills half-way can still cut such a datagram).
    ///
    /// # Errors
    /// [`QueueError::Full`] if the kernel did not take enough to make room: counted once in
    /// `tx_drop_queue_full`, for the whole datagram.
    pub fn reserve(&mut self, packets: usize) -> Result<(), QueueError> {
        let want = packets.min(self.cfg.batch);
        let free = |p: &Self| p.cfg.batch - p.tx_lens.len();
        if free(self) < want {
            // Errors were counted; what matters here is whether room was made.
            let _ = self.flush();
            if free(self) < want {
                self.stats.tx_drop_queue_full += 1;
                return Err(QueueError::Full);
            }
        }
        Ok(())
    }

    /// Packets queued and not yet sent.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.tx_lens.len() - self.tx_sent
    }

    /// `true` if packets are queued but not yet sent.
    #[must_use]
    pub fn has_backlog(&self) -> bool {
        self.tx_sent < self.tx_lens.len()
    }

    /// Send what is queued, without blocking, in `sendmmsg` batches. What the kernel does not
    /// take for lack of room stays queued; a packet it refuses is dropped and counted
    /// (`tx_errors`), and the rest go on.
    ///
    /// # Errors
    /// The first refusal other than "would block", for the caller to log.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut first_error = None;
        let slot = self.cfg.max_tx_bytes;
        // Each round sends at least one packet or drops one, or stops: bounded by the queue.
        while self.tx_sent < self.tx_lens.len() {
            let mut slices = [IoSlice::new(&[]); MMSG_CHUNK];
            let pending = &self.tx_lens[self.tx_sent..];
            for (k, len) in pending.iter().enumerate() {
                let at = (self.tx_sent + k) * slot;
                slices[k] = IoSlice::new(&self.tx_arena[at..at + len]);
            }
            let n = pending.len();
            self.stats.tx_syscalls += 1;
            match send_to_batch(self.tx.as_fd(), &slices[..n], &self.tx_dsts[self.tx_sent..]) {
                Ok(k) => {
                    for len in &self.tx_lens[self.tx_sent..self.tx_sent + k] {
                        self.stats.tx_packets += 1;
                        self.stats.tx_bytes += *len as u64;
                    }
                    self.tx_sent += k;
                    if k == 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // The first packet of the batch was refused (too big for the device,
                    // no route): drop it and go on with the rest.
                    self.stats.tx_errors += 1;
                    self.tx_sent += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        if self.tx_sent == self.tx_lens.len() {
            self.tx_lens.clear();
            self.tx_dsts.clear();
            self.tx_sent = 0;
        } else if self.tx_sent > 0 {
            // Move what is left to the front of the queue.
            let left = self.tx_lens.len() - self.tx_sent;
            self.tx_arena
                .copy_within(self.tx_sent * slot..self.tx_lens.len() * slot, 0);
            self.tx_lens.drain(..self.tx_sent);
            self.tx_dsts.drain(..self.tx_sent);
            debug_assert_eq!(self.tx_lens.len(), left);
            self.tx_sent = 0;
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// A raw socket of `protocol`, non-blocking, bound to the device, with its buffers.
fn raw_socket(
    cfg: &TunnelPortConfig,
    domain: Domain,
    protocol: i32,
    what: &'static str,
) -> Result<Socket, TunnelPortError> {
    let s = Socket::new(domain, Type::RAW, Some(Protocol::from(protocol)))
        .map_err(|source| TunnelPortError::Socket { what, source })?;
    setup(&s, cfg, what)?;
    Ok(s)
}

/// Non-blocking, close-on-exec (socket2's default), bound to the device, buffers asked for.
fn setup(s: &Socket, cfg: &TunnelPortConfig, what: &'static str) -> Result<(), TunnelPortError> {
    let opt = |option: &'static str| {
        move |source| TunnelPortError::Option {
            what,
            option,
            source,
        }
    };
    s.set_nonblocking(true).map_err(opt("O_NONBLOCK"))?;
    if let Some(device) = &cfg.device {
        s.bind_device(Some(device.as_bytes()))
            .map_err(opt("SO_BINDTODEVICE"))?;
    }
    // The kernel caps the sizes at rmem_max / wmem_max: a smaller buffer is not an error.
    let _ = s.set_send_buffer_size(cfg.socket_buffer_bytes);
    let _ = s.set_recv_buffer_size(cfg.socket_buffer_bytes);
    Ok(())
}

/// The destination address in an outer IP header of the expected family, or `None`.
fn destination(packet: &[u8], v4: bool) -> Option<IpAddr> {
    match (packet.first().map(|b| b >> 4), v4) {
        (Some(4), true) => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        (Some(6), false) => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
