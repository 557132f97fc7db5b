//! Fuzz target bodies, shared by `fuzz/fuzz_targets/` and the corpus replay test.
//!
//! Owns the properties the fuzzers check; it exists only under `cfg(fuzzing)` (set by
//! cargo-fuzz) or the `fuzzing` feature, so nothing here is part of the normal API. It does not
//! own the corpus (`fuzz/corpus/`) or the regression inputs (`tests/resources/`).
//!
//! Each function panics (an `assert!`) when a property fails; that is the point: libFuzzer
//! records the input as a crash.

use core::fmt::{self, Write};

use crate::braid::{self, Packet, PacketType, ProbeReplyBody, ProbeReplyCounters, Repr};
use crate::vxlan;
use crate::{IpSummary, ParseError};

/// Inputs whose re-emitted packet would not fit in this stack buffer skip the byte-level
/// roundtrip (libFuzzer's default `-max_len` is 4096, far below it).
const ROUNDTRIP_BUF_LEN: usize = 1 << 16;

/// The `braid_header` fuzz target: `data` as a braid packet, as a TUN IP packet, as a TAP
/// frame and as a VXLAN header.
///
/// Checks that nothing panics; that a packet `Repr::parse` accepts re-emits to the same
/// header bytes and parses back to the same repr; that a parsed probe reply body re-emits to
/// the same bytes (and so do its counters, when the payload carries them); and that an [`IpSummary`] is self-consistent (its length fits the input,
/// fragments have no ports, a VNI comes with UDP to port 4789).
///
/// # Panics
/// When one of these properties fails.
pub fn braid_header(data: &[u8]) {
    braid_packet(data);
    ip_summary(data);
    vxlan_header(data);
}

/// A `fmt::Write` that counts and discards, so `Display` can be exercised without `alloc`.
struct Sink(usize);

impl Write for Sink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

fn display_len(value: &impl fmt::Display) -> usize {
    let mut sink = Sink(0);
    write!(sink, "{value}").expect("invariant: Sink never fails");
    sink.0
}

fn braid_packet(data: &[u8]) {
    let checked = Packet::new_checked(data);
    // `parse` must also be safe on an unchecked view: it runs `check_len` itself.
    let parsed = Repr::parse(&Packet::new_unchecked(data));

    let Ok(packet) = checked else {
        assert!(parsed.is_err(), "parse accepted a packet check_len rejects");
        return;
    };
    // Every accessor, on any bytes that pass check_len.
    let _ = (packet.version(), packet.packet_type(), packet.flags());
    let _ = (
        packet.link_id(),
        packet.header_len(),
        packet.flow_id(),
        packet.seq(),
    );
    let _ = (
        packet.frag_offset(),
        packet.total_len(),
        packet.timestamp_ns(),
    );
    let _ = (
        packet.replay_counter(),
        packet.control_subtype(),
        packet.auth_tag(),
    );
    let payload = packet.payload();
    assert_eq!(
        packet.header_len() + payload.len() + packet.tag_len(),
        data.len(),
        "header, payload and tag must tile the packet"
    );
    assert!(display_len(&packet) > 0);

    let Ok(repr) = parsed else { return };
    assert_eq!(repr.check(), Ok(()));
    assert_eq!(repr.buffer_len(), data.len());
    assert_eq!(repr.payload_len, payload.len());
    assert!(display_len(&repr) > 0);
    if repr.packet_type == PacketType::ProbeReply {
        let body = ProbeReplyBody::parse(payload).expect("parse checked the body length");
        let mut bytes = [0u8; ProbeReplyBody::LEN];
        assert_eq!(body.emit(&mut bytes), Ok(()));
        assert_eq!(&bytes[..], &payload[..ProbeReplyBody::LEN]);
        if let Some(counters) = ProbeReplyCounters::parse(payload) {
            let mut bytes = [0u8; ProbeReplyCounters::REPLY_PAYLOAD_LEN];
            assert_eq!(counters.emit(&mut bytes), Ok(()));
            assert_eq!(
                &bytes[ProbeReplyCounters::OFFSET..],
                &payload[ProbeReplyCounters::OFFSET..ProbeReplyCounters::REPLY_PAYLOAD_LEN]
            );
        } else {
            assert!(payload.len() < ProbeReplyCounters::REPLY_PAYLOAD_LEN);
        }
    }
    if repr.packet_type == PacketType::Control {
        assert_eq!(packet.control_subtype(), payload.first().copied());
    }

    if repr.buffer_len() > ROUNDTRIP_BUF_LEN {
        return;
    }
    let mut buf = [0u8; ROUNDTRIP_BUF_LEN];
    let header_len = repr.emit_into(&mut buf).expect("a parsed repr emits");
    assert_eq!(header_len, repr.header_len());
    buf[header_len..header_len + repr.payload_len].copy_from_slice(payload);
    // ENCRYPTED and the lane are the header bits a repr does not carry: the TX path sets
    // them after emit.
    let emitted = Packet::new_unchecked(&buf[..repr.buffer_len()]);
    assert!(!emitted.encrypted() && emitted.lane() == 0);
    let mut view = Packet::new_unchecked(&mut buf[..repr.buffer_len()]);
    view.set_encrypted(packet.encrypted());
    view.set_lane(packet.lane());
    let out = &buf[..repr.buffer_len()];
    // Every header bit is either in the repr, the ENCRYPTED flag, the lane or fixed by
    // version 1: the bytes match.
    assert_eq!(&out[..header_len], &data[..header_len]);
    let reparsed = Repr::parse(&Packet::new_unchecked(out));
    assert_eq!(reparsed, Ok(repr), "parse(emit(repr)) != repr");
    if repr.auth.is_some() {
        assert_eq!(
            &out[out.len() - braid::AUTH_TAG_LEN..],
            &[0; braid::AUTH_TAG_LEN]
        );
    }
    // emit_into refuses a buffer one byte short, without panicking.
    assert_eq!(
        repr.emit_into(&mut buf[..repr.buffer_len() - 1]),
        Err(ParseError::Truncated)
    );
}

fn check_summary(summary: &IpSummary, available: usize) {
    assert!(summary.total_len <= available, "total_len past the input");
    assert_eq!(summary.src.is_ipv4(), summary.dst.is_ipv4());
    let min_len = if summary.src.is_ipv4() { 20 } else { 40 };
    assert!(summary.total_len >= min_len);
    assert!(summary.dscp < 64 && summary.ecn < 4);
    if summary.is_fragment {
        assert_eq!((summary.src_port, summary.dst_port), (0, 0));
        assert_eq!(summary.vxlan_vni, None);
    }
    if let Some(vni) = summary.vxlan_vni {
        assert!(vni <= vxlan::VNI_MAX);
        assert_eq!(summary.protocol, 17);
        assert_eq!(summary.dst_port, vxlan::VXLAN_PORT);
    }
    assert!(display_len(summary) > 0);
}

fn ip_summary(data: &[u8]) {
    if let Ok(summary) = IpSummary::parse_l3(data) {
        check_summary(&summary, data.len());
        assert_eq!(summary.vlan, None);
    }
    if let Ok(summary) = IpSummary::parse_l2(data) {
        // Ethernet II header (14 bytes) at least, before the IP packet.
        check_summary(&summary, data.len().saturating_sub(14));
        if let Some(vlan) = summary.vlan {
            assert!(vlan != 0 && vlan < 4096);
        }
    }
}

fn vxlan_header(data: &[u8]) {
    let Ok(packet) = vxlan::Packet::new_checked(data) else {
        return;
    };
    let _ = (packet.flags(), packet.vni(), packet.payload());
    assert!(display_len(&packet) > 0);
    if let Ok(repr) = vxlan::Repr::parse(&packet) {
        let mut out = [0xffu8; vxlan::HEADER_LEN];
        repr.emit(&mut vxlan::Packet::new_unchecked(&mut out[..]));
        assert_eq!(out[0], data[0]);
        assert_eq!(&out[4..7], &data[4..7]);
        assert_eq!(
            vxlan::Repr::parse(&vxlan::Packet::new_unchecked(&out[..])),
            Ok(repr)
        );
    }
}
