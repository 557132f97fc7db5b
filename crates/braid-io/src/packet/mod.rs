//! braid's raw Ethernet NIC transport: braid packets carried directly in Ethernet frames with
//! braid's own EtherType, through an `AF_PACKET` socket bound to one NIC, to one peer MAC on
//! the same L2 segment. No IP or UDP header: 14 bytes of overhead instead of 42 (IPv4) or 62
//! (IPv6), and no routing, ARP or firewall in the way.
//!
//! What this module owns: the socket (creation, binding, reopen), the frame layout, the
//! receive filter, the send queue, batched receive and send, and their counters. What it does
//! not: the braid header, authentication and the engine (braid-core; a forged frame that
//! passes this filter still meets the AUTH tag), the event loop (the data path waits on
//! [`NicTransport::fd`]), UDP ([`crate::udp`]). The raw system calls are in `sys::packet`.
//!
//! # Frame
//!
//! ```text
//!  0..6    destination MAC: the peer's (PacketConfig::peer_mac)
//!  6..12   source MAC: this NIC's, read from the device at (re)open and each `maintain`
//! 12..14   EtherType: BRAID_ETHERTYPE (0x88B5, IEEE 802 local experimental)
//! 14..     the braid packet, at most the link MTU (the Ethernet payload)
//! ```
//!
//! No 802.1Q tag: on a VLAN, bind the transport to the VLAN device. [`NicTransport::mtu`] is
//! the link MTU itself (the braid packet is the whole Ethernet payload); the 14 header bytes
//! count only towards the link's rate (the daemon's `wire_overhead`).
//!
//! # Call protocol
//!
//! As [`crate::udp`]: one owner thread; [`PacketTransport::open`] once; per loop turn
//! [`NicTransport::queue`] + [`NicTransport::flush`], and [`NicTransport::recv_batch`] when the
//! fd is readable (any [`RxBatch`] whose slots hold a frame: the data path's 65 535-byte slots,
//! or [`PacketTransport::rx_batch`]); about once a second [`NicTransport::maintain`]. After
//! `maintain` returns `true`, [`NicTransport::fd`] is a NEW descriptor: register it again.
//! A reopen makes its socket in the network namespace of the thread that calls `maintain`.
//!
//! # Design
//!
//! **Binding.** The socket is made with protocol 0, which installs no receive hook, and then
//! bound to the device's ifindex AND to the EtherType (packet(7)), so the kernel hands it
//! exactly the frames of braid's EtherType that arrive on this NIC, and nothing from other
//! devices in between. Binding the protocol also makes the kernel skip the socket for every
//! other frame, so braid costs nothing to the host's other traffic on the NIC.
//!
//! **Receive filter.** What the kernel delivers is checked again, and each drop is counted by
//! reason: a frame not addressed to this NIC (the kernel marks it `PACKET_OTHERHOST`,
//! broadcast or multicast: a NIC in promiscuous mode, a bridge, a VLAN the host does not
//! have) is `rx_drop_not_for_us`; another EtherType (only possible in a kernel race at bind)
//! `rx_drop_ethertype`; a source MAC other than the peer's `rx_drop_foreign` (the common
//! counter, as the UDP transport's foreign source); a frame too short for a braid header
//! (14 + 32 bytes) `rx_drop_runt`; a frame larger than its receive slot (the kernel reports
//! its real length with `MSG_TRUNC`) `rx_drop_truncated`. MAC addresses are not
//! authentication: anyone on the segment can forge them. The filter keeps stray traffic off
//! the engine; the braid AUTH tag keeps forgeries out.
//!
//! **Batches: `recvmmsg`/`sendmmsg`, not a TPACKET_V3 ring.** DEPENDENCIES.md suggests a
//! hand-written TPACKET_V3 RX ring (mmap). This transport uses batched system calls instead,
//! for two reasons. (1) Latency: a V3 ring hands frames to user space per *block*, and the
//! kernel retires a block that is not full only when its timer fires, with a granularity of
//! one millisecond (`tp_retire_blk_tov`); the last frames of a burst wait for it, which
//! breaks the issue's budget of ≤ 20 µs added to the p50 round trip. (2) The interface:
//! [`NicTransport::recv_batch`] fills the caller's [`RxBatch`], so a ring's frames would be
//! copied out anyway, just as `recvmmsg` copies them in. What a ring would add: no system
//! call per batch at all under load (one `poll` wake-up for many blocks) and no per-frame
//! `sockaddr_ll`/`msghdr` work, worth a few hundred ns per batch of 64, small next to the
//! kernel's per-frame cost that both share (skb, qdisc, veth). A TPACKET_V2 ring (per-frame
//! status, no block timer) would keep the latency; it is the better next step if the
//! per-batch syscall ever shows in a profile. On send, `PACKET_TX_RING` would save the
//! per-frame copy into an skb, but not the qdisc and driver work.
//!
//! **No qdisc bypass.** `PACKET_QDISC_BYPASS` would hand frames straight to the driver,
//! skipping the device's queueing discipline. braid keeps the qdisc: a TBF (the testbed's
//! link rates) or any shaping the operator sets must apply to braid's frames as to any other
//! traffic, and the qdisc is what reports congestion. A full qdisc refuses a frame with
//! `ENOBUFS`; that frame is dropped and counted (`tx_qdisc_drops` and `tx_errors`), and the
//! rest of the batch is still offered.
//!
//! **Send.** [`NicTransport::queue`] copies the 14-byte header template and the packet into
//! the next slot of a pre-allocated queue (`batch` slots of 14 + MTU bytes); `flush` hands
//! up to 64 frames per `sendmmsg`. A full socket send buffer (`EAGAIN`) leaves the rest
//! queued: [`NicTransport::has_backlog`] says so, and the owner waits for writability.
//!
//! **Device gone.** The kernel unbinds a packet socket whose device is unregistered (its
//! ifindex reads back as -1 from `getsockname`); sends then fail with `ENXIO`. When that is
//! seen (on send, on a receive error, or by the check in `maintain`) the transport closes
//! itself: the queue is dropped (counted `tx_drop_closed`), `fd()` is `None`, `queue()` says
//! `Closed`, and each `maintain()` tries ONE reopen, looking the device up by name again (a
//! recreated device has a new ifindex and maybe a new MAC). A link that is only down keeps
//! the socket (the kernel re-attaches it when the link comes up): sends fail with `ENETDOWN`
//! and are counted as `tx_errors`, and a receive reports `ENETDOWN` once.
//!
//! **Buffers.** 8 MiB each way by default, forced past `net.core.{r,w}mem_max` when the
//! process has `CAP_NET_ADMIN` (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`), as the UDP transport;
//! what was granted is in [`PacketTransport::socket_buffers`].
//!
//! **Short frames on real NICs.** A physical NIC pads frames to the 60-byte Ethernet minimum,
//! and the braid header carries no payload length, so a braid packet below 46 bytes would
//! arrive with trailing zeros. Data packets carry an IP packet (≥ 20 bytes) behind the
//! 32-byte header and authenticated ones 56 bytes of header and tag, so in practice only
//! unauthenticated probes are that short, and their payload is padding anyway; veth does not
//! pad at all.
//!
//! No allocation happens per packet or per batch after `open`: the queue is allocated once,
//! and the `mmsghdr` arrays live on the stack of each call (a test checks it).

#[cfg(test)]
mod tests;

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd};

use socket2::Socket;

use crate::sys::packet::{self as sys, MMSG_CHUNK, RecvMeta};
use crate::transport::{NicTransport, QueueError, RxBatch, TransportStats};
use crate::udp::SocketBuffers;

/// braid's EtherType, `0x88B5`: the first of the two EtherTypes that IEEE 802 sets aside for
/// local experimental and development use (`0x88B5` and `0x88B6`, "Local Experimental
/// Ethertype 1/2", IEEE Std 802-2014 §9.2.2), which no registered protocol uses. The second,
/// `0x88B6`, is free for a second braid instance on the same segment
/// ([`PacketConfig::ethertype`]).
pub const BRAID_ETHERTYPE: u16 = 0x88B5;
/// The other IEEE 802 local experimental EtherType.
pub const BRAID_ETHERTYPE_ALT: u16 = 0x88B6;
/// Bytes of the Ethernet header braid writes: destination, source, EtherType (no FCS: the
/// NIC adds and checks it).
pub const ETH_HEADER_LEN: usize = 14;
/// Largest braid packet accepted as an MTU: a whole frame must fit a 65 535-byte slot.
pub const MAX_MTU: usize = 65_535 - ETH_HEADER_LEN;
/// Shortest frame that can hold a braid packet: the Ethernet header and braid's fixed header.
const MIN_FRAME_LEN: usize = ETH_HEADER_LEN + braid_wire::BRAID_HEADER_LEN;
/// Largest `batch` accepted.
const MAX_BATCH: usize = 1024;
/// Largest socket buffer accepted (the kernel takes an `int` and doubles it).
const MAX_SOCKET_BUFFER_BYTES: usize = 1 << 30;
/// Linux interface names are at most `IFNAMSIZ − 1` bytes.
const IFNAME_MAX_BYTES: usize = 15;
/// EtherType values below this are IEEE 802.3 length fields, not protocols.
const MIN_ETHERTYPE: u16 = 0x0600;

/// How to open one NIC's raw Ethernet transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketConfig {
    /// The network device, e.g. `"eth1"`: frames are received from and sent on it only.
    pub device: String,
    /// The peer's MAC on this link: frames go there, and only frames from it are accepted.
    pub peer_mac: [u8; 6],
    /// Largest braid packet in bytes: the link MTU (the Ethernet payload), 1500 on a
    /// standard link. Must not exceed the device's MTU (checked at open).
    pub mtu: usize,
    /// EtherType of braid frames (host order). Default [`BRAID_ETHERTYPE`]; both peers must
    /// agree. At least `0x0600` (smaller values are 802.3 lengths).
    pub ethertype: u16,
    /// EtherType of the frames sent, when not [`PacketConfig::ethertype`] (which is then the
    /// one received): a worker that does not read this NIC sends to the EtherType of the
    /// peer's worker that does. `None` (the default): the same as `ethertype`.
    pub tx_ethertype: Option<u16>,
    /// Requested size of each socket buffer (receive and send), bytes. Default 8 MiB, tuned
    /// for a few Gbit/s with millisecond-scale scheduling hiccups.
    pub socket_buffer_bytes: usize,
    /// Frames per batch: size of the send queue and of [`PacketTransport::rx_batch`].
    /// Default 64.
    pub batch: usize,
}

impl PacketConfig {
    /// Default socket buffer size: 8 MiB.
    pub const DEFAULT_SOCKET_BUFFER_BYTES: usize = 8 << 20;
    /// Default batch: 64 frames.
    pub const DEFAULT_BATCH: usize = 64;

    /// A config with the defaults: braid's EtherType, 8 MiB buffers, batches of 64.
    #[must_use]
    pub fn new(device: String, peer_mac: [u8; 6], mtu: usize) -> Self {
        Self {
            device,
            peer_mac,
            mtu,
            ethertype: BRAID_ETHERTYPE,
            tx_ethertype: None,
            socket_buffer_bytes: Self::DEFAULT_SOCKET_BUFFER_BYTES,
            batch: Self::DEFAULT_BATCH,
        }
    }

    /// Check the config before any socket is made.
    fn validate(&self) -> Result<(), PacketError> {
        let invalid = |reason| Err(PacketError::InvalidConfig { reason });
        let d = &self.device;
        if d.is_empty() || d.len() > IFNAME_MAX_BYTES || d.contains('\0') {
            return invalid("the device name must be 1 to 15 bytes, without NUL");
        }
        if self.peer_mac[0] & 1 == 1 {
            return invalid("peer_mac is a multicast or broadcast address; give the peer's own");
        }
        if self.peer_mac == [0; 6] {
            return invalid("peer_mac is all zeros");
        }
        if self.mtu < braid_wire::BRAID_HEADER_LEN {
            return invalid("mtu is below the braid header (32 bytes)");
        }
        if self.mtu > MAX_MTU {
            return invalid("mtu is above 65521 bytes (a frame must fit 65535)");
        }
        if self.ethertype < MIN_ETHERTYPE {
            return invalid("ethertype must be at least 0x0600 (smaller values are lengths)");
        }
        if self.tx_ethertype.is_some_and(|t| t < MIN_ETHERTYPE) {
            return invalid("tx_ethertype must be at least 0x0600 (smaller values are lengths)");
        }
        if self.batch == 0 || self.batch > MAX_BATCH {
            return invalid("batch must be 1 to 1024 frames");
        }
        if self.socket_buffer_bytes > MAX_SOCKET_BUFFER_BYTES {
            return invalid("socket_buffer_bytes is above 1 GiB");
        }
        Ok(())
    }
}

/// Why a raw Ethernet transport could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// The config is inconsistent (nothing was opened).
    #[error("invalid ethernet transport config: {reason}")]
    InvalidConfig {
        /// What is wrong and how to fix it.
        reason: &'static str,
    },
    /// `socket(AF_PACKET)` was refused: it needs `CAP_NET_RAW`.
    #[error("cannot create an AF_PACKET socket: raw sockets need CAP_NET_RAW/root")]
    Permission {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `socket(AF_PACKET)` failed otherwise.
    #[error("cannot create an AF_PACKET socket")]
    Socket {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The device does not exist (`ENODEV`).
    #[error("no such device {device} (is the interface present and named right?)")]
    NoSuchDevice {
        /// The configured device.
        device: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The device's MTU is smaller than the configured one.
    #[error(
        "mtu {mtu} is above the MTU of {device} ({device_mtu}): lower nics.mtu or raise the \
         device's (ip link set {device} mtu {mtu})"
    )]
    MtuAboveDevice {
        /// The configured device.
        device: String,
        /// The configured MTU.
        mtu: usize,
        /// The device's MTU.
        device_mtu: u32,
    },
    /// The device has no 6-byte hardware address (not Ethernet: a TUN device, for one).
    #[error("{device} is not an Ethernet device (no 6-byte MAC address)")]
    NotEthernet {
        /// The configured device.
        device: String,
    },
    /// A device ioctl or `getsockname` failed.
    #[error("cannot read {what} of {device}")]
    Device {
        /// What was being read, e.g. `"the MTU"`.
        what: &'static str,
        /// The configured device.
        device: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `bind()` to the device and EtherType failed.
    #[error("cannot bind the AF_PACKET socket to {device}")]
    Bind {
        /// The configured device.
        device: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A socket option could not be set or read.
    #[error("cannot set or read {option} on the AF_PACKET socket")]
    SocketOption {
        /// The option, e.g. `"SO_RCVBUF"`.
        option: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Counters specific to the raw Ethernet transport (the common ones are in
/// [`TransportStats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketStats {
    /// Times the transport closed itself because its device disappeared.
    pub closed: u64,
    /// Reopen attempts (in `maintain`) that failed.
    pub reopen_failures: u64,
    /// Frames too short for the Ethernet header plus braid's fixed header, dropped.
    pub rx_drop_runt: u64,
    /// Frames with another EtherType, dropped.
    pub rx_drop_ethertype: u64,
    /// Frames not addressed to this NIC's MAC (other host, broadcast, multicast), dropped.
    pub rx_drop_not_for_us: u64,
    /// Frames the device's qdisc refused (`ENOBUFS`: its queue is full), dropped.
    pub tx_qdisc_drops: u64,
    /// Times `maintain` saw the NIC's MAC change (the header template follows it).
    pub mac_changes: u64,
}

/// An open, bound socket.
#[derive(Debug)]
struct OpenSocket {
    socket: Socket,
    /// The ifindex bound; the device is gone when the binding reads back otherwise.
    ifindex: i32,
}

/// The send queue: `capacity` slots of `ETH_HEADER_LEN + mtu` bytes, filled front to back
/// from `tail`, sent front to back from `head`.
#[derive(Debug)]
struct FrameQueue {
    arena: Box<[u8]>,
    slot_bytes: usize,
    /// Frame length of each slot in use.
    lens: Box<[u32]>,
    head: usize,
    tail: usize,
}

impl FrameQueue {
    fn new(capacity: usize, mtu: usize) -> Self {
        let slot_bytes = ETH_HEADER_LEN + mtu;
        Self {
            arena: vec![0u8; capacity * slot_bytes].into_boxed_slice(),
            slot_bytes,
            lens: vec![0u32; capacity].into_boxed_slice(),
            head: 0,
            tail: 0,
        }
    }

    fn len(&self) -> usize {
        self.tail - self.head
    }

    /// Write `header` + `packet` into the next slot; `false` if the queue is full. The caller
    /// has checked `packet.len() <= mtu`.
    fn push(&mut self, header: &[u8; ETH_HEADER_LEN], packet: &[u8]) -> bool {
        if self.tail == self.lens.len() {
            self.compact();
            if self.tail == self.lens.len() {
                return false;
            }
        }
        let start = self.tail * self.slot_bytes;
        let frame = &mut self.arena[start..start + ETH_HEADER_LEN + packet.len()];
        frame[..ETH_HEADER_LEN].copy_from_slice(header);
        frame[ETH_HEADER_LEN..].copy_from_slice(packet);
        // At most 65 535 bytes (MAX_MTU + header, checked in `validate`).
        self.lens[self.tail] = frame.len() as u32;
        self.tail += 1;
        true
    }

    /// The frame in slot `i`.
    fn frame(&self, i: usize) -> &[u8] {
        let start = i * self.slot_bytes;
        &self.arena[start..start + self.lens[i] as usize]
    }

    /// Forget the first `n` queued frames (sent or dropped).
    fn consume(&mut self, n: usize) {
        self.head = (self.head + n).min(self.tail);
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
    }

    /// Forget everything; returns how many frames that was.
    fn clear(&mut self) -> usize {
        let n = self.len();
        self.consume(n);
        n
    }

    /// Move the backlog to the front so the whole capacity is free behind it (bounded:
    /// at most `capacity × slot` bytes moved, nothing allocated).
    fn compact(&mut self) {
        if self.head == 0 {
            return;
        }
        let (from, to) = (self.head * self.slot_bytes, self.tail * self.slot_bytes);
        self.arena.copy_within(from..to, 0);
        self.lens.copy_within(self.head..self.tail, 0);
        self.tail -= self.head;
        self.head = 0;
    }
}

/// One NIC's raw Ethernet transport. See the [module docs](self) for the design.
#[derive(Debug)]
pub struct PacketTransport {
    cfg: PacketConfig,
    open: Option<OpenSocket>,
    /// This NIC's MAC, as read at the last (re)open or `maintain`.
    own_mac: [u8; 6],
    /// Destination, source and EtherType, copied in front of every packet.
    header: [u8; ETH_HEADER_LEN],
    txq: FrameQueue,
    buffers: SocketBuffers,
    stats: TransportStats,
    packet_stats: PacketStats,
    last_open_error: Option<PacketError>,
}

impl PacketTransport {
    /// Validate `cfg`, create the socket, bind it to the device and EtherType, read the
    /// device's MAC, and allocate the send queue.
    ///
    /// # Errors
    /// [`PacketError`]: the config is inconsistent, raw sockets are not permitted, the device
    /// is missing, is not Ethernet or has a smaller MTU, or a socket call failed. Buffer
    /// sizes below the request are not an error: see [`Self::socket_buffers`].
    pub fn open(cfg: PacketConfig) -> Result<Self, PacketError> {
        cfg.validate()?;
        let mut t = Self {
            open: None,
            own_mac: [0; 6],
            header: [0; ETH_HEADER_LEN],
            txq: FrameQueue::new(cfg.batch, cfg.mtu),
            buffers: SocketBuffers::default(),
            stats: TransportStats::default(),
            packet_stats: PacketStats::default(),
            last_open_error: None,
            cfg,
        };
        let opened = open_socket(&t.cfg)?;
        t.install(opened);
        Ok(t)
    }

    /// The config this transport was opened with.
    #[must_use]
    pub fn config(&self) -> &PacketConfig {
        &self.cfg
    }

    /// This NIC's MAC (the source of every frame sent), as last read from the device.
    #[must_use]
    pub fn own_mac(&self) -> [u8; 6] {
        self.own_mac
    }

    /// The socket buffer sizes granted at the last (re)open.
    #[must_use]
    pub fn socket_buffers(&self) -> SocketBuffers {
        self.buffers
    }

    /// Counters specific to this transport.
    #[must_use]
    pub fn packet_stats(&self) -> &PacketStats {
        &self.packet_stats
    }

    /// Why the last reopen attempt failed, if it did (for the owner to log).
    #[must_use]
    pub fn last_open_error(&self) -> Option<&PacketError> {
        self.last_open_error.as_ref()
    }

    /// `true` while the socket is open.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// A receive batch sized for this transport: `batch` slots of one whole frame
    /// (14 + MTU bytes; a longer frame is counted as truncated).
    #[must_use]
    pub fn rx_batch(&self) -> RxBatch {
        RxBatch::new(
            self.cfg.batch,
            ETH_HEADER_LEN + self.cfg.mtu,
            self.cfg.batch,
        )
    }

    /// Take a freshly opened socket into use.
    fn install(&mut self, opened: Opened) {
        self.set_own_mac(opened.mac);
        self.buffers = opened.buffers;
        self.open = Some(OpenSocket {
            socket: opened.socket,
            ifindex: opened.ifindex,
        });
    }

    fn set_own_mac(&mut self, mac: [u8; 6]) {
        self.own_mac = mac;
        self.header[0..6].copy_from_slice(&self.cfg.peer_mac);
        self.header[6..12].copy_from_slice(&mac);
        let ethertype = self.cfg.tx_ethertype.unwrap_or(self.cfg.ethertype);
        self.header[12..14].copy_from_slice(&ethertype.to_be_bytes());
    }

    /// The device is gone: drop the socket and the queue.
    fn close(&mut self) {
        self.open = None;
        self.stats.tx_drop_closed += self.txq.clear() as u64;
        self.packet_stats.closed += 1;
    }

    /// The binding as the kernel sees it now: `None` if the device is gone (unbound, ifindex
    /// -1, or another index), else the device's current MAC.
    fn binding(&self) -> Option<[u8; 6]> {
        let open = self.open.as_ref()?;
        match sys::bound(open.socket.as_fd()) {
            Ok(b) if b.ifindex == open.ifindex => Some(b.mac),
            _ => None,
        }
    }

    /// Record the frame of slot `slot_start` (described by `meta`) in `batch` if it passes
    /// the filter; returns 1 if delivered.
    fn accept(&mut self, batch: &mut RxBatch, slot_start: usize, meta: &RecvMeta) -> usize {
        let len = meta.len;
        if meta.truncated || len > batch.slot_bytes() {
            self.stats.rx_drop_truncated += 1;
            return 0;
        }
        if len < ETH_HEADER_LEN {
            self.packet_stats.rx_drop_runt += 1;
            return 0;
        }
        if meta.pkttype != sys::PACKET_HOST {
            self.packet_stats.rx_drop_not_for_us += 1;
            return 0;
        }
        let Some(header) = batch
            .arena_mut()
            .get(slot_start..slot_start + ETH_HEADER_LEN)
        else {
            self.stats.rx_drop_truncated += 1;
            return 0;
        };
        if header[12..14] != self.cfg.ethertype.to_be_bytes() {
            self.packet_stats.rx_drop_ethertype += 1;
            return 0;
        }
        if header[6..12] != self.cfg.peer_mac {
            self.stats.rx_drop_foreign += 1;
            return 0;
        }
        if len < MIN_FRAME_LEN {
            self.packet_stats.rx_drop_runt += 1;
            return 0;
        }
        let payload = len - ETH_HEADER_LEN;
        if batch.push_segment(slot_start + ETH_HEADER_LEN, payload) {
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += payload as u64;
            1
        } else {
            self.stats.rx_drop_batch_full += 1;
            0
        }
    }
}

impl NicTransport for PacketTransport {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.open.as_ref().map(|o| o.socket.as_fd())
    }

    fn recv_batch(&mut self, batch: &mut RxBatch) -> io::Result<usize> {
        batch.clear();
        if self.open.is_none() {
            return Ok(0);
        }
        let slot_bytes = batch.slot_bytes();
        let slots = batch.slots();
        let mut metas = [RecvMeta::default(); MMSG_CHUNK];
        let mut next_slot = 0;
        let mut delivered = 0;
        let mut failure = None;
        // Budget: at most ceil(slots / MMSG_CHUNK) receive calls.
        while next_slot < slots {
            let Some(open) = self.open.as_ref() else {
                break;
            };
            let want = (slots - next_slot).min(MMSG_CHUNK);
            let got = {
                let start = next_slot * slot_bytes;
                let region = &mut batch.arena_mut()[start..start + want * slot_bytes];
                let mut chunks = region.chunks_exact_mut(slot_bytes);
                let mut bufs: [IoSliceMut<'_>; MMSG_CHUNK] =
                    std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
                sys::recv_frames(open.socket.as_fd(), &mut bufs[..want], &mut metas[..want])
            };
            match got {
                Ok(n) => {
                    if n > 0 {
                        self.stats.rx_batches += 1;
                    }
                    for (i, meta) in metas.iter().take(n).enumerate() {
                        delivered += self.accept(batch, (next_slot + i) * slot_bytes, meta);
                    }
                    if n < want {
                        break; // drained: skip the call that would say EAGAIN
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
            // ENETDOWN is the kernel's one-time report of a link that went down or a device
            // that was unregistered: ask the binding which.
            if self.binding().is_none() {
                self.close();
            }
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
        if !self.txq.push(&self.header, packet) {
            self.stats.tx_drop_queue_full += 1;
            return Err(QueueError::Full);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut first_error = None;
        // Each turn sends or drops at least one frame, or stops: bounded by the queue length.
        while self.txq.len() > 0 {
            let Some(open) = self.open.as_ref() else {
                break;
            };
            let n = self.txq.len().min(MMSG_CHUNK);
            let head = self.txq.head;
            let sent = {
                let frames: [IoSlice<'_>; MMSG_CHUNK] = std::array::from_fn(|i| {
                    IoSlice::new(if i < n { self.txq.frame(head + i) } else { &[] })
                });
                sys::send_frames(open.socket.as_fd(), &frames[..n])
            };
            self.stats.tx_syscalls += 1;
            let e = match sent {
                Ok(k) => {
                    let bytes: usize = (head..head + k)
                        .map(|i| self.txq.lens[i] as usize - ETH_HEADER_LEN)
                        .sum();
                    self.stats.tx_packets += k as u64;
                    self.stats.tx_bytes += bytes as u64;
                    self.txq.consume(k);
                    if k == 0 {
                        break; // not expected from sendmmsg; never spin
                    }
                    continue;
                }
                Err(e) => e,
            };
            match e.raw_os_error() {
                _ if e.kind() == io::ErrorKind::WouldBlock => break, // the rest stays queued
                Some(libc::ENOBUFS) => {
                    // The qdisc's queue is full: this frame is lost, the next may fit.
                    self.packet_stats.tx_qdisc_drops += 1;
                    self.stats.tx_errors += 1;
                    self.txq.consume(1);
                    first_error.get_or_insert(e);
                }
                Some(libc::ENXIO | libc::ENODEV | libc::ENETDOWN) => {
                    // Every queued frame would fail the same way.
                    if self.binding().is_none() {
                        self.close(); // counts the queue as tx_drop_closed
                    } else {
                        self.stats.tx_errors += self.txq.clear() as u64;
                    }
                    return Err(e);
                }
                _ => {
                    // EMSGSIZE (the device's MTU shrank), EPERM, ...: drop this frame.
                    self.stats.tx_errors += 1;
                    self.txq.consume(1);
                    first_error.get_or_insert(e);
                }
            }
        }
        self.txq.compact();
        first_error.map_or(Ok(()), Err)
    }

    fn has_backlog(&self) -> bool {
        self.txq.len() > 0
    }

    fn mtu(&self) -> usize {
        self.cfg.mtu
    }

    fn stats(&self) -> TransportStats {
        self.stats
    }

    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        let p = self.packet_stats();
        out("closed", p.closed);
        out("reopen_failures", p.reopen_failures);
        out("rx_drop_runt", p.rx_drop_runt);
        out("rx_drop_ethertype", p.rx_drop_ethertype);
        out("rx_drop_not_for_us", p.rx_drop_not_for_us);
        out("tx_qdisc_drops", p.tx_qdisc_drops);
        out("mac_changes", p.mac_changes);
    }

    fn maintain(&mut self) -> bool {
        if self.open.is_some() {
            match self.binding() {
                Some(mac) => {
                    if mac != self.own_mac {
                        self.packet_stats.mac_changes += 1;
                        self.set_own_mac(mac);
                    }
                    return false;
                }
                // Gone while idle: close, and try the reopen right away (the device may be
                // back under a new ifindex already).
                None => self.close(),
            }
        }
        match open_socket(&self.cfg) {
            Ok(opened) => {
                self.install(opened);
                self.stats.reopened += 1;
                self.last_open_error = None;
                true
            }
            Err(e) => {
                self.packet_stats.reopen_failures += 1;
                self.last_open_error = Some(e);
                false
            }
        }
    }
}

/// A socket bound to the configured device, with what was learnt opening it.
#[derive(Debug)]
struct Opened {
    socket: Socket,
    ifindex: i32,
    mac: [u8; 6],
    buffers: SocketBuffers,
}

/// Create, size and bind a packet socket for `cfg`, in the calling thread's network
/// namespace.
fn open_socket(cfg: &PacketConfig) -> Result<Opened, PacketError> {
    let fd = sys::socket().map_err(|source| match source.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => PacketError::Permission { source },
        _ => PacketError::Socket { source },
    })?;
    let device = || cfg.device.clone();
    let dev_error = |what| {
        move |source: io::Error| match source.raw_os_error() {
            Some(libc::ENODEV) => PacketError::NoSuchDevice {
                device: cfg.device.clone(),
                source,
            },
            _ => PacketError::Device {
                what,
                device: cfg.device.clone(),
                source,
            },
        }
    };
    let ifindex = sys::ifindex(fd.as_fd(), &cfg.device).map_err(dev_error("the index"))?;
    let device_mtu = sys::mtu(fd.as_fd(), &cfg.device).map_err(dev_error("the MTU"))?;
    if cfg.mtu > device_mtu as usize {
        return Err(PacketError::MtuAboveDevice {
            device: device(),
            mtu: cfg.mtu,
            device_mtu,
        });
    }
    let socket = Socket::from(fd);
    let buffers = crate::udp::set_buffers(&socket, cfg.socket_buffer_bytes)
        .map_err(|(option, source)| PacketError::SocketOption { option, source })?;
    sys::bind(socket.as_fd(), ifindex, cfg.ethertype).map_err(|source| {
        match source.raw_os_error() {
            Some(libc::ENODEV) => PacketError::NoSuchDevice {
                device: device(),
                source,
            },
            _ => PacketError::Bind {
                device: device(),
                source,
            },
        }
    })?;
    let bound = sys::bound(socket.as_fd()).map_err(dev_error("the binding"))?;
    if bound.ifindex != ifindex {
        // Deleted between the lookup and the bind.
        return Err(PacketError::NoSuchDevice {
            device: device(),
            source: io::Error::from_raw_os_error(libc::ENODEV),
        });
    }
    if bound.mac == [0; 6] {
        return Err(PacketError::NotEthernet { device: device() });
    }
    Ok(Opened {
        socket,
        ifindex,
        mac: bound.mac,
        buffers,
    })
}
