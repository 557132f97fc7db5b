//! What a rule matches: address prefixes, port ranges, protocol, DSCP, VLAN, VXLAN VNI and
//! vNIC, each optional (absent = any), and the key a flow is matched with.
//!
//! Owns: the match fields, the per-key test ([`RuleMatch::matches`]) and the set relations the
//! validator needs ([`RuleMatch::covers`], [`RuleMatch::overlaps`]). Does not own the fast
//! lookup over many rules (`super::lookup`) nor where the key's fields come from
//! ([`crate::flow::classify`]).
//!
//! # The IP version of a match
//!
//! A match with an IPv4 prefix matches IPv4 packets only, one with an IPv6 prefix IPv6 packets
//! only, and one with no prefix either version. The set relations take this into account: an
//! absent prefix of a match that fixes its version stands for `0.0.0.0/0` (or `::/0`), so
//! `src 10.0.0.0/8` and `dst 0.0.0.0/0` describe the same IPv4 traffic on the source side. A
//! match that names an IPv4 prefix on one side and an IPv6 prefix on the other can never match
//! and is rejected by the validator.

use core::fmt;
use core::net::IpAddr;

use crate::flow::FlowKey;

/// The IP version of an address or a prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum IpFamily {
    /// IPv4 (RFC 791).
    V4,
    /// IPv6 (RFC 8200).
    V6,
}

impl IpFamily {
    /// The version of `addr`.
    #[must_use]
    pub const fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// Address length in bits: 32 or 128.
    #[must_use]
    pub const fn bits(self) -> u8 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }
}

/// An address as a right-aligned `u128` (IPv4 in the low 32 bits).
#[inline]
pub(super) fn addr_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The network mask of a `len`-bit prefix of `family`, right-aligned like [`addr_bits`].
/// A `len` above the family's width is clamped (the validator rejects it first).
#[inline]
pub(super) fn prefix_mask(family: IpFamily, len: u8) -> u128 {
    let width = u32::from(family.bits());
    let len = u32::from(len).min(width);
    if len == 0 {
        return 0;
    }
    // All ones in the top `len` bits of a `width`-bit field.
    let ones = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    ones & !((1u128 << (width - len)) - 1)
}

/// An address prefix, e.g. `10.1.0.0/16` or `2001:db8::/32`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IpPrefix {
    /// The network address; its host bits (beyond `len`) must be zero.
    pub addr: IpAddr,
    /// Prefix length in bits: `0..=32` for IPv4, `0..=128` for IPv6.
    pub len: u8,
}

impl IpPrefix {
    /// A prefix, checked: the length fits the family and no host bit is set.
    ///
    /// # Errors
    /// [`MatchError::PrefixTooLong`] or [`MatchError::HostBitsSet`] (with `field` "prefix").
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, MatchError> {
        let p = Self { addr, len };
        p.check("prefix")?;
        Ok(p)
    }

    /// The prefix holding exactly `addr` (`/32` or `/128`).
    #[must_use]
    pub const fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: IpFamily::of(addr).bits(),
        }
    }

    /// `0.0.0.0/0` or `::/0`: every address of `family`.
    #[must_use]
    pub const fn any(family: IpFamily) -> Self {
        Self {
            addr: match family {
                IpFamily::V4 => IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED),
                IpFamily::V6 => IpAddr::V6(core::net::Ipv6Addr::UNSPECIFIED),
            },
            len: 0,
        }
    }

    /// The prefix's IP version.
    #[must_use]
    pub const fn family(&self) -> IpFamily {
        IpFamily::of(self.addr)
    }

    /// The network mask, right-aligned like the address bits.
    #[inline]
    pub(super) fn mask(&self) -> u128 {
        prefix_mask(self.family(), self.len)
    }

    /// `true` if `addr` is inside the prefix (never across IP versions).
    #[inline]
    #[must_use]
    pub fn contains(&self, addr: IpAddr) -> bool {
        IpFamily::of(addr) == self.family() && addr_bits(addr) & self.mask() == addr_bits(self.addr)
    }

    /// `true` if every address of `other` is inside `self`.
    #[must_use]
    pub fn covers(&self, other: &Self) -> bool {
        self.family() == other.family()
            && self.len <= other.len
            && addr_bits(other.addr) & self.mask() == addr_bits(self.addr) & self.mask()
    }

    /// `true` if some address is inside both.
    #[must_use]
    pub fn overlaps(&self, other: &Self) -> bool {
        self.covers(other) || other.covers(self)
    }

    fn check(&self, field: &'static str) -> Result<(), MatchError> {
        if self.len > self.family().bits() {
            return Err(MatchError::PrefixTooLong { field });
        }
        if addr_bits(self.addr) & !self.mask() != 0 {
            return Err(MatchError::HostBitsSet { field });
        }
        Ok(())
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An inclusive port range `lo..=hi`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PortRange {
    /// First port in the range.
    pub lo: u16,
    /// Last port in the range (`>= lo`).
    pub hi: u16,
}

impl PortRange {
    /// Every port, `0..=65535` (what an absent port match means).
    pub const ANY: Self = Self {
        lo: 0,
        hi: u16::MAX,
    };

    /// One port.
    #[must_use]
    pub const fn single(port: u16) -> Self {
        Self { lo: port, hi: port }
    }

    /// `lo..=hi` (not checked; the validator rejects `lo > hi`).
    #[must_use]
    pub const fn new(lo: u16, hi: u16) -> Self {
        Self { lo, hi }
    }

    /// `true` if `port` is in the range.
    #[inline]
    #[must_use]
    pub const fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }

    /// The port, if the range holds exactly one.
    #[must_use]
    pub const fn as_single(&self) -> Option<u16> {
        if self.lo == self.hi {
            Some(self.lo)
        } else {
            None
        }
    }

    fn covers(&self, other: &Self) -> bool {
        self.lo <= other.lo && other.hi <= self.hi
    }

    fn overlaps(&self, other: &Self) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }
}

/// A set of DSCP values (RFC 2474, `0..=63`) as a 64-bit mask: bit `d` = DSCP `d`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct DscpSet(pub u64);

impl DscpSet {
    /// Every DSCP value.
    pub const ALL: Self = Self(u64::MAX);

    /// One value (empty if `dscp > 63`, which the validator then reports).
    #[must_use]
    pub const fn single(dscp: u8) -> Self {
        if dscp < 64 { Self(1 << dscp) } else { Self(0) }
    }

    /// The set of the given values (values above 63 are ignored).
    #[must_use]
    pub fn of(values: &[u8]) -> Self {
        Self(values.iter().fold(0, |m, &d| m | Self::single(d).0))
    }

    /// `true` if `dscp` is in the set.
    #[inline]
    #[must_use]
    pub const fn contains(self, dscp: u8) -> bool {
        dscp < 64 && self.0 & (1 << dscp) != 0
    }

    /// The value, if the set holds exactly one.
    #[must_use]
    pub fn as_single(self) -> Option<u8> {
        (self.0.count_ones() == 1).then(|| u8::try_from(self.0.trailing_zeros()).unwrap_or(0))
    }
}

/// Which flows a rule applies to. Every field is optional: `None` matches anything, so
/// `RuleMatch::default()` matches every flow.
///
/// Ports are matched as the flow key carries them: `0` for any fragment and for protocols
/// other than TCP and UDP (see [`crate::flow::classify`]), so a port match implies TCP or UDP.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct RuleMatch {
    /// Source address prefix.
    pub src: Option<IpPrefix>,
    /// Destination address prefix.
    pub dst: Option<IpPrefix>,
    /// IP protocol number (IPv6: the upper-layer protocol).
    pub protocol: Option<u8>,
    /// Source port range (TCP/UDP).
    pub src_ports: Option<PortRange>,
    /// Destination port range (TCP/UDP).
    pub dst_ports: Option<PortRange>,
    /// DSCP values. A flow key without a DSCP (classification did not include it) never
    /// matches a DSCP match; [`super::RuleSet::required_keys`] says when to include it.
    pub dscp: Option<DscpSet>,
    /// 802.1Q VLAN id (`1..=4094`), TAP vNICs only.
    pub vlan: Option<u16>,
    /// VXLAN network identifier (RFC 7348, 24 bits).
    pub vni: Option<u32>,
    /// The vNIC the packet came from (TX) or goes to (RX), by index.
    pub vnic: Option<u16>,
}

/// The fields a rule set looks at for one flow: the flow key plus the vNIC.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RuleKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol.
    pub protocol: u8,
    /// Source port (0 without ports).
    pub src_port: u16,
    /// Destination port (0 without ports).
    pub dst_port: u16,
    /// DSCP, if classified on it.
    pub dscp: Option<u8>,
    /// VLAN id, if classified on it and tagged.
    pub vlan: Option<u16>,
    /// VXLAN VNI, if classified on it and present.
    pub vni: Option<u32>,
    /// vNIC index.
    pub vnic: u16,
}

impl RuleKey {
    /// The key of a flow that came from (TX) or goes to (RX) vNIC `vnic`.
    #[inline]
    #[must_use]
    pub const fn from_flow_key(key: &FlowKey, vnic: u16) -> Self {
        Self {
            src: key.src,
            dst: key.dst,
            protocol: key.protocol,
            src_port: key.src_port,
            dst_port: key.dst_port,
            dscp: key.dscp,
            vlan: key.vlan,
            vni: key.vni,
            vnic,
        }
    }
}

impl RuleMatch {
    /// Matches every flow.
    pub const ANY: Self = Self {
        src: None,
        dst: None,
        protocol: None,
        src_ports: None,
        dst_ports: None,
        dscp: None,
        vlan: None,
        vni: None,
        vnic: None,
    };

    /// The IP version the match is limited to by its prefixes (`None`: either). With mixed
    /// versions (rejected by the validator) the source prefix's.
    #[must_use]
    pub fn family(&self) -> Option<IpFamily> {
        self.src.or(self.dst).map(|p| p.family())
    }

    /// `true` if the flow `key` matches. This is the reference test: the fast lookup must
    /// agree with it (a property test checks this).
    #[inline]
    #[must_use]
    pub fn matches(&self, key: &RuleKey) -> bool {
        // A match that fixes the IP version fixes it for both addresses (a real packet never
        // mixes them; a hand-made key might).
        self.family()
            .is_none_or(|f| IpFamily::of(key.src) == f && IpFamily::of(key.dst) == f)
            && self.src.is_none_or(|p| p.contains(key.src))
            && self.dst.is_none_or(|p| p.contains(key.dst))
            && self.protocol.is_none_or(|p| p == key.protocol)
            && self.src_ports.is_none_or(|r| r.contains(key.src_port))
            && self.dst_ports.is_none_or(|r| r.contains(key.dst_port))
            && self
                .dscp
                .is_none_or(|s| key.dscp.is_some_and(|d| s.contains(d)))
            && self.vlan.is_none_or(|v| key.vlan == Some(v))
            && self.vni.is_none_or(|v| key.vni == Some(v))
            && self.vnic.is_none_or(|v| v == key.vnic)
    }

    /// The prefix a side stands for, given the match's IP version (see the module doc):
    /// `None` only when the match allows either version.
    fn effective(&self, side: Option<IpPrefix>) -> Option<IpPrefix> {
        side.or_else(|| self.family().map(IpPrefix::any))
    }

    /// `true` if every flow that matches `other` also matches `self` (both assumed valid).
    #[must_use]
    pub fn covers(&self, other: &Self) -> bool {
        let family_ok = match (self.family(), other.family()) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        let prefix_ok = |a: Option<IpPrefix>, b: Option<IpPrefix>| match (a, b) {
            (None, _) => true,
            (Some(a), Some(b)) => a.covers(&b),
            (Some(_), None) => false,
        };
        let opt_ok = |a: Option<u32>, b: Option<u32>| a.is_none() || a == b;
        family_ok
            && prefix_ok(self.effective(self.src), other.effective(other.src))
            && prefix_ok(self.effective(self.dst), other.effective(other.dst))
            && opt_ok(self.protocol.map(u32::from), other.protocol.map(u32::from))
            && self
                .src_ports
                .unwrap_or(PortRange::ANY)
                .covers(&other.src_ports.unwrap_or(PortRange::ANY))
            && self
                .dst_ports
                .unwrap_or(PortRange::ANY)
                .covers(&other.dst_ports.unwrap_or(PortRange::ANY))
            && match (self.dscp, other.dscp) {
                (None, _) => true,
                (Some(a), Some(b)) => a.0 & b.0 == b.0,
                (Some(_), None) => false,
            }
            && opt_ok(self.vlan.map(u32::from), other.vlan.map(u32::from))
            && opt_ok(self.vni, other.vni)
            && opt_ok(self.vnic.map(u32::from), other.vnic.map(u32::from))
    }

    /// `true` if some flow matches both (both assumed valid).
    #[must_use]
    pub fn overlaps(&self, other: &Self) -> bool {
        if let (Some(a), Some(b)) = (self.family(), other.family())
            && a != b
        {
            return false;
        }
        let prefix_ok = |a: Option<IpPrefix>, b: Option<IpPrefix>| match (a, b) {
            (Some(a), Some(b)) => a.overlaps(&b),
            _ => true,
        };
        let opt_ok = |a: Option<u32>, b: Option<u32>| a.is_none() || b.is_none() || a == b;
        prefix_ok(self.effective(self.src), other.effective(other.src))
            && prefix_ok(self.effective(self.dst), other.effective(other.dst))
            && opt_ok(self.protocol.map(u32::from), other.protocol.map(u32::from))
            && self
                .src_ports
                .unwrap_or(PortRange::ANY)
                .overlaps(&other.src_ports.unwrap_or(PortRange::ANY))
            && self
                .dst_ports
                .unwrap_or(PortRange::ANY)
                .overlaps(&other.dst_ports.unwrap_or(PortRange::ANY))
            && match (self.dscp, other.dscp) {
                (Some(a), Some(b)) => a.0 & b.0 != 0,
                _ => true,
            }
            && opt_ok(self.vlan.map(u32::from), other.vlan.map(u32::from))
            && opt_ok(self.vni, other.vni)
            && opt_ok(self.vnic.map(u32::from), other.vnic.map(u32::from))
    }

    /// The first structural error of the match, if any (without the vNIC context).
    pub(super) fn check(&self) -> Result<(), MatchError> {
        if let Some(p) = self.src {
            p.check("src")?;
        }
        if let Some(p) = self.dst {
            p.check("dst")?;
        }
        if let (Some(s), Some(d)) = (self.src, self.dst)
            && s.family() != d.family()
        {
            return Err(MatchError::MixedFamilies);
        }
        for (field, r) in [("src_ports", self.src_ports), ("dst_ports", self.dst_ports)] {
            if let Some(r) = r {
                if r.lo > r.hi {
                    return Err(MatchError::EmptyPortRange { field });
                }
                if !matches!(
                    self.protocol,
                    Some(crate::flow::IPPROTO_TCP | crate::flow::IPPROTO_UDP)
                ) {
                    return Err(MatchError::PortsNeedTcpOrUdp);
                }
            }
        }
        if self.dscp.is_some_and(|s| s.0 == 0) {
            return Err(MatchError::EmptyDscpSet);
        }
        if let Some(v) = self.vlan
            && !(1..=4094).contains(&v)
        {
            return Err(MatchError::VlanOutOfRange(v));
        }
        if let Some(v) = self.vni
            && v > 0x00ff_ffff
        {
            return Err(MatchError::VniOutOfRange(v));
        }
        Ok(())
    }
}

/// Why a rule's match is invalid.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum MatchError {
    /// A prefix length above 32 (IPv4) or 128 (IPv6).
    PrefixTooLong {
        /// `src` or `dst`.
        field: &'static str,
    },
    /// A prefix with bits set beyond its length (e.g. `10.1.0.0/8`).
    HostBitsSet {
        /// `src` or `dst`.
        field: &'static str,
    },
    /// An IPv4 prefix on one side and an IPv6 prefix on the other: never matches.
    MixedFamilies,
    /// A port range with `lo > hi`.
    EmptyPortRange {
        /// `src_ports` or `dst_ports`.
        field: &'static str,
    },
    /// A port match without `protocol` TCP (6) or UDP (17): flows of other protocols carry
    /// no ports (their key has port 0).
    PortsNeedTcpOrUdp,
    /// A DSCP match with no value.
    EmptyDscpSet,
    /// A VLAN id outside `1..=4094` (IEEE 802.1Q).
    VlanOutOfRange(u16),
    /// A VNI above 24 bits (RFC 7348).
    VniOutOfRange(u32),
    /// A vNIC index the configuration does not have.
    UnknownVnic(u16),
    /// A VLAN match on a rule that applies to a TUN (layer 3) vNIC: its packets have no VLAN.
    VlanOnTunVnic,
}

impl fmt::Display for MatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PrefixTooLong { field } => {
                write!(f, "{field}: prefix length above 32 (ipv4) or 128 (ipv6)")
            }
            Self::HostBitsSet { field } => {
                write!(f, "{field}: address has bits set beyond the prefix length")
            }
            Self::MixedFamilies => f.write_str("src and dst prefixes are of different ip versions"),
            Self::EmptyPortRange { field } => write!(f, "{field}: range start above its end"),
            Self::PortsNeedTcpOrUdp => {
                f.write_str("a port match needs protocol tcp (6) or udp (17)")
            }
            Self::EmptyDscpSet => f.write_str("dscp: empty set"),
            Self::VlanOutOfRange(v) => write!(f, "vlan {v} outside 1..=4094"),
            Self::VniOutOfRange(v) => write!(f, "vni {v} above 24 bits"),
            Self::UnknownVnic(v) => write!(f, "unknown vnic {v}"),
            Self::VlanOnTunVnic => f.write_str("vlan match on a tun (layer 3) vnic"),
        }
    }
}
