//! QoS configuration: plain `Copy`/owned structs and their validation.
//!
//! Owns: [`QosConfig`] (one scheduler: its classes, their queues, meters, DRR weights),
//! [`ClassConfig`], [`MeterConfig`] ([`SrTcmConfig`], [`TrTcmConfig`]), [`RateConfig`] (one
//! token bucket), [`ShaperConfig`] (one NIC's shaper) and the limits they are checked
//! against. Does not own: the TOML/REST schema (braid-control maps onto these), the state
//! built from them (`state.rs`, `meter.rs`, `shaper.rs`).
//!
//! Every `validate` returns the first bad field as a [`QosConfigError`], named as a path
//! (`classes[2].meter.cbs_bytes`) with what is allowed. Units are in the field names: rates
//! in bit/s (`_bps`), sizes in bytes (`_bytes`); a packet's size is what the caller passes as
//! its length (the IP packet for a TUN vNIC, the Ethernet frame for a TAP one).

use alloc::vec;
use alloc::vec::Vec;

use super::{ClassId, QosConfigError};

/// Most classes one scheduler has (class ids are `0..MAX_CLASSES`).
pub const MAX_CLASSES: usize = 8;
/// Highest rate a bucket accepts: 1 Tbit/s.
pub const MAX_RATE_BPS: u64 = 1_000_000_000_000;
/// Deepest bucket: 1 GiB (8.6·10¹⁸ nanobits, inside `u64`; see `meter.rs`).
pub const MAX_BURST_BYTES: u32 = 1 << 30;
/// Largest packet a scheduler may be configured for: 256 KiB (a GSO super-packet is 64 KiB).
pub const MAX_PACKET_BYTES: u32 = 1 << 18;
/// Smallest `max_packet_bytes`: 68, the IPv4 minimum MTU (RFC 791).
pub const MIN_PACKET_BYTES: u32 = 68;
/// Longest class queue, in packets.
pub const MAX_QUEUE_PACKETS: u32 = 1 << 20;
/// Largest DRR weight.
pub const MAX_WEIGHT: u32 = 1 << 16;

/// One token bucket: a rate and a depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateConfig {
    /// Fill rate, bit/s (`1..=MAX_RATE_BPS`).
    pub rate_bps: u64,
    /// Depth, bytes (at least the largest packet, at most [`MAX_BURST_BYTES`]).
    pub burst_bytes: u32,
}

impl RateConfig {
    /// Check the rate and the depth against the largest packet.
    ///
    /// # Errors
    /// [`QosConfigError`] naming `rate_bps` or `burst_bytes`.
    pub fn validate(&self, max_packet_bytes: u32) -> Result<(), QosConfigError> {
        check_rate("rate_bps", self.rate_bps)?;
        check_burst("burst_bytes", self.burst_bytes, max_packet_bytes)
    }
}

/// Whether a meter looks at the colour a packet already has (RFC 2697/2698 §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MeterMode {
    /// Every packet is treated as Green on arrival (default).
    #[default]
    ColorBlind,
    /// A pre-coloured Yellow packet is at best Yellow, a Red one stays Red.
    ColorAware,
}

/// A single-rate three-colour meter (RFC 2697).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SrTcmConfig {
    /// Committed Information Rate, bit/s (RFC 2697 counts bytes of IP packets per second;
    /// here ×8). Fills C, and E with C's overflow.
    pub cir_bps: u64,
    /// Committed Burst Size, bytes: at least the largest packet.
    pub cbs_bytes: u32,
    /// Excess Burst Size, bytes: 0 (no Yellow: a packet is Green or Red) or at least the
    /// largest packet, as RFC 2697 §2 recommends.
    pub ebs_bytes: u32,
    /// Colour-blind or colour-aware.
    pub mode: MeterMode,
}

impl SrTcmConfig {
    /// Check rates and bursts.
    ///
    /// # Errors
    /// [`QosConfigError`] naming the bad field.
    pub fn validate(&self, max_packet_bytes: u32) -> Result<(), QosConfigError> {
        check_rate("cir_bps", self.cir_bps)?;
        check_burst("cbs_bytes", self.cbs_bytes, max_packet_bytes)?;
        if self.ebs_bytes != 0 {
            check_burst("ebs_bytes", self.ebs_bytes, max_packet_bytes)?;
        }
        Ok(())
    }
}

/// A two-rate three-colour meter (RFC 2698).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrTcmConfig {
    /// Peak Information Rate, bit/s: at least `cir_bps` (RFC 2698 §2).
    pub pir_bps: u64,
    /// Peak Burst Size, bytes: at least the largest packet.
    pub pbs_bytes: u32,
    /// Committed Information Rate, bit/s.
    pub cir_bps: u64,
    /// Committed Burst Size, bytes: at least the largest packet.
    pub cbs_bytes: u32,
    /// Colour-blind or colour-aware.
    pub mode: MeterMode,
}

impl TrTcmConfig {
    /// Check rates (PIR ≥ CIR) and bursts.
    ///
    /// # Errors
    /// [`QosConfigError`] naming the bad field.
    pub fn validate(&self, max_packet_bytes: u32) -> Result<(), QosConfigError> {
        check_rate("pir_bps", self.pir_bps)?;
        check_rate("cir_bps", self.cir_bps)?;
        if self.pir_bps < self.cir_bps {
            return Err(QosConfigError::new(
                "pir_bps",
                "must be at least cir_bps (RFC 2698)",
            ));
        }
        check_burst("pbs_bytes", self.pbs_bytes, max_packet_bytes)?;
        check_burst("cbs_bytes", self.cbs_bytes, max_packet_bytes)
    }
}

/// A class's meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MeterConfig {
    /// RFC 2697.
    SrTcm(SrTcmConfig),
    /// RFC 2698.
    TrTcm(TrTcmConfig),
}

impl MeterConfig {
    /// Check the meter's rates and bursts.
    ///
    /// # Errors
    /// [`QosConfigError`] naming the bad field.
    pub fn validate(&self, max_packet_bytes: u32) -> Result<(), QosConfigError> {
        match self {
            Self::SrTcm(c) => c.validate(max_packet_bytes),
            Self::TrTcm(c) => c.validate(max_packet_bytes),
        }
    }
}

/// How a class is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClassKind {
    /// Served before every other class (at most one per scheduler): the latency-critical
    /// class.
    Strict {
        /// Starvation guard: while the strict class has used up this bucket, it yields to
        /// the weighted classes that have packets (and still sends when they have none).
        /// `None` is pure strict priority, which a misbehaving latency-critical source can
        /// use to starve every other class.
        guard: Option<RateConfig>,
    },
    /// Shares what the strict class leaves by deficit round robin: each turn, the class may
    /// send `weight × quantum_bytes` bytes.
    Weighted {
        /// Relative share, `1..=MAX_WEIGHT`.
        weight: u32,
    },
}

/// One class of a scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClassConfig {
    /// The class's id (`0..MAX_CLASSES`), what the rule engine's "set priority class" names.
    pub id: ClassId,
    /// Strict or weighted.
    pub kind: ClassKind,
    /// Queue capacity, packets (`1..=MAX_QUEUE_PACKETS`). Memory for it is reserved up front.
    pub queue_packets: u32,
    /// Queue capacity, bytes (at least `max_packet_bytes`).
    pub queue_bytes: u32,
    /// A meter applied at enqueue; the colour is returned to the caller.
    pub meter: Option<MeterConfig>,
    /// Drop the packets the meter colours Red (a policer) instead of queueing them.
    pub drop_red: bool,
}

impl ClassConfig {
    /// A weighted class with no meter.
    #[must_use]
    pub const fn weighted(id: u8, weight: u32, queue_packets: u32, queue_bytes: u32) -> Self {
        Self {
            id: ClassId(id),
            kind: ClassKind::Weighted { weight },
            queue_packets,
            queue_bytes,
            meter: None,
            drop_red: false,
        }
    }

    /// A strict class with an optional guard and no meter.
    #[must_use]
    pub const fn strict(
        id: u8,
        guard: Option<RateConfig>,
        queue_packets: u32,
        queue_bytes: u32,
    ) -> Self {
        Self {
            id: ClassId(id),
            kind: ClassKind::Strict { guard },
            queue_packets,
            queue_bytes,
            meter: None,
            drop_red: false,
        }
    }

    /// The class's DRR weight (0 for the strict class).
    #[must_use]
    pub const fn weight(&self) -> u32 {
        match self.kind {
            ClassKind::Strict { .. } => 0,
            ClassKind::Weighted { weight } => weight,
        }
    }
}

/// One scheduler's configuration (one vNIC's or one NIC's egress).
///
/// Defaults are the engine's TX queue before QoS: class 0 strict (unguarded), class 1 weighted
/// (weight 1), each 8192 packets / 4 MiB, packets up to 1518 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QosConfig {
    /// The largest packet the scheduler takes, bytes (`MIN_PACKET_BYTES..=MAX_PACKET_BYTES`;
    /// default 1518, an Ethernet frame with a VLAN tag). Longer packets are refused at
    /// enqueue. Every burst and queue must hold one.
    pub max_packet_bytes: u32,
    /// DRR quantum for weight 1, bytes (default = `max_packet_bytes`; at least it, so every
    /// turn sends at least one packet and dequeue is O(classes), Shreedhar & Varghese §3).
    /// Smaller quanta share more finely over short spans; larger ones cost fewer turns.
    pub quantum_bytes: u32,
    /// The classes, 1..=[`MAX_CLASSES`], ids unique, at most one strict.
    pub classes: Vec<ClassConfig>,
}

impl Default for QosConfig {
    fn default() -> Self {
        Self {
            max_packet_bytes: 1518,
            quantum_bytes: 1518,
            classes: vec![
                ClassConfig::strict(0, None, 8192, 4 << 20),
                ClassConfig::weighted(1, 1, 8192, 4 << 20),
            ],
        }
    }
}

impl QosConfig {
    /// Check every field; the error names the first bad one.
    ///
    /// # Errors
    /// [`QosConfigError`] naming the bad field (`classes[i].…` for a class's field).
    pub fn validate(&self) -> Result<(), QosConfigError> {
        let mtu = self.max_packet_bytes;
        if !(MIN_PACKET_BYTES..=MAX_PACKET_BYTES).contains(&mtu) {
            return Err(QosConfigError::new(
                "max_packet_bytes",
                "must be in 68..=262144",
            ));
        }
        if self.quantum_bytes < mtu {
            return Err(QosConfigError::new(
                "quantum_bytes",
                "must be at least max_packet_bytes",
            ));
        }
        if self.classes.is_empty() || self.classes.len() > MAX_CLASSES {
            return Err(QosConfigError::new("classes", "must list 1 to 8 classes"));
        }
        let mut seen = 0u32;
        let mut strict = false;
        for (i, c) in self.classes.iter().enumerate() {
            let at = |e: QosConfigError| e.in_class(i);
            let id = usize::from(c.id.0);
            if id >= MAX_CLASSES {
                return Err(at(QosConfigError::new("id", "must be below 8")));
            }
            if seen & (1 << id) != 0 {
                return Err(at(QosConfigError::new("id", "is used by an earlier class")));
            }
            seen |= 1 << id;
            match c.kind {
                ClassKind::Strict { guard } => {
                    if strict {
                        return Err(at(QosConfigError::new(
                            "kind",
                            "a second strict class: at most one is allowed",
                        )));
                    }
                    strict = true;
                    if let Some(g) = guard {
                        g.validate(mtu).map_err(|e| at(e.under("kind.guard")))?;
                    }
                }
                ClassKind::Weighted { weight } => {
                    if !(1..=MAX_WEIGHT).contains(&weight) {
                        return Err(at(QosConfigError::new(
                            "kind.weight",
                            "must be in 1..=65536",
                        )));
                    }
                }
            }
            if !(1..=MAX_QUEUE_PACKETS).contains(&c.queue_packets) {
                return Err(at(QosConfigError::new(
                    "queue_packets",
                    "must be in 1..=1048576",
                )));
            }
            if c.queue_bytes < mtu {
                return Err(at(QosConfigError::new(
                    "queue_bytes",
                    "must be at least max_packet_bytes",
                )));
            }
            if let Some(m) = c.meter {
                m.validate(mtu).map_err(|e| at(e.under("meter")))?;
            } else if c.drop_red {
                return Err(at(QosConfigError::new(
                    "drop_red",
                    "needs a meter to colour packets",
                )));
            }
        }
        Ok(())
    }

    /// The configuration of class `id`, if there is one.
    #[must_use]
    pub fn class(&self, id: ClassId) -> Option<&ClassConfig> {
        self.classes.iter().find(|c| c.id == id)
    }
}

/// One NIC's shaper: a token bucket at the link's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShaperConfig {
    /// The link's rate, bit/s (`1..=MAX_RATE_BPS`), counting `overhead_bytes` per packet.
    pub rate_bps: u64,
    /// How many bytes (with their overheads) may leave back to back after the link was idle:
    /// at least one largest packet plus its overhead. Also what the link's own queue must
    /// absorb, so a small burst keeps the link's queueing delay small (one MTU at 1 Gbit/s is
    /// 12 µs).
    pub burst_bytes: u32,
    /// Bytes the link adds to every packet that the caller's length does not count (outer
    /// UDP/IP + braid header, Ethernet preamble + FCS + gap, …), so the rate is the wire's.
    pub overhead_bytes: u32,
}

impl ShaperConfig {
    /// Check the rate and the burst against the largest packet (plus overhead).
    ///
    /// # Errors
    /// [`QosConfigError`] naming `rate_bps`, `burst_bytes` or `overhead_bytes`.
    pub fn validate(&self, max_packet_bytes: u32) -> Result<(), QosConfigError> {
        if self.overhead_bytes > 4096 {
            return Err(QosConfigError::new(
                "overhead_bytes",
                "must be at most 4096",
            ));
        }
        RateConfig {
            rate_bps: self.rate_bps,
            burst_bytes: self.burst_bytes,
        }
        .validate(max_packet_bytes + self.overhead_bytes)
    }
}

fn check_rate(field: &'static str, bps: u64) -> Result<(), QosConfigError> {
    if bps == 0 || bps > MAX_RATE_BPS {
        return Err(QosConfigError::new(field, "must be in 1..=1e12 bit/s"));
    }
    Ok(())
}

fn check_burst(
    field: &'static str,
    bytes: u32,
    max_packet_bytes: u32,
) -> Result<(), QosConfigError> {
    if bytes < max_packet_bytes.max(1) {
        return Err(QosConfigError::new(
            field,
            "must be at least one largest packet (max_packet_bytes)",
        ));
    }
    if bytes > MAX_BURST_BYTES {
        return Err(QosConfigError::new(field, "must be at most 1 GiB"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn lc_meter() -> MeterConfig {
        MeterConfig::SrTcm(SrTcmConfig {
            cir_bps: 10_000_000,
            cbs_bytes: 3000,
            ebs_bytes: 0,
            mode: MeterMode::ColorBlind,
        })
    }

    fn err(c: &QosConfig) -> alloc::string::String {
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn default_is_valid() {
        QosConfig::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let base = QosConfig::default();
        let mut c = base.clone();
        c.max_packet_bytes = 10;
        assert_eq!(err(&c), "max_packet_bytes: must be in 68..=262144");
        let mut c = base.clone();
        c.quantum_bytes = 1000;
        assert_eq!(err(&c), "quantum_bytes: must be at least max_packet_bytes");
        let mut c = base.clone();
        c.classes.clear();
        assert_eq!(err(&c), "classes: must list 1 to 8 classes");
        let mut c = base.clone();
        c.classes[1].id = ClassId(0);
        assert_eq!(err(&c), "classes[1].id: is used by an earlier class");
        let mut c = base.clone();
        c.classes[1].id = ClassId(8);
        assert_eq!(err(&c), "classes[1].id: must be below 8");
        let mut c = base.clone();
        c.classes[1] = ClassConfig::strict(1, None, 10, 10_000);
        assert_eq!(
            err(&c),
            "classes[1].kind: a second strict class: at most one is allowed"
        );
        let mut c = base.clone();
        c.classes[1].kind = ClassKind::Weighted { weight: 0 };
        assert_eq!(err(&c), "classes[1].kind.weight: must be in 1..=65536");
        let mut c = base.clone();
        c.classes[0].kind = ClassKind::Strict {
            guard: Some(RateConfig {
                rate_bps: 0,
                burst_bytes: 3000,
            }),
        };
        assert_eq!(
            err(&c),
            "classes[0].kind.guard.rate_bps: must be in 1..=1e12 bit/s"
        );
        let mut c = base.clone();
        c.classes[1].queue_packets = 0;
        assert_eq!(err(&c), "classes[1].queue_packets: must be in 1..=1048576");
        let mut c = base.clone();
        c.classes[1].queue_bytes = 100;
        assert_eq!(
            err(&c),
            "classes[1].queue_bytes: must be at least max_packet_bytes"
        );
        let mut c = base.clone();
        c.classes[0].drop_red = true;
        assert_eq!(
            err(&c),
            "classes[0].drop_red: needs a meter to colour packets"
        );
        c.classes[0].meter = Some(lc_meter());
        c.validate().unwrap();
        let mut c = base.clone();
        c.classes[0].meter = Some(MeterConfig::SrTcm(SrTcmConfig {
            cbs_bytes: 1000,
            ..match lc_meter() {
                MeterConfig::SrTcm(s) => s,
                MeterConfig::TrTcm(_) => unreachable!(),
            }
        }));
        assert_eq!(
            err(&c),
            "classes[0].meter.cbs_bytes: must be at least one largest packet (max_packet_bytes)"
        );
        let mut c = base;
        c.classes[0].meter = Some(MeterConfig::TrTcm(TrTcmConfig {
            pir_bps: 1_000_000,
            pbs_bytes: 3000,
            cir_bps: 2_000_000,
            cbs_bytes: 3000,
            mode: MeterMode::ColorAware,
        }));
        assert_eq!(
            err(&c),
            "classes[0].meter.pir_bps: must be at least cir_bps (RFC 2698)"
        );
    }

    #[test]
    fn meter_and_shaper_limits() {
        let s = SrTcmConfig {
            cir_bps: MAX_RATE_BPS + 1,
            cbs_bytes: 1500,
            ebs_bytes: 0,
            mode: MeterMode::ColorBlind,
        };
        assert_eq!(s.validate(1500).unwrap_err().field, "cir_bps");
        let s = SrTcmConfig {
            cir_bps: 1,
            ebs_bytes: 1,
            ..s
        };
        assert_eq!(s.validate(1500).unwrap_err().field, "ebs_bytes");
        let s = SrTcmConfig {
            cbs_bytes: MAX_BURST_BYTES + 1,
            ebs_bytes: 0,
            ..s
        };
        assert_eq!(
            s.validate(1500).unwrap_err().to_string(),
            "cbs_bytes: must be at most 1 GiB"
        );
        let sh = ShaperConfig {
            rate_bps: 1_000_000_000,
            burst_bytes: 1500,
            overhead_bytes: 50,
        };
        assert_eq!(
            sh.validate(1500).unwrap_err().to_string(),
            "burst_bytes: must be at least one largest packet (max_packet_bytes)"
        );
        ShaperConfig {
            burst_bytes: 1550,
            ..sh
        }
        .validate(1500)
        .unwrap();
    }
}
