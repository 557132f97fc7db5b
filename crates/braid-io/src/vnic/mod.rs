//! The virtual NIC: a multi-queue TUN (or TAP) device that applications or a VM attach to,
//! with virtio-net header offloads, RSS over its queues, and batched, allocation-free
//! per-queue receive and send.
//!
//! What this module owns: [`VnicConfig`], [`Vnic`] (the device, its queues, RSS, offload
//! state), [`VnicQueue`] (one queue file descriptor with its buffers and counters) and
//! [`VnicError`]. What it does not: the engine that decides what to do with a packet
//! (braid-core), the per-NIC transports, the worker threads and the epoll loop (the data
//! path), and link configuration itself ([`crate::netlink`], which it calls).
//!
//! # Device and queues
//!
//! [`Vnic::create`] opens `/dev/net/tun` through tun-rs (`IFF_TUN` or `IFF_TAP`, `IFF_NO_PI`,
//! always `IFF_MULTI_QUEUE`) once per queue; every queue fd is non-blocking. The device is not
//! persistent: the kernel removes it when the last queue fd closes, i.e. when the [`Vnic`] is
//! dropped (or a process that crashed exits). MTU, addresses and the link state are set
//! through braid's [`crate::netlink`] module, not tun-rs' ioctls: tun-rs is built without its
//! `address-management` feature (which pulls a second netlink stack) and with
//! `inherit_enable_state()`, so it issues no `SIOCSIF*` ioctl at all. Order: MTU, addresses,
//! `gso_max_segs` (offload only), then up. A name that already exists is refused
//! ([`VnicError::Exists`]): `TUNSETIFF` would otherwise silently attach braid's queues to
//! someone else's multi-queue device.
//!
//! The MTU may be anything in 68..=65535 (the TUN driver's range), e.g. 9000 over NICs of
//! 1500: the engine fragments across NICs. A receive batch's slots must hold
//! [`Vnic::max_frame_bytes`] (the MTU; plus 18 bytes of Ethernet + VLAN header on TAP).
//!
//! # Offloads (virtio-net header)
//!
//! With [`VnicConfig::offload`] on (TUN only), the device is opened with `IFF_VNET_HDR` and
//! `TUNSETOFFLOAD(TUN_F_CSUM | TSO4 | TSO6)`, then `| USO4 | USO6` (Linux ≥ 6.2); this is
//! tun-rs' probe. The kernel then hands braid TCP/UDP super-packets of up to 64 KiB and
//! packets whose checksum is only partial, which costs the sending application far less CPU
//! (one stack traversal per 64 KiB instead of per MTU). The mask is device-wide. If the kernel
//! refuses, the device is reopened without offloads and [`Vnic::offload_state`] says why
//! ([`OffloadState::Off`] with [`OffloadOff::Refused`]); creation never fails because of
//! offloads. TAP keeps offloads off: tun-rs' GSO code expects an IP header first.
//!
//! - **Receive** ([`VnicQueue::recv_batch`]): each read is a `readv` of three pieces: the
//!   10-byte virtio header, the batch slot, and an overflow area. An ordinary packet lands in
//!   its slot with no copy (a partial checksum is completed in place); a super-packet is
//!   reassembled contiguously in the overflow area (one copy of its first slot's worth) and
//!   split by tun-rs' port of wireguard-go's `gsoSplit` straight into the following slots
//!   (see `vnic/offload.rs`): ordinary IP packets of at most the MTU, with complete
//!   checksums. A super-packet that does not fit the free slots is kept and split first on
//!   the next call; `gso_max_segs` is set to [`VnicConfig::gso_max_segs`] so one always fits
//!   a batch.
//! - **Send** ([`VnicQueue::flush`]): queued TCP (and, with USO, UDP) packets of one flow are
//!   coalesced into super-packets in place (GRO done by the sender, wireguard-go's rules; see
//!   `vnic/coalesce.rs`, which also says why tun-rs' own `send_multiple` is not used: it
//!   allocates per packet) and each write carries its virtio header: fewer, larger skbs.
//!   Other packets are written one by one with a `GSO_NONE` header. If the kernel refuses a
//!   super-packet (`EINVAL`) the queue stops coalescing (counted in
//!   [`VnicQueueStats::tx_gro_disabled`]) and writes every packet with `GSO_NONE` from then
//!   on.
//!
//! What this kernel gave (Linux 6.18, this project's 2-core VM; `cargo test -p braid-io
//! vnic:: -- --nocapture` prints it): offloads **on**, `TUNSETOFFLOAD` accepted with
//! CSUM|TSO4|TSO6 and with USO4|USO6, `gso_max_segs` settable to 64. Observed in the tests: a
//! local UDP socket's datagrams arrive with partial checksums (completed here); a 5-segment
//! `UDP_SEGMENT` send arrives as one super-packet and is split into 5; 8 queued datagrams of
//! one flow go out as one USO write the kernel accepts; a 16 MiB TCP stream between two vNICs
//! (one thread moving packets, as braid will) arrives byte-exact, the sender's kernel handing
//! over ~270 TSO super-packets of ~43 segments and the receiver's accepting ~275 coalesced
//! writes for 11 600 packets. With offloads off the same stream is ~1.5× slower.
//!
//! # RSS
//!
//! [`Vnic::queue_for`] hashes a packet with braid-core's Toeplitz [`Rss`] (configured key and
//! indirection table) and names the queue to write it to, which is also the queue (and so the
//! worker) that owns the flow. The default key is [`ToeplitzKey::symmetric`], so both
//! directions of a flow pick the same queue. For packets the kernel sends *to* braid, the
//! TUN driver picks the queue itself (`tun_automq_select_queue`): it remembers, per symmetric
//! flow hash, the queue that last wrote a packet of that flow and sends the flow's packets to
//! that queue; a flow braid has not written yet goes to `hash % queues`. Writing each flow on
//! its RSS queue therefore keeps its replies on that queue too, and one flow is never read
//! from two queues (which would reorder it).
//!
//! # Hot path
//!
//! `recv_batch`, `queue` and `flush` allocate nothing after the first call (the first
//! `recv_batch` with offloads sizes the overflow area for the batch's slot size; a test
//! counts allocations), log nothing, and do at most `slots` reads per batch and one write per
//! (super-)packet per flush.

mod coalesce;
mod offload;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};

use braid_core::rss::{Rss, RssError, ToeplitzKey};
use braid_wire::IpSummary;
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

use self::coalesce::Coalescer;
use self::offload::{MAX_GSO_SEGMENTS, RxVnetHdr, VNET_HDR_LEN, VnetDrop};
use crate::netlink::{self, NetlinkError};
use crate::transport::{NicTransport, QueueError, RxBatch, TransportStats};

/// Smallest MTU accepted (RFC 791: every IPv4 host must handle 68 bytes).
pub const MIN_MTU: u32 = 68;

/// Largest MTU accepted (the TUN driver's `MAX_MTU`).
pub const MAX_MTU: u32 = 65_535;

/// Most queues a vNIC may have (the kernel's `MAX_TAP_QUEUES`, and RSS' `MAX_QUEUES`).
pub const MAX_QUEUES: usize = 256;

/// Default per-queue send queue, in packets (the data path's batch).
pub const DEFAULT_TX_QUEUE_PACKETS: usize = 64;

/// Default `gso_max_segs` with offloads (the data path's receive batch).
pub const DEFAULT_GSO_MAX_SEGS: u32 = 64;

/// Ethernet header plus one VLAN tag: what a TAP frame adds to the MTU.
const ETH_VLAN_HEADER_BYTES: usize = 18;

/// The largest super-packet the kernel can hand over: an IPv6 header and a full 16-bit
/// payload (an IPv4 one is at most 65 535 in all), plus an Ethernet + VLAN header.
const MAX_SUPER_PACKET_BYTES: usize = 40 + 65_535 + ETH_VLAN_HEADER_BYTES;

/// Send buffer with offloads: the virtio header and a 64 KiB super-packet.
const TX_GRO_BUF_BYTES: usize = VNET_HDR_LEN + 65_535;

/// `EINVAL`: the kernel refused a write's virtio header.
const EINVAL: i32 = 22;

/// Layer of the virtual NIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VnicKind {
    /// Layer 3: each packet is an IPv4 or IPv6 packet.
    Tun,
    /// Layer 2: each packet is an Ethernet frame (for a VM's tap interface).
    Tap,
}

/// How to build a virtual NIC.
#[derive(Clone, Debug)]
pub struct VnicConfig {
    /// Interface name, 1..=15 bytes (e.g. `braid0`).
    pub name: String,
    /// TUN or TAP.
    pub kind: VnicKind,
    /// Number of queues (file descriptors), 1..=[`MAX_QUEUES`]; one per vNIC worker.
    pub queues: usize,
    /// MTU in bytes, [`MIN_MTU`]..=[`MAX_MTU`]; may exceed the physical NICs' (default 1500).
    pub mtu: u32,
    /// Addresses with prefix lengths, added in order (default none).
    pub addresses: Vec<(IpAddr, u8)>,
    /// Try virtio-net header offloads (TSO/USO/checksum, GSO split on receive, GRO on
    /// send). TUN only; refused offloads fall back to none (default `true`).
    pub offload: bool,
    /// RSS over the queues: key and indirection table. Must spread over exactly
    /// [`VnicConfig::queues`] queues (default: symmetric key, round-robin table).
    pub rss: Rss,
    /// Packets each queue can hold between `queue` and `flush` (default
    /// [`DEFAULT_TX_QUEUE_PACKETS`]). With offloads each takes a 64 KiB buffer.
    pub tx_queue_packets: usize,
    /// Segments per GSO super-packet the kernel may hand over (`gso_max_segs`), at most the
    /// receive batch's slots and 128 (default [`DEFAULT_GSO_MAX_SEGS`]).
    pub gso_max_segs: u32,
}

impl VnicConfig {
    /// A configuration with the defaults documented on each field.
    ///
    /// # Errors
    /// [`VnicError::Queues`] if `queues` is 0 or above [`MAX_QUEUES`].
    pub fn new(name: impl Into<String>, kind: VnicKind, queues: usize) -> Result<Self, VnicError> {
        let name = name.into();
        let rss = u16::try_from(queues)
            .map_err(|_| RssError::QueueCount { queues: u16::MAX })
            .and_then(|q| Rss::new(ToeplitzKey::symmetric(), q))
            .map_err(|_| VnicError::Queues {
                name: name.clone(),
                queues,
            })?;
        Ok(Self {
            name,
            kind,
            queues,
            mtu: 1500,
            addresses: Vec::new(),
            offload: true,
            rss,
            tx_queue_packets: DEFAULT_TX_QUEUE_PACKETS,
            gso_max_segs: DEFAULT_GSO_MAX_SEGS,
        })
    }

    /// Checks every field; [`Vnic::create`] calls it first.
    ///
    /// # Errors
    /// The [`VnicError`] of the first bad field.
    pub fn validate(&self) -> Result<(), VnicError> {
        let name = || self.name.clone();
        netlink::check_ifname(&self.name).map_err(VnicError::Name)?;
        if self.queues == 0 || self.queues > MAX_QUEUES {
            return Err(VnicError::Queues {
                name: name(),
                queues: self.queues,
            });
        }
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(VnicError::Mtu {
                name: name(),
                mtu: self.mtu,
            });
        }
        if usize::from(self.rss.queues()) != self.queues {
            return Err(VnicError::RssQueues {
                name: name(),
                rss: self.rss.queues(),
                queues: self.queues,
            });
        }
        if self.tx_queue_packets == 0 {
            return Err(VnicError::TxQueue { name: name() });
        }
        if !(1..=MAX_GSO_SEGMENTS as u32).contains(&self.gso_max_segs) {
            return Err(VnicError::GsoMaxSegs {
                name: name(),
                segs: self.gso_max_segs,
            });
        }
        Ok(())
    }
}

/// Why a virtual NIC could not be created. Each variant names the device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VnicError {
    /// The name is not a valid interface name.
    #[error("invalid vnic name")]
    Name(#[source] NetlinkError),
    /// The queue count is out of range.
    #[error("vnic {name}: {queues} queues requested; use 1..={MAX_QUEUES}")]
    Queues {
        /// The device.
        name: String,
        /// The count asked for.
        queues: usize,
    },
    /// The MTU is out of range.
    #[error("vnic {name}: mtu {mtu} is outside {MIN_MTU}..={MAX_MTU}")]
    Mtu {
        /// The device.
        name: String,
        /// The MTU asked for.
        mtu: u32,
    },
    /// The RSS configuration spreads over another number of queues.
    #[error(
        "vnic {name}: rss spreads over {rss} queues but the vnic has {queues}: build the Rss \
         with the vnic's queue count"
    )]
    RssQueues {
        /// The device.
        name: String,
        /// Queues of the RSS configuration.
        rss: u16,
        /// Queues of the vNIC.
        queues: usize,
    },
    /// The send queue length is 0.
    #[error("vnic {name}: tx_queue_packets must be at least 1")]
    TxQueue {
        /// The device.
        name: String,
    },
    /// `gso_max_segs` is out of range.
    #[error("vnic {name}: gso_max_segs {segs} is outside 1..={MAX_GSO_SEGMENTS}")]
    GsoMaxSegs {
        /// The device.
        name: String,
        /// The value asked for.
        segs: u32,
    },
    /// An interface of that name already exists.
    #[error(
        "vnic {name}: a network interface of that name already exists: pick another name or \
         remove it (`ip link del {name}`)"
    )]
    Exists {
        /// The device.
        name: String,
    },
    /// Opening the TUN/TAP device failed.
    #[error("open tun/tap device {name}: {hint}")]
    Open {
        /// The device.
        name: String,
        /// What to check.
        hint: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Opening an additional queue failed.
    #[error("open queue {queue} of vnic {name}: {hint}")]
    OpenQueue {
        /// The device.
        name: String,
        /// The queue index.
        queue: usize,
        /// What to check.
        hint: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Making a queue non-blocking or reading the device name failed.
    #[error("set up queue {queue} of vnic {name}")]
    Queue {
        /// The device.
        name: String,
        /// The queue index.
        queue: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Configuring the link over netlink failed.
    #[error("configure vnic {name}")]
    Configure {
        /// The device.
        name: String,
        /// The netlink error (names the operation and what to fix).
        #[source]
        source: NetlinkError,
    },
}

/// Whether the vNIC uses virtio-net header offloads.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OffloadState {
    /// Virtio-net headers are on, with TCP segmentation offload (TSO4/TSO6) and checksum
    /// offload.
    On {
        /// UDP segmentation offload (USO4/USO6) is on too (Linux ≥ 6.2).
        uso: bool,
        /// The `gso_max_segs` the kernel accepted; `None` if it refused to change it (then a
        /// super-packet larger than a batch is dropped and counted).
        gso_max_segs: Option<u32>,
    },
    /// No virtio-net headers: the kernel segments and checksums everything itself.
    Off(OffloadOff),
}

impl OffloadState {
    /// `true` if virtio-net headers are on.
    #[must_use]
    pub fn is_on(&self) -> bool {
        matches!(self, Self::On { .. })
    }
}

impl fmt::Display for OffloadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::On { uso, gso_max_segs } => {
                write!(f, "on (csum, tso4, tso6")?;
                if *uso {
                    write!(f, ", uso4, uso6")?;
                }
                match gso_max_segs {
                    Some(n) => write!(f, "; gso_max_segs {n})"),
                    None => write!(f, "; gso_max_segs not settable)"),
                }
            }
            Self::Off(OffloadOff::Config) => write!(f, "off (disabled in config)"),
            Self::Off(OffloadOff::Tap) => write!(f, "off (not supported on TAP)"),
            Self::Off(OffloadOff::Refused { error }) => {
                write!(f, "off (the kernel refused: {error})")
            }
        }
    }
}

/// Why offloads are off.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OffloadOff {
    /// [`VnicConfig::offload`] is `false`.
    Config,
    /// The vNIC is a TAP device.
    Tap,
    /// The kernel refused `IFF_VNET_HDR` or `TUNSETOFFLOAD`; the device was reopened without.
    Refused {
        /// The error the kernel returned.
        error: String,
    },
}

/// Counters of one queue (plain integers: one owner thread, summed at scrape).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnicQueueStats {
    /// IP packets (TUN) or frames (TAP) handed to the caller, after splitting.
    pub rx_packets: u64,
    /// Bytes of those packets.
    pub rx_bytes: u64,
    /// Read system calls that returned data.
    pub rx_reads: u64,
    /// Read errors other than "would block".
    pub rx_errors: u64,
    /// Packets larger than the batch slot (or the read buffers), dropped.
    pub rx_drop_truncated: u64,
    /// Packets with an inconsistent virtio header (or too short for it), dropped.
    pub rx_drop_malformed: u64,
    /// Super-packets of more segments than a batch holds, dropped.
    pub rx_drop_too_many_segments: u64,
    /// Super-packets split.
    pub rx_gso_splits: u64,
    /// Packets produced by those splits.
    pub rx_gso_segments: u64,
    /// Partial checksums completed (`VIRTIO_NET_HDR_F_NEEDS_CSUM` without GSO).
    pub rx_csum_completed: u64,
    /// Packets written to the kernel (a coalesced super-packet counts each packet in it).
    pub tx_packets: u64,
    /// Bytes of those packets.
    pub tx_bytes: u64,
    /// Write system calls.
    pub tx_writes: u64,
    /// Writes the kernel refused (their packets are lost).
    pub tx_errors: u64,
    /// Packets dropped because the send queue was full.
    pub tx_drop_queue_full: u64,
    /// Packets dropped because they exceed the MTU.
    pub tx_drop_too_big: u64,
    /// Packets dropped because they are shorter than an IPv4 header (TUN) or an Ethernet
    /// header (TAP).
    pub tx_drop_runt: u64,
    /// Packets merged into another packet's super-packet on send (GRO).
    pub tx_coalesced: u64,
    /// Times send coalescing was switched off after the kernel refused a coalesced write.
    pub tx_gro_disabled: u64,
}

impl VnicQueueStats {
    /// Adds `other` to `self`, counter by counter.
    pub fn add(&mut self, other: &Self) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.rx_reads += other.rx_reads;
        self.rx_errors += other.rx_errors;
        self.rx_drop_truncated += other.rx_drop_truncated;
        self.rx_drop_malformed += other.rx_drop_malformed;
        self.rx_drop_too_many_segments += other.rx_drop_too_many_segments;
        self.rx_gso_splits += other.rx_gso_splits;
        self.rx_gso_segments += other.rx_gso_segments;
        self.rx_csum_completed += other.rx_csum_completed;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        self.tx_writes += other.tx_writes;
        self.tx_errors += other.tx_errors;
        self.tx_drop_queue_full += other.tx_drop_queue_full;
        self.tx_drop_too_big += other.tx_drop_too_big;
        self.tx_drop_runt += other.tx_drop_runt;
        self.tx_coalesced += other.tx_coalesced;
        self.tx_gro_disabled += other.tx_gro_disabled;
    }
}

/// A virtual NIC: a multi-queue TUN/TAP device, configured, up, and removed on drop.
///
/// Call protocol: [`Vnic::create`]; give each queue ([`Vnic::queues_mut`]) to its worker,
/// which waits on [`VnicQueue::fd`] and calls [`VnicQueue::recv_batch`] when readable, and
/// [`VnicQueue::queue`] + [`VnicQueue::flush`] to deliver packets, choosing the queue with
/// [`Vnic::queue_for`]. Drop the `Vnic` to remove the device.
pub struct Vnic {
    name: String,
    ifindex: u32,
    kind: VnicKind,
    mtu: u32,
    rss: Rss,
    offload: OffloadState,
    queues: Vec<VnicQueue>,
}

impl fmt::Debug for Vnic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vnic")
            .field("name", &self.name)
            .field("ifindex", &self.ifindex)
            .field("kind", &self.kind)
            .field("mtu", &self.mtu)
            .field("offload", &self.offload)
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl Vnic {
    /// Creates the device with `cfg.queues` non-blocking queues, configures MTU and
    /// addresses and sets it up (see the module doc). Offloads that the kernel refuses are
    /// recorded in [`Vnic::offload_state`], never an error.
    ///
    /// # Errors
    /// [`VnicError`]: a bad configuration, an existing interface of that name, the device
    /// could not be opened (not root, no `/dev/net/tun`), or netlink refused the
    /// configuration. Whatever was created is removed again.
    pub fn create(cfg: &VnicConfig) -> Result<Self, VnicError> {
        cfg.validate()?;
        let configure_err = |source| VnicError::Configure {
            name: cfg.name.clone(),
            source,
        };
        if netlink::link_index(&cfg.name)
            .map_err(configure_err)?
            .is_some()
        {
            return Err(VnicError::Exists {
                name: cfg.name.clone(),
            });
        }
        let want_offload = cfg.offload && cfg.kind == VnicKind::Tun;
        let (first, mut offload) = match open(cfg, want_offload) {
            Ok(dev) if want_offload => {
                let uso = dev.udp_gso();
                let state = OffloadState::On {
                    uso,
                    gso_max_segs: None,
                };
                (dev, state)
            }
            Ok(dev) => {
                let why = if cfg.offload {
                    OffloadOff::Tap
                } else {
                    OffloadOff::Config
                };
                (dev, OffloadState::Off(why))
            }
            Err(refused) if want_offload => {
                let dev = open(cfg, false).map_err(|source| VnicError::Open {
                    name: cfg.name.clone(),
                    hint: open_hint(&source),
                    source,
                })?;
                let error = refused.to_string();
                tracing::warn!(vnic = %cfg.name, %error, "tun offloads refused; running without");
                (dev, OffloadState::Off(OffloadOff::Refused { error }))
            }
            Err(source) => {
                return Err(VnicError::Open {
                    name: cfg.name.clone(),
                    hint: open_hint(&source),
                    source,
                });
            }
        };
        let mut devices = Vec::with_capacity(cfg.queues);
        devices.push(first);
        for queue in 1..cfg.queues {
            let dev = devices[0]
                .try_clone()
                .map_err(|source| VnicError::OpenQueue {
                    name: cfg.name.clone(),
                    queue,
                    hint: open_hint(&source),
                    source,
                })?;
            devices.push(dev);
        }
        for (queue, dev) in devices.iter().enumerate() {
            dev.set_nonblocking(true)
                .map_err(|source| VnicError::Queue {
                    name: cfg.name.clone(),
                    queue,
                    source,
                })?;
        }
        let name = devices[0].name().map_err(|source| VnicError::Queue {
            name: cfg.name.clone(),
            queue: 0,
            source,
        })?;

        let configure_err = |source| VnicError::Configure {
            name: name.clone(),
            source,
        };
        netlink::set_link(&name, Some(cfg.mtu), false).map_err(configure_err)?;
        for &(addr, prefix_len) in &cfg.addresses {
            netlink::add_address(&name, addr, prefix_len).map_err(configure_err)?;
        }
        if let OffloadState::On { gso_max_segs, .. } = &mut offload {
            match netlink::set_gso_max_segs(&name, cfg.gso_max_segs) {
                Ok(()) => *gso_max_segs = Some(cfg.gso_max_segs),
                Err(error) => {
                    tracing::warn!(
                        vnic = %name,
                        %error,
                        "gso_max_segs not set; large super-packets will be dropped"
                    );
                }
            }
        }
        netlink::set_link(&name, None, true).map_err(configure_err)?;
        let ifindex = netlink::link_index(&name)
            .map_err(configure_err)?
            .ok_or_else(|| {
                configure_err(NetlinkError::NoSuchLink {
                    ifname: name.clone(),
                })
            })?;

        let frame_max = frame_max(cfg.kind, cfg.mtu);
        let queues = devices
            .into_iter()
            .enumerate()
            .map(|(index, dev)| VnicQueue::new(index, dev, cfg, frame_max, &offload))
            .collect();
        tracing::info!(
            vnic = %name,
            ifindex,
            queues = cfg.queues,
            mtu = cfg.mtu,
            offload = %offload,
            "vnic created"
        );
        Ok(Self {
            name,
            ifindex,
            kind: cfg.kind,
            mtu: cfg.mtu,
            rss: cfg.rss.clone(),
            offload,
            queues,
        })
    }

    /// The interface name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index.
    #[must_use]
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// TUN or TAP.
    #[must_use]
    pub fn kind(&self) -> VnicKind {
        self.kind
    }

    /// The MTU set at creation.
    #[must_use]
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// The largest packet (TUN) or frame (TAP) a queue reads or writes: the slot size a
    /// receive batch needs.
    #[must_use]
    pub fn max_frame_bytes(&self) -> usize {
        frame_max(self.kind, self.mtu)
    }

    /// A receive batch of `slots` packets sized for this vNIC.
    #[must_use]
    pub fn rx_batch(&self, slots: usize) -> RxBatch {
        RxBatch::new(slots, self.max_frame_bytes(), slots)
    }

    /// Whether offloads are on, and why not if they are off.
    #[must_use]
    pub fn offload_state(&self) -> &OffloadState {
        &self.offload
    }

    /// Move the queues out, to give them to the data-path workers (index `i` is RSS queue
    /// `i`). The device lives as long as one of its queues is open: it is removed when the
    /// last queue is dropped, whoever holds it. The `Vnic` keeps its name and settings.
    pub fn take_queues(&mut self) -> Vec<VnicQueue> {
        std::mem::take(&mut self.queues)
    }

    /// The queues, index `i` being queue `i` of RSS.
    pub fn queues_mut(&mut self) -> &mut [VnicQueue] {
        &mut self.queues
    }

    /// The queues, read-only (fds, counters).
    #[must_use]
    pub fn queues(&self) -> &[VnicQueue] {
        &self.queues
    }

    /// The RSS configuration.
    #[must_use]
    pub fn rss(&self) -> &Rss {
        &self.rss
    }

    /// The queue for `packet` (an IP packet on TUN, an Ethernet frame on TAP) by RSS: where
    /// to write it, and which worker owns its flow. A packet that does not parse goes to
    /// queue 0. Never panics, never allocates.
    #[must_use]
    pub fn queue_for(&self, packet: &[u8]) -> usize {
        rss_queue(&self.rss, self.kind, packet)
    }

    /// The counters of all queues added up.
    #[must_use]
    pub fn stats(&self) -> VnicQueueStats {
        let mut sum = VnicQueueStats::default();
        for q in &self.queues {
            sum.add(q.stats());
        }
        sum
    }
}

/// The RSS queue of a packet of `kind`; 0 if it does not parse.
fn rss_queue(rss: &Rss, kind: VnicKind, packet: &[u8]) -> usize {
    let summary = match kind {
        VnicKind::Tun => IpSummary::parse_l3(packet),
        VnicKind::Tap => IpSummary::parse_l2(packet),
    };
    summary.map_or(0, |s| usize::from(rss.queue_for(&s)))
}

fn frame_max(kind: VnicKind, mtu: u32) -> usize {
    let mtu = usize::try_from(mtu).expect("invariant: mtu ≤ 65535 fits usize");
    match kind {
        VnicKind::Tun => mtu,
        VnicKind::Tap => mtu + ETH_VLAN_HEADER_BYTES,
    }
}

/// Opens the first queue; tun-rs issues `TUNSETIFF` and (with `offload`) `TUNSETOFFLOAD`,
/// and nothing else (no address, MTU or flag ioctls).
fn open(cfg: &VnicConfig, offload: bool) -> io::Result<SyncDevice> {
    let layer = match cfg.kind {
        VnicKind::Tun => Layer::L3,
        VnicKind::Tap => Layer::L2,
    };
    DeviceBuilder::new()
        .name(cfg.name.clone())
        .layer(layer)
        .multi_queue(true)
        .offload(offload)
        .inherit_enable_state()
        .build_sync()
}

fn open_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(1 | 13) => "permission denied: needs CAP_NET_ADMIN (run as root)",
        Some(2 | 19) => "no /dev/net/tun: load the tun module (`modprobe tun`)",
        Some(16) => "busy: a device of that name exists with other flags, or has all its queues",
        Some(22) => "the kernel refused the flags (is IFF_MULTI_QUEUE supported?)",
        _ => "see the OS error",
    }
}

/// What one read did to the batch.
enum Step {
    /// Recorded this many packets in consecutive slots.
    Used(usize),
    /// Dropped the packet (counted).
    Dropped,
    /// Read a super-packet that does not fit the free slots; it is kept for the next call.
    Pending,
}

/// One queue of a [`Vnic`]: its non-blocking file descriptor, pre-allocated buffers and
/// counters. Owned by one thread.
pub struct VnicQueue {
    index: usize,
    dev: SyncDevice,
    frame_max: usize,
    /// Shortest packet accepted for sending.
    frame_min: usize,
    /// Every read and write carries a virtio-net header.
    vnet: bool,
    rx_hdr: [u8; VNET_HDR_LEN],
    /// Overflow area of a read; a super-packet is made contiguous here (vnet only).
    rx_big: Vec<u8>,
    /// A super-packet (header, length in `rx_big`) that did not fit the last batch.
    rx_pending: Option<(RxVnetHdr, usize)>,
    /// Send buffers, each with the virtio header room first when `vnet`.
    tx_bufs: Vec<Vec<u8>>,
    tx_queued: usize,
    coalescer: Coalescer,
    /// The device accepts UDP super-packets (USO), so UDP is coalesced too.
    uso: bool,
    /// Coalesce on send (vnet only; cleared if the kernel refuses a coalesced write).
    tx_gro: bool,
    stats: VnicQueueStats,
}

impl fmt::Debug for VnicQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VnicQueue")
            .field("index", &self.index)
            .field("fd", &self.dev.as_fd())
            .field("vnet", &self.vnet)
            .field("tx_gro", &self.tx_gro)
            .field("tx_queued", &self.tx_queued)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl VnicQueue {
    fn new(
        index: usize,
        dev: SyncDevice,
        cfg: &VnicConfig,
        frame_max: usize,
        offload: &OffloadState,
    ) -> Self {
        let vnet = offload.is_on();
        let tx_buf_bytes = if vnet { TX_GRO_BUF_BYTES } else { frame_max };
        let tx_bufs = (0..cfg.tx_queue_packets)
            .map(|_| Vec::with_capacity(tx_buf_bytes))
            .collect();
        Self {
            index,
            dev,
            frame_max,
            frame_min: match cfg.kind {
                VnicKind::Tun => 20,
                VnicKind::Tap => 14,
            },
            vnet,
            rx_hdr: [0; VNET_HDR_LEN],
            rx_big: if vnet {
                vec![0; frame_max + MAX_SUPER_PACKET_BYTES]
            } else {
                Vec::new()
            },
            rx_pending: None,
            tx_bufs,
            tx_queued: 0,
            coalescer: Coalescer::new(cfg.tx_queue_packets),
            uso: matches!(offload, OffloadState::On { uso: true, .. }),
            tx_gro: vnet,
            stats: VnicQueueStats::default(),
        }
    }

    /// This queue's index (its RSS queue number).
    #[must_use]
    pub fn index(&self) -> usize {
        self.index
    }

    /// The descriptor to wait on for readability (non-blocking).
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &VnicQueueStats {
        &self.stats
    }

    /// `true` while sends are coalesced (offloads on and not refused).
    #[must_use]
    pub fn tx_gro(&self) -> bool {
        self.vnet && self.tx_gro
    }

    /// `true` if packets are queued but not yet flushed.
    #[must_use]
    pub fn has_backlog(&self) -> bool {
        self.tx_queued > 0
    }

    /// Receives what is ready, without blocking, into `batch` (cleared first): up to
    /// `batch.slots()` packets, each one IP packet (TUN) or Ethernet frame (TAP) of at most
    /// [`Vnic::max_frame_bytes`], super-packets already split and checksums complete. At most
    /// `batch.slots()` reads. Returns the number of packets; "would block" is `Ok(0)`.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] if the batch's slots are smaller than
    /// [`Vnic::max_frame_bytes`]; a read error if the first read fails (later errors end the
    /// batch early and are counted in [`VnicQueueStats::rx_errors`]).
    pub fn recv_batch(&mut self, batch: &mut RxBatch) -> io::Result<usize> {
        batch.clear();
        let slot_bytes = batch.slot_bytes();
        if slot_bytes < self.frame_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "rx batch slots are smaller than the vnic's largest frame",
            ));
        }
        let slots = batch.slots();
        if self.vnet && self.rx_big.len() < slot_bytes + MAX_SUPER_PACKET_BYTES {
            // Warm-up only: the first batch with larger slots than the vNIC's frames.
            self.rx_big.resize(slot_bytes + MAX_SUPER_PACKET_BYTES, 0);
        }
        let mut next = 0;
        if let Some((hdr, len)) = self.rx_pending.take()
            && let Step::Used(n) = self.split_staged(hdr, len, batch, 0)
        {
            next = n;
        }
        let mut reads = 0;
        while next < slots && reads < slots {
            reads += 1;
            let step = if self.vnet {
                self.read_vnet(batch, next)
            } else {
                self.read_plain(batch, next)
            };
            match step {
                Ok(Step::Used(n)) => next += n,
                Ok(Step::Dropped) => {}
                Ok(Step::Pending) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stats.rx_errors += 1;
                    if batch.is_empty() {
                        return Err(e);
                    }
                    break;
                }
            }
        }
        self.stats.rx_packets += batch.len() as u64;
        self.stats.rx_bytes += batch.iter().map(|p| p.len() as u64).sum::<u64>();
        Ok(batch.len())
    }

    /// One plain read into slot `slot`.
    fn read_plain(&mut self, batch: &mut RxBatch, slot: usize) -> io::Result<Step> {
        let slot_bytes = batch.slot_bytes();
        let start = slot * slot_bytes;
        let n = self
            .dev
            .recv(&mut batch.arena_mut()[start..start + slot_bytes])?;
        self.stats.rx_reads += 1;
        // The TUN driver returns the packet's full length even when it copied less.
        if n > slot_bytes {
            self.stats.rx_drop_truncated += 1;
            return Ok(Step::Dropped);
        }
        if n == 0 {
            self.stats.rx_drop_malformed += 1;
            return Ok(Step::Dropped);
        }
        let pushed = batch.push_segment(start, n);
        debug_assert!(pushed, "invariant: one packet per slot");
        Ok(Step::Used(1))
    }

    /// One read with a virtio-net header: header, slot `slot`, overflow area.
    fn read_vnet(&mut self, batch: &mut RxBatch, slot: usize) -> io::Result<Step> {
        let slot_bytes = batch.slot_bytes();
        let start = slot * slot_bytes;
        let capacity = VNET_HDR_LEN + self.rx_big.len();
        let n = {
            let slot_buf = &mut batch.arena_mut()[start..start + slot_bytes];
            let mut iov = [
                IoSliceMut::new(&mut self.rx_hdr),
                IoSliceMut::new(slot_buf),
                IoSliceMut::new(&mut self.rx_big[slot_bytes..]),
            ];
            self.dev.recv_vectored(&mut iov)?
        };
        self.stats.rx_reads += 1;
        if n > capacity {
            self.stats.rx_drop_truncated += 1;
            return Ok(Step::Dropped);
        }
        if n <= VNET_HDR_LEN {
            self.stats.rx_drop_malformed += 1;
            return Ok(Step::Dropped);
        }
        let len = n - VNET_HDR_LEN;
        let hdr = RxVnetHdr::parse(&self.rx_hdr);
        if !hdr.is_gso() {
            if len > slot_bytes {
                self.stats.rx_drop_truncated += 1;
                return Ok(Step::Dropped);
            }
            if hdr.needs_csum() {
                let packet = &mut batch.arena_mut()[start..start + len];
                if offload::complete_checksum(&hdr, packet).is_err() {
                    self.stats.rx_drop_malformed += 1;
                    return Ok(Step::Dropped);
                }
                self.stats.rx_csum_completed += 1;
            }
            let pushed = batch.push_segment(start, len);
            debug_assert!(pushed, "invariant: one packet per slot");
            return Ok(Step::Used(1));
        }
        // A super-packet: its head is in the slot, the rest already follows in `rx_big`.
        let head = len.min(slot_bytes);
        self.rx_big[..head].copy_from_slice(&batch.arena_mut()[start..start + head]);
        Ok(self.split_staged(hdr, len, batch, slot))
    }

    /// Splits the super-packet in `rx_big[..len]` into the batch from slot `first`, keeps it
    /// for the next call if it does not fit, or drops it.
    fn split_staged(
        &mut self,
        hdr: RxVnetHdr,
        len: usize,
        batch: &mut RxBatch,
        first: usize,
    ) -> Step {
        let packet = &mut self.rx_big[..len];
        let Ok(segments) = offload::segments_needed(&hdr, packet) else {
            self.stats.rx_drop_malformed += 1;
            return Step::Dropped;
        };
        if segments > MAX_GSO_SEGMENTS || segments > batch.slots() {
            self.stats.rx_drop_too_many_segments += 1;
            return Step::Dropped;
        }
        if segments > batch.slots() - first {
            self.rx_pending = Some((hdr, len));
            return Step::Pending;
        }
        match offload::split_into_batch(&hdr, packet, batch, first) {
            Ok(n) => {
                self.stats.rx_gso_splits += 1;
                self.stats.rx_gso_segments += n as u64;
                Step::Used(n)
            }
            Err(VnetDrop::TooManySegments) => {
                self.stats.rx_drop_too_many_segments += 1;
                Step::Dropped
            }
            Err(VnetDrop::Malformed) => {
                self.stats.rx_drop_malformed += 1;
                Step::Dropped
            }
        }
    }

    /// Queues one packet (TUN) or frame (TAP) for [`VnicQueue::flush`]; it is copied into a
    /// pre-allocated buffer. A packet shorter than an IPv4 header (TUN) or an Ethernet header
    /// (TAP) is dropped and counted in [`VnicQueueStats::tx_drop_runt`] (`Ok`: the kernel
    /// would refuse it anyway).
    ///
    /// # Errors
    /// [`QueueError::TooBig`] above [`Vnic::max_frame_bytes`], [`QueueError::Full`] when
    /// [`VnicConfig::tx_queue_packets`] are queued; the packet was counted as dropped.
    pub fn queue(&mut self, packet: &[u8]) -> Result<(), QueueError> {
        if packet.len() > self.frame_max {
            self.stats.tx_drop_too_big += 1;
            return Err(QueueError::TooBig);
        }
        if packet.len() < self.frame_min {
            self.stats.tx_drop_runt += 1;
            return Ok(());
        }
        let Some(buf) = self.tx_bufs.get_mut(self.tx_queued) else {
            self.stats.tx_drop_queue_full += 1;
            return Err(QueueError::Full);
        };
        buf.clear();
        if self.vnet {
            // A zeroed header is GSO_NONE without flags, as sent when not coalescing.
            buf.resize(VNET_HDR_LEN, 0);
        }
        buf.extend_from_slice(packet);
        self.tx_queued += 1;
        Ok(())
    }

    /// Writes every queued packet to the kernel, coalescing when offloads are on. TUN
    /// writes never block; every queued packet is written or counted as lost.
    ///
    /// # Errors
    /// The first write error; the packets of failed writes are lost and counted in
    /// [`VnicQueueStats::tx_errors`].
    pub fn flush(&mut self) -> io::Result<()> {
        let n = self.tx_queued;
        if n == 0 {
            return Ok(());
        }
        let result = if self.vnet && self.tx_gro {
            self.flush_coalesced(n)
        } else {
            self.flush_each(n)
        };
        self.tx_queued = 0;
        result
    }

    fn flush_each(&mut self, n: usize) -> io::Result<()> {
        let header = if self.vnet { VNET_HDR_LEN } else { 0 };
        let mut first_err = None;
        for buf in &self.tx_bufs[..n] {
            self.stats.tx_writes += 1;
            match self.dev.send(buf) {
                Ok(_) => {
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += (buf.len() - header) as u64;
                }
                Err(e) => {
                    self.stats.tx_errors += 1;
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn flush_coalesced(&mut self, n: usize) -> io::Result<()> {
        self.coalescer.coalesce(&mut self.tx_bufs[..n], self.uso);
        let mut first_err = None;
        for (i, merged) in self.coalescer.writes() {
            let buf = &self.tx_bufs[i];
            self.stats.tx_writes += 1;
            match self.dev.send(buf) {
                Ok(_) => {
                    // The headers of the merged packets are not in the super-packet: add them
                    // back (`hdr_len` of its virtio header) to count the bytes queued.
                    let headers = usize::from(u16::from_le_bytes([buf[2], buf[3]]));
                    let bytes = buf.len() - VNET_HDR_LEN + usize::from(merged) * headers;
                    self.stats.tx_packets += 1 + u64::from(merged);
                    self.stats.tx_bytes += bytes as u64;
                    self.stats.tx_coalesced += u64::from(merged);
                }
                Err(e) => {
                    self.stats.tx_errors += 1;
                    if merged > 0 && e.raw_os_error() == Some(EINVAL) && self.tx_gro {
                        // The kernel refused a super-packet: send one by one from now on.
                        self.tx_gro = false;
                        self.stats.tx_gro_disabled += 1;
                    }
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// A vNIC queue is a port of the data-path worker like a NIC's transport: it reads packets
/// from the applications (TX) and writes the delivered ones (RX).
impl NicTransport for VnicQueue {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(Self::fd(self))
    }

    fn recv_batch(&mut self, batch: &mut RxBatch) -> io::Result<usize> {
        Self::recv_batch(self, batch)
    }

    fn queue(&mut self, packet: &[u8]) -> Result<(), QueueError> {
        Self::queue(self, packet)
    }

    fn flush(&mut self) -> io::Result<()> {
        Self::flush(self)
    }

    fn has_backlog(&self) -> bool {
        Self::has_backlog(self)
    }

    fn mtu(&self) -> usize {
        self.frame_max
    }

    fn stats(&self) -> TransportStats {
        let s = &self.stats;
        TransportStats {
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            rx_batches: s.rx_reads,
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            tx_syscalls: s.tx_writes,
            tx_drop_queue_full: s.tx_drop_queue_full,
            tx_drop_too_big: s.tx_drop_too_big,
            tx_errors: s.tx_errors,
            rx_errors: s.rx_errors,
            rx_drop_truncated: s.rx_drop_truncated,
            offload_disabled: s.tx_gro_disabled,
            ..TransportStats::default()
        }
    }

    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        let s = &self.stats;
        out("rx_drop_malformed", s.rx_drop_malformed);
        out("rx_drop_too_many_segments", s.rx_drop_too_many_segments);
        out("rx_gso_splits", s.rx_gso_splits);
        out("rx_gso_segments", s.rx_gso_segments);
        out("rx_csum_completed", s.rx_csum_completed);
        out("tx_drop_runt", s.tx_drop_runt);
        out("tx_coalesced", s.tx_coalesced);
    }

    fn maintain(&mut self) -> bool {
        false
    }
}
