//! braid's UDP NIC transport: one UDP socket per NIC, bound to the NIC's device, sending to and
//! receiving from one peer, in batches, with the kernel's UDP segmentation offloads (GSO on
//! send, GRO on receive).
//!
//! What this module owns: the socket (creation, options, reopen), the send queue, batched
//! receive and send, and their counters. What it does not: the braid header, authentication
//! and the engine (braid-core), the event loop (the data path waits on [`NicTransport::fd`]),
//! AF_PACKET (`crate::packet`), TUN.
//!
//! # Call protocol
//!
//! One owner thread: [`UdpTransport::open`] once; then, per loop turn, [`NicTransport::queue`]
//! packets and [`NicTransport::flush`] them, and [`NicTransport::recv_batch`] when the fd is
//! readable (into a batch from [`UdpTransport::rx_batch`]); about once a second
//! [`NicTransport::maintain`]. After `maintain` returns `true`, [`NicTransport::fd`] is a NEW
//! descriptor: register it with the poller again.
//!
//! # Design
//!
//! **Send.** `queue` copies a packet into a pre-allocated arena (`batch × mtu` bytes, see
//! `queue.rs`); `flush` walks the queue and sends consecutive packets of equal size (the last
//! may be shorter) as ONE datagram with a `UDP_SEGMENT` control message, which the kernel cuts
//! back into packets (udp(7); Linux ≥ 4.18). A group is bounded by the socket's GSO segment
//! limit (quinn-udp probes it; 64) and by the largest UDP payload, 65 507 bytes over IPv4
//! (RFC 791 total length minus the IPv4 and UDP headers) and 65 527 over IPv6 (RFC 8200
//! payload length minus the UDP header): 46 packets of 1400 bytes. Per the numbers in
//! DEPENDENCIES.md a GSO segment costs the kernel about a seventh of a `sendto`, which is why
//! GSO matters more than `sendmmsg` (which quinn-udp does not use; one `sendmsg` per group).
//!
//! **GSO fallback.** Some kernels and drivers refuse GSO sends with `EIO` or `EINVAL` (a short
//! tail in 6.6.44, for one). quinn-udp then drops its segment limit to 1; the transport sees the
//! error on a multi-packet send, switches GSO off for good (sticky across reopen, so a broken
//! kernel costs one failed send, not one per reopen), counts `offload_disabled` and resends the
//! same packets one by one. `UdpConfig::gso = false` never tries.
//!
//! **Receive.** `recvmmsg` (via quinn-udp, up to [`quinn_udp::BATCH_SIZE`] datagrams per call)
//! into the slots of an [`RxBatch`]. With `UDP_GRO` the kernel hands over super-datagrams of
//! up to 64 packets and reports their `stride`; they are split back into packets with
//! [`RxBatch::push_segment`], without copying. quinn-udp does not report `MSG_TRUNC` from
//! `recvmmsg`, so truncation is detected by size: a datagram that fills its slot to the last
//! byte may have been cut and is dropped (`rx_drop_truncated`). That is why
//! [`UdpTransport::rx_batch`] makes slots one byte larger than the largest datagram expected
//! (`mtu + 1` without GRO; 65 535 with GRO, above any UDP payload).
//!
//! **Peer filter.** The socket is not `connect`ed: a connected socket would make the kernel
//! drop foreign datagrams silently. Datagrams from any source other than the peer are
//! dropped here and counted (`rx_drop_foreign`).
//!
//! **Device gone.** A socket bound to a device (`SO_BINDTODEVICE`) stays bound to its ifindex;
//! when the device is deleted, the binding reads back as `ENXIO`, and sends fail with `ENODEV`
//! or, as on Linux 6.18, with `ENETUNREACH` like a link that is down; so a send that fails
//! either way asks the binding. When the device is gone (seen on send, on receive, or by the
//! check in `maintain`) the transport closes itself: the
//! queue is dropped (counted `tx_drop_closed`), `fd()` is `None`, `queue()` says `Closed`, and
//! each `maintain()` tries ONE reopen with the same config and local port (a device recreated
//! under the same name gets a new ifindex, so the old socket can never recover by itself). A
//! link that is merely down (`ENETDOWN`, `ENETUNREACH`, `EHOSTUNREACH`) keeps the socket: the
//! queued packets are dropped and counted as `tx_errors`, and sends resume when it comes up.
//!
//! **Buffers.** Multi-Gbit/s UDP needs socket buffers of several MiB; the kernel caps
//! `SO_RCVBUF`/`SO_SNDBUF` at `net.core.rmem_max`/`wmem_max` unless the process has
//! `CAP_NET_ADMIN` (then `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` work). A cap is not an error: it is
//! recorded in [`UdpTransport::socket_buffers`] with the sysctl that raises it.
//!
//! No allocation happens per packet or per batch after `open`: the arenas, descriptor lists
//! and the `recvmmsg` scratch (on the stack) are sized once (a test checks it with a counting
//! allocator).

mod queue;

#[cfg(test)]
mod tests;

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, BorrowedFd};

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::transport::{NicTransport, QueueError, RxBatch, TransportStats};
use queue::SendQueue;

/// Largest UDP payload over IPv4: 65 535 (total length) − 20 (IPv4) − 8 (UDP) bytes.
pub const MAX_UDP_PAYLOAD_V4: usize = 65_507;
/// Largest UDP payload over IPv6 without jumbograms: 65 535 (payload length) − 8 (UDP) bytes.
pub const MAX_UDP_PAYLOAD_V6: usize = 65_527;
/// Most packets the kernel coalesces into one GRO datagram (`UDP_GRO_CNT_MAX`).
pub const GRO_MAX_SEGMENTS: usize = 64;
/// Most segments in one GSO send (`UDP_MAX_SEGMENTS` was 64 before Linux 6.11).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Receive slot with GRO: above any UDP payload, so a full slot means truncation.
const GRO_SLOT_BYTES: usize = 65_535;
/// Largest `batch` accepted.
const MAX_BATCH: usize = 1024;
/// Largest socket buffer accepted (the kernel takes an `int` and doubles it).
const MAX_SOCKET_BUFFER_BYTES: usize = 1 << 30;
/// Linux interface names are at most `IFNAMSIZ − 1` bytes.
const IFNAME_MAX_BYTES: usize = 15;
/// Datagrams per `recvmmsg` call (quinn-udp's limit).
const RECV_CHUNK: usize = quinn_udp::BATCH_SIZE;

/// How to open one NIC's UDP transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpConfig {
    /// Bind the socket to this network device (`SO_BINDTODEVICE`), e.g. `"eth1"`, so its
    /// packets leave through this NIC whatever the routing table says. `None`: route normally.
    /// Default `None`.
    pub device: Option<String>,
    /// Local address and port to bind (port 0: the kernel picks one, kept across reopens).
    pub local: SocketAddr,
    /// The peer's braid transport on this NIC: packets go there, and only its packets are
    /// accepted (but see [`UdpConfig::peer_ports`]).
    pub peer: SocketAddr,
    /// Source ports accepted from the peer's address, when more than [`UdpConfig::peer`]'s
    /// own: a socket that one worker reads for all the workers of a daemon receives from
    /// each of the peer's workers, at `base + k`. `None` (the default): the peer's port only.
    pub peer_ports: Option<RangeInclusive<u16>>,
    /// Largest braid packet in bytes: the link MTU − 28 (IPv4 + UDP) or − 48 (IPv6 + UDP).
    /// 1472 on a 1500-byte Ethernet link over IPv4.
    pub mtu: usize,
    /// Use UDP GSO on send when the kernel supports it. Default `true`.
    pub gso: bool,
    /// Use UDP GRO on receive when the kernel supports it. Default `true`.
    pub gro: bool,
    /// Requested size of each socket buffer (receive and send), bytes. Default 8 MiB, tuned
    /// for a few Gbit/s with millisecond-scale scheduling hiccups.
    pub socket_buffer_bytes: usize,
    /// Packets per batch: size of the send queue and of the receive batch. Default 64.
    pub batch: usize,
}

impl UdpConfig {
    /// Default socket buffer size: 8 MiB.
    pub const DEFAULT_SOCKET_BUFFER_BYTES: usize = 8 << 20;
    /// Default batch: 64 packets.
    pub const DEFAULT_BATCH: usize = 64;

    /// A config with the defaults: no device binding, GSO and GRO on, 8 MiB buffers, batches
    /// of 64.
    #[must_use]
    pub fn new(local: SocketAddr, peer: SocketAddr, mtu: usize) -> Self {
        Self {
            device: None,
            local,
            peer,
            peer_ports: None,
            mtu,
            gso: true,
            gro: true,
            socket_buffer_bytes: Self::DEFAULT_SOCKET_BUFFER_BYTES,
            batch: Self::DEFAULT_BATCH,
        }
    }

    /// Check the config before any socket is made.
    fn validate(&self) -> Result<(), UdpError> {
        let invalid = |reason| Err(UdpError::InvalidConfig { reason });
        if self.local.is_ipv4() != self.peer.is_ipv4() {
            return invalid("local and peer addresses are of different families (IPv4 vs IPv6)");
        }
        if self.peer.port() == 0 || self.peer.ip().is_unspecified() {
            return invalid("the peer address needs a specific ip and a non-zero port");
        }
        if let Some(r) = &self.peer_ports
            && (r.is_empty() || *r.start() == 0)
        {
            return invalid("peer_ports must be a non-empty range of non-zero ports");
        }
        if self.mtu == 0 {
            return invalid("mtu is 0");
        }
        if self.mtu > max_payload(self.local) {
            return invalid(
                "mtu is above the largest udp payload (65507 bytes over IPv4, 65527 over IPv6)",
            );
        }
        if self.batch == 0 || self.batch > MAX_BATCH {
            return invalid("batch must be 1 to 1024 packets");
        }
        if self.socket_buffer_bytes > MAX_SOCKET_BUFFER_BYTES {
            return invalid("socket_buffer_bytes is above 1 GiB");
        }
        if let Some(dev) = &self.device
            && (dev.is_empty() || dev.len() > IFNAME_MAX_BYTES || dev.contains('\0'))
        {
            return invalid("the device name must be 1 to 15 bytes, without NUL");
        }
        Ok(())
    }
}

/// Why a UDP transport could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UdpError {
    /// The config is inconsistent (nothing was opened).
    #[error("invalid udp transport config: {reason}")]
    InvalidConfig {
        /// What is wrong and how to fix it.
        reason: &'static str,
    },
    /// `socket()` failed.
    #[error("cannot create a udp socket for {local}")]
    Socket {
        /// The address the socket was for.
        local: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The device does not exist (`ENODEV`).
    #[error(
        "cannot bind to device {device}: no such device (is the interface up and named right?)"
    )]
    NoSuchDevice {
        /// The configured device.
        device: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Binding to a device was refused (`EPERM`).
    #[error("cannot bind to device {device}: binding to a device needs CAP_NET_RAW/root")]
    DevicePermission {
        /// The configured device.
        device: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Binding to a device failed otherwise.
    #[error("cannot bind to device {device}")]
    BindDevice {
        /// The configured device.
        device: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The local address and port are taken (`EADDRINUSE`).
    #[error(
        "cannot bind udp socket to {local}: address in use (is another braid, or another \
         program, using this port?)"
    )]
    AddrInUse {
        /// The configured local address.
        local: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The local ip is not configured on this host (`EADDRNOTAVAIL`).
    #[error(
        "cannot bind udp socket to {local}: address not available (is {} configured on an \
         interface of this host, and is that interface present?)", .local.ip()
    )]
    AddrNotAvailable {
        /// The configured local address.
        local: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `bind()` failed otherwise.
    #[error("cannot bind udp socket to {local}")]
    Bind {
        /// The configured local address.
        local: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A socket option could not be set or read.
    #[error("cannot set or read {option} on the udp socket")]
    SocketOption {
        /// The option, e.g. `"SO_RCVBUF"`.
        option: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// quinn-udp could not prepare the socket for batched I/O.
    #[error("cannot set up batched udp i/o (quinn-udp) on the socket")]
    Batching {
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The socket buffer sizes asked for and what the kernel granted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketBuffers {
    /// Bytes asked for each buffer ([`UdpConfig::socket_buffer_bytes`]).
    pub requested_bytes: usize,
    /// Receive buffer granted, bytes (the kernel reports twice the value it accepted, for its
    /// bookkeeping; this is half of what it reports, comparable to the request).
    pub recv_bytes: usize,
    /// Send buffer granted, bytes (half of what the kernel reports, as above).
    pub send_bytes: usize,
    /// `true` if the sizes were forced past the sysctl limits (`SO_*BUFFORCE`, needs
    /// `CAP_NET_ADMIN`).
    pub forced: bool,
}

impl SocketBuffers {
    /// `Some` warning (with the fix) if the kernel granted less than was asked.
    #[must_use]
    pub fn capped(&self) -> Option<BuffersCapped> {
        let capped =
            self.recv_bytes < self.requested_bytes || self.send_bytes < self.requested_bytes;
        capped.then_some(BuffersCapped {
            requested_bytes: self.requested_bytes,
            recv_bytes: self.recv_bytes,
            send_bytes: self.send_bytes,
        })
    }
}

/// A warning, not an error: the socket buffers are smaller than configured, so bursts may be
/// dropped by the kernel at high rates. Its message says how to raise the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "udp socket buffers are smaller than configured: receive {recv_bytes} and send {send_bytes} \
     bytes of {requested_bytes} asked; raise the kernel limits with `sysctl -w \
     net.core.rmem_max={requested_bytes} net.core.wmem_max={requested_bytes}` (or give braid \
     CAP_NET_ADMIN, which lets it force the sizes)"
)]
pub struct BuffersCapped {
    /// Bytes asked for each buffer.
    pub requested_bytes: usize,
    /// Receive buffer granted, bytes.
    pub recv_bytes: usize,
    /// Send buffer granted, bytes.
    pub send_bytes: usize,
}

/// Which offloads are in use right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offloads {
    /// Most packets per GSO send; 1 means GSO is off (by config, unsupported, or refused).
    pub gso_segments: usize,
    /// `true` if the socket has `UDP_GRO` on.
    pub gro: bool,
}

/// Counters specific to the UDP transport (the common ones are in [`TransportStats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Times the transport closed itself because its device disappeared.
    pub closed: u64,
    /// Reopen attempts (in `maintain`) that failed.
    pub reopen_failures: u64,
    /// Sends that carried more than one packet (GSO).
    pub tx_gso_sends: u64,
    /// Received datagrams that held more than one packet (GRO).
    pub rx_gro_datagrams: u64,
}

/// An open socket and its quinn-udp state.
#[derive(Debug)]
struct OpenSocket {
    socket: Socket,
    state: UdpSocketState,
}

/// One NIC's UDP transport. See the [module docs](self) for the design.
#[derive(Debug)]
pub struct UdpTransport {
    cfg: UdpConfig,
    /// The address actually bound (the port the kernel picked if `cfg.local` had port 0).
    local: SocketAddr,
    open: Option<OpenSocket>,
    txq: SendQueue,
    /// Most packets per send now (1 = no GSO).
    gso_segments: usize,
    /// Largest GSO send, bytes.
    gso_max_bytes: usize,
    /// The kernel refused GSO once: never try again on this transport.
    gso_refused: bool,
    /// The socket has UDP_GRO on.
    gro: bool,
    /// The kernel refused GRO (counted once).
    gro_refused: bool,
    buffers: SocketBuffers,
    stats: TransportStats,
    udp_stats: UdpStats,
    last_open_error: Option<UdpError>,
}

impl UdpTransport {
    /// Validate `cfg`, create and bind the socket, and allocate the send queue.
    ///
    /// # Errors
    /// [`UdpError`]: the config is inconsistent, the device is missing or cannot be bound
    /// (permissions), the address is taken or not local, or a socket option failed. Buffer
    /// sizes below the request are not an error: see [`Self::socket_buffers`].
    pub fn open(cfg: UdpConfig) -> Result<Self, UdpError> {
        cfg.validate()?;
        let mut t = Self {
            local: cfg.local,
            open: None,
            txq: SendQueue::new(cfg.batch, cfg.mtu),
            gso_segments: 1,
            gso_max_bytes: max_payload(cfg.local),
            gso_refused: false,
            gro: false,
            gro_refused: false,
            buffers: SocketBuffers::default(),
            stats: TransportStats::default(),
            udp_stats: UdpStats::default(),
            last_open_error: None,
            cfg,
        };
        let (socket, buffers) = open_socket(&t.cfg, t.local)?;
        t.install(socket, buffers)?;
        Ok(t)
    }

    /// The address the socket is bound to (with the kernel's port if the config had 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The config this transport was opened with.
    #[must_use]
    pub fn config(&self) -> &UdpConfig {
        &self.cfg
    }

    /// The socket buffer sizes granted at the last (re)open; warn with
    /// [`SocketBuffers::capped`] if they are below the request.
    #[must_use]
    pub fn socket_buffers(&self) -> SocketBuffers {
        self.buffers
    }

    /// The offloads in use now.
    #[must_use]
    pub fn offloads(&self) -> Offloads {
        Offloads {
            gso_segments: self.gso_segments,
            gro: self.gro,
        }
    }

    /// UDP-specific counters.
    #[must_use]
    pub fn udp_stats(&self) -> &UdpStats {
        &self.udp_stats
    }

    /// Why the last reopen attempt failed, if it did (for the owner to log).
    #[must_use]
    pub fn last_open_error(&self) -> Option<&UdpError> {
        self.last_open_error.as_ref()
    }

    /// `true` while the socket is open.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// A receive batch sized for this transport: `batch` slots of 65 535 bytes (GRO
    /// configured) or `mtu + 1` bytes (see the module docs on truncation), and room for 64
    /// packets per slot with GRO.
    #[must_use]
    pub fn rx_batch(&self) -> RxBatch {
        if self.cfg.gro {
            RxBatch::new(
                self.cfg.batch,
                GRO_SLOT_BYTES,
                self.cfg.batch * GRO_MAX_SEGMENTS,
            )
        } else {
            RxBatch::new(self.cfg.batch, self.cfg.mtu + 1, self.cfg.batch)
        }
    }

    /// Take a freshly opened socket into use.
    fn install(&mut self, socket: Socket, buffers: SocketBuffers) -> Result<(), UdpError> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))
            .map_err(|source| UdpError::Batching { source })?;
        // quinn-udp switches UDP_GRO on whenever the kernel has it.
        let gro = if !self.cfg.gro {
            crate::sys::udp::set_udp_gro(socket.as_fd(), false).map_err(|source| {
                UdpError::SocketOption {
                    option: "UDP_GRO",
                    source,
                }
            })?;
            false
        } else if state.gro_segments() > 1 {
            true
        } else {
            if !self.gro_refused {
                self.gro_refused = true;
                self.stats.offload_disabled += 1;
            }
            false
        };
        let probed = state.max_gso_segments().min(GSO_MAX_SEGMENTS);
        if self.cfg.gso && !self.gso_refused && probed <= 1 {
            self.gso_refused = true;
            self.stats.offload_disabled += 1;
        }
        self.gso_segments = if self.cfg.gso && !self.gso_refused {
            probed
        } else {
            1
        };
        self.gro = gro;
        self.buffers = buffers;
        self.local = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(self.local);
        self.open = Some(OpenSocket { socket, state });
        Ok(())
    }

    /// The device is gone: drop the socket and the queue.
    fn close(&mut self) {
        self.open = None;
        self.stats.tx_drop_closed += self.txq.clear() as u64;
        self.udp_stats.closed += 1;
    }

    /// The kernel refused a GSO send: send one packet per call from now on.
    fn disable_gso(&mut self) {
        self.gso_refused = true;
        self.gso_segments = 1;
        self.stats.offload_disabled += 1;
    }

    /// The bound device is no longer there (the binding reads back as `ENXIO`).
    fn device_gone(&self) -> bool {
        match (&self.open, &self.cfg.device) {
            (Some(open), Some(_)) => open.socket.device().is_err_and(|e| is_device_gone(&e)),
            _ => false,
        }
    }
}

impl NicTransport for UdpTransport {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.open.as_ref().map(|o| o.socket.as_fd())
    }

    fn recv_batch(&mut self, batch: &mut RxBatch) -> io::Result<usize> {
        batch.clear();
        let Some(open) = self.open.as_ref() else {
            return Ok(0);
        };
        let slot_bytes = batch.slot_bytes();
        let slots = batch.slots();
        let mut metas = [RecvMeta::default(); RECV_CHUNK];
        let mut next_slot = 0;
        let mut delivered = 0;
        let mut failure = None;
        // Budget: at most ceil(slots / RECV_CHUNK) receive calls.
        while next_slot < slots {
            let want = (slots - next_slot).min(RECV_CHUNK);
            let got = {
                let start = next_slot * slot_bytes;
                let region = &mut batch.arena_mut()[start..start + want * slot_bytes];
                let mut chunks = region.chunks_exact_mut(slot_bytes);
                let mut bufs: [IoSliceMut<'_>; RECV_CHUNK] =
                    std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
                open.state.recv(
                    UdpSockRef::from(&open.socket),
                    &mut bufs[..want],
                    &mut metas[..want],
                )
            };
            match got {
                Ok(n) => {
                    if n > 0 {
                        self.stats.rx_batches += 1;
                    }
                    for (i, meta) in metas.iter().take(n).enumerate() {
                        delivered += accept(
                            &mut self.stats,
                            &mut self.udp_stats,
                            &self.cfg,
                            batch,
                            (next_slot + i) * slot_bytes,
                            meta,
                        );
                    }
                    if n < want {
                        break; // the socket is drained: skip the call that would say EAGAIN
                    }
                    next_slot += want;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            self.stats.rx_errors += 1;
            if is_device_gone(&e) {
                self.close();
            }
            // Packets already in the batch are delivered; a lasting error shows next call.
            if delivered == 0 {
                return Err(e);
            }
        }
        Ok(delivered)
    }

    fn queue(&mut self, packet: &[u8]) -> Result<(), QueueError> {
        if self.open.is_none() {
            self.stats.tx_drop_closed += 1;
            return Err(QueueError::Closed);
        }
        if packet.len() > self.cfg.mtu {
            self.stats.tx_drop_too_big += 1;
            return Err(QueueError::TooBig);
        }
        if !self.txq.push(packet) {
            self.stats.tx_drop_queue_full += 1;
            return Err(QueueError::Full);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut first_error = None;
        // Each turn sends or drops at least one packet, except the one retry after GSO is
        // switched off: the loop is bounded by the queue length + 1.
        while let Some(group) = self.txq.next_group(self.gso_segments, self.gso_max_bytes) {
            let Some(open) = self.open.as_ref() else {
                break;
            };
            let transmit = Transmit {
                destination: self.cfg.peer,
                ecn: None,
                contents: self.txq.bytes(&group),
                segment_size: (group.count > 1).then_some(group.segment),
                src_ip: None,
            };
            let sent = open
                .state
                .try_send(UdpSockRef::from(&open.socket), &transmit);
            self.stats.tx_syscalls += 1;
            let e = match sent {
                Ok(()) => {
                    self.stats.tx_packets += group.count as u64;
                    self.stats.tx_bytes += group.bytes as u64;
                    if group.count > 1 {
                        self.udp_stats.tx_gso_sends += 1;
                    }
                    self.txq.consume(group.count);
                    continue;
                }
                Err(e) => e,
            };
            match e.raw_os_error() {
                _ if e.kind() == io::ErrorKind::WouldBlock => break, // the rest stays queued
                Some(libc::EIO | libc::EINVAL) if group.count > 1 => {
                    // The kernel refuses GSO: resend the same packets one by one.
                    self.disable_gso();
                }
                Some(libc::ENODEV | libc::ENXIO | libc::ENETDOWN | libc::ENETUNREACH)
                | Some(libc::EHOSTUNREACH) => {
                    // A deleted device can fail like a down link (Linux 6.18 says ENETUNREACH
                    // for a socket bound to a deleted ifindex): ask the binding which it is.
                    // Either way every queued packet would fail the same way.
                    if is_device_gone(&e) || self.device_gone() {
                        self.close(); // counts the queue as tx_drop_closed
                    } else {
                        self.stats.tx_errors += self.txq.clear() as u64;
                    }
                    return Err(e);
                }
                _ => {
                    // EMSGSIZE, EPERM (netfilter), ...: drop this group, try the rest.
                    self.stats.tx_errors += group.count as u64;
                    self.txq.consume(group.count);
                    first_error.get_or_insert(e);
                }
            }
        }
        // After a partial send, move the backlog to the front so the whole queue is free.
        self.txq.compact();
        first_error.map_or(Ok(()), Err)
    }

    fn has_backlog(&self) -> bool {
        !self.txq.is_empty()
    }

    fn mtu(&self) -> usize {
        self.cfg.mtu
    }

    fn stats(&self) -> TransportStats {
        self.stats
    }

    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        let u = self.udp_stats();
        out("closed", u.closed);
        out("reopen_failures", u.reopen_failures);
        out("tx_gso_sends", u.tx_gso_sends);
        out("rx_gro_datagrams", u.rx_gro_datagrams);
        out("gso_segments", self.offloads().gso_segments as u64);
        out("gro", u64::from(self.offloads().gro));
    }

    fn maintain(&mut self) -> bool {
        if self.open.is_some() {
            if !self.device_gone() {
                return false;
            }
            // Gone while idle: close, and try the reopen right away (the device may be back
            // under a new ifindex already).
            self.close();
        }
        let reopened = open_socket(&self.cfg, self.local)
            .and_then(|(socket, buffers)| self.install(socket, buffers));
        match reopened {
            Ok(()) => {
                self.stats.reopened += 1;
                self.last_open_error = None;
                true
            }
            Err(e) => {
                self.udp_stats.reopen_failures += 1;
                self.last_open_error = Some(e);
                false
            }
        }
    }
}

/// Record the packets of one received datagram (slot at `slot_start`) in `batch`; returns how
/// many were delivered.
fn accept(
    stats: &mut TransportStats,
    udp_stats: &mut UdpStats,
    cfg: &UdpConfig,
    batch: &mut RxBatch,
    slot_start: usize,
    meta: &RecvMeta,
) -> usize {
    let len = meta.len;
    // Without GRO the stride is the length; guard against a zero or oversized stride.
    let stride = if meta.stride == 0 || meta.stride > len {
        len
    } else {
        meta.stride
    };
    let segments: u64 = if len == 0 {
        1
    } else {
        len.div_ceil(stride) as u64
    };
    if !from_peer(meta.addr, cfg) {
        stats.rx_drop_foreign += segments;
        return 0;
    }
    if len >= batch.slot_bytes() {
        stats.rx_drop_truncated += segments;
        return 0;
    }
    if segments > 1 {
        udp_stats.rx_gro_datagrams += 1;
    }
    let mut delivered = 0;
    let mut off = 0;
    loop {
        let seg = stride.min(len - off);
        if batch.push_segment(slot_start + off, seg) {
            stats.rx_packets += 1;
            stats.rx_bytes += seg as u64;
            delivered += 1;
        } else {
            stats.rx_drop_batch_full += 1;
        }
        off += stride;
        if off >= len {
            break;
        }
    }
    delivered
}

/// `src` is the peer's ip (IPv4-mapped IPv6 compared as IPv4) and its port or one of
/// [`UdpConfig::peer_ports`]; flow info and scope are ignored.
fn from_peer(src: SocketAddr, cfg: &UdpConfig) -> bool {
    let port_ok = match &cfg.peer_ports {
        Some(r) => r.contains(&src.port()),
        None => src.port() == cfg.peer.port(),
    };
    port_ok && src.ip().to_canonical() == cfg.peer.ip().to_canonical()
}

/// Largest UDP payload for the address family of `addr`.
fn max_payload(addr: SocketAddr) -> usize {
    if addr.is_ipv4() {
        MAX_UDP_PAYLOAD_V4
    } else {
        MAX_UDP_PAYLOAD_V6
    }
}

/// `ENODEV` (send through a deleted device) or `ENXIO` (its binding read back).
fn is_device_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ENXIO))
}

/// Create, configure and bind a socket for `cfg` at `local`.
fn open_socket(cfg: &UdpConfig, local: SocketAddr) -> Result<(Socket, SocketBuffers), UdpError> {
    let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|source| UdpError::Socket { local, source })?;
    let opt = |option| move |source| UdpError::SocketOption { option, source };
    if local.is_ipv6() {
        socket.set_only_v6(true).map_err(opt("IPV6_V6ONLY"))?;
    }
    socket
        .set_reuse_address(true)
        .map_err(opt("SO_REUSEADDR"))?;
    socket.set_nonblocking(true).map_err(opt("O_NONBLOCK"))?;
    if let Some(device) = &cfg.device {
        socket
            .bind_device(Some(device.as_bytes()))
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ENODEV) => UdpError::NoSuchDevice {
                    device: device.clone(),
                    source,
                },
                Some(libc::EPERM | libc::EACCES) => UdpError::DevicePermission {
                    device: device.clone(),
                    source,
                },
                _ => UdpError::BindDevice {
                    device: device.clone(),
                    source,
                },
            })?;
    }
    let buffers = set_buffers(&socket, cfg.socket_buffer_bytes)
        .map_err(|(option, source)| UdpError::SocketOption { option, source })?;
    socket
        .bind(&SockAddr::from(local))
        .map_err(|source| match source.raw_os_error() {
            Some(libc::EADDRINUSE) => UdpError::AddrInUse { local, source },
            Some(libc::EADDRNOTAVAIL) => UdpError::AddrNotAvailable { local, source },
            _ => UdpError::Bind { local, source },
        })?;
    Ok((socket, buffers))
}

/// Ask for `bytes` of receive and send buffer: forced past the sysctl caps if the process may
/// (`CAP_NET_ADMIN`), else as much as the caps allow. Reads back what the kernel granted.
/// Shared with the AF_PACKET transport. The error names the socket option that failed.
pub(crate) fn set_buffers(
    socket: &Socket,
    bytes: usize,
) -> Result<SocketBuffers, (&'static str, io::Error)> {
    let opt = |option| move |source| (option, source);
    let forced_recv =
        rustix::net::sockopt::set_socket_recv_buffer_size_force(socket, bytes).is_ok();
    if !forced_recv {
        socket
            .set_recv_buffer_size(bytes)
            .map_err(opt("SO_RCVBUF"))?;
    }
    let forced_send =
        rustix::net::sockopt::set_socket_send_buffer_size_force(socket, bytes).is_ok();
    if !forced_send {
        socket
            .set_send_buffer_size(bytes)
            .map_err(opt("SO_SNDBUF"))?;
    }
    // socket(7): the kernel doubles the value set, and getsockopt returns the doubled value.
    let recv = socket.recv_buffer_size().map_err(opt("SO_RCVBUF"))? / 2;
    let send = socket.send_buffer_size().map_err(opt("SO_SNDBUF"))? / 2;
    Ok(SocketBuffers {
        requested_bytes: bytes,
        recv_bytes: recv,
        send_bytes: send,
        forced: forced_recv && forced_send,
    })
}
