//! Byte-vector tests for the braid header: deconstruct, construct, roundtrip, truncated,
//! bad length, bad version, reserved flags, auth, per-type rules; proptests for parse on
//! arbitrary bytes and emit→parse on arbitrary valid reprs.

use std::format;
use std::string::ToString;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;
use rstest::rstest;

use super::*;

/// A whole datagram: data, link 2, flow 0x01020304, seq 0x1122334455667788, 4 bytes.
const DATA_WHOLE: [u8; 36] = [
    0x10, 0x00, 0x02, 0x08, // v1 data, no flags, link 2, 8 words
    0x01, 0x02, 0x03, 0x04, // flow id
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // seq
    0x00, 0x00, 0x00, 0x00, // frag offset 0
    0x00, 0x00, 0x00, 0x04, // total len 4
    0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, // timestamp
    0xde, 0xad, 0xbe, 0xef, // payload
];

/// A duplicated fragment: bytes 1400..1404 of a 2000-byte datagram, on link 0.
const DATA_FRAG_DUP: [u8; 36] = [
    0x10, 0x02, 0x00, 0x08, // v1 data, DUPLICATE, link 0, 8 words
    0x00, 0x00, 0x00, 0x07, // flow 7
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, // seq 42
    0x00, 0x00, 0x05, 0x78, // frag offset 1400
    0x00, 0x00, 0x07, 0xd0, // total len 2000
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xe8, // timestamp 1000
    0x01, 0x02, 0x03, 0x04,
];

/// An authenticated whole datagram: replay counter 0x2a, 2 bytes of payload, a tag.
const DATA_AUTH: [u8; 58] = [
    0x10, 0x01, 0x01, 0x0a, // v1 data, AUTH, link 1, 10 words
    0x00, 0x00, 0x00, 0x07, // flow 7
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // seq 1
    0x00, 0x00, 0x00, 0x00, // frag offset 0
    0x00, 0x00, 0x00, 0x02, // total len 2
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, // timestamp 5
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, // replay counter 42
    0xca, 0xfe, // payload
    0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, // tag
    0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
];

/// A probe on link 3, probe seq 9, with 8 bytes of padding.
const PROBE: [u8; 40] = [
    0x11, 0x00, 0x03, 0x08, // v1 probe, link 3
    0x00, 0x00, 0x00, 0x00, // flow 0
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, // probe seq 9
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // frag offset, total len: 0
    0x00, 0x00, 0x00, 0x00, 0x3b, 0x9a, 0xca, 0x00, // timestamp 1 s
    0, 0, 0, 0, 0, 0, 0, 0, // padding
];

/// The reply to PROBE: echo 1 s, received at 2 s (replier's clock), sent at 2.000001 s.
const PROBE_REPLY: [u8; 48] = [
    0x12, 0x00, 0x03, 0x08, // v1 probe reply, link 3
    0x00, 0x00, 0x00, 0x00, // flow 0
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, // probe seq 9
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // frag offset, total len: 0
    0x00, 0x00, 0x00, 0x00, 0x77, 0x35, 0x97, 0xe8, // timestamp 2_000_001_000
    0x00, 0x00, 0x00, 0x00, 0x3b, 0x9a, 0xca, 0x00, // echo: 1 s
    0x00, 0x00, 0x00, 0x00, 0x77, 0x35, 0x94, 0x00, // rx: 2 s
];

/// A control message, subtype 1, on flow 9, sent duplicated.
const CONTROL: [u8; 35] = [
    0x13, 0x02, 0x00, 0x08, // v1 control, DUPLICATE, link 0
    0x00, 0x00, 0x00, 0x09, // flow 9
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, // seq 3
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // frag offset, total len: 0
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, // timestamp 7
    0x01, 0xaa, 0xbb, // subtype 1, body
];

fn data_whole_repr() -> Repr {
    Repr {
        packet_type: PacketType::Data,
        link_id: 2,
        flow_id: 0x0102_0304,
        seq: 0x1122_3344_5566_7788,
        frag_offset: 0,
        total_len: 4,
        timestamp_ns: 0x0000_018b_cfe5_6800,
        duplicate: false,
        auth: None,
        payload_len: 4,
    }
}

fn data_frag_dup_repr() -> Repr {
    Repr {
        packet_type: PacketType::Data,
        link_id: 0,
        flow_id: 7,
        seq: 42,
        frag_offset: 1400,
        total_len: 2000,
        timestamp_ns: 1000,
        duplicate: true,
        auth: None,
        payload_len: 4,
    }
}

fn data_auth_repr() -> Repr {
    Repr {
        packet_type: PacketType::Data,
        link_id: 1,
        flow_id: 7,
        seq: 1,
        frag_offset: 0,
        total_len: 2,
        timestamp_ns: 5,
        duplicate: false,
        auth: Some(42),
        payload_len: 2,
    }
}

fn probe_repr() -> Repr {
    Repr::probe(3, 9, 1_000_000_000, 8)
}

fn probe_reply_repr() -> Repr {
    Repr::probe_reply(3, 9, 2_000_001_000)
}

fn control_repr() -> Repr {
    Repr {
        packet_type: PacketType::Control,
        link_id: 0,
        flow_id: 9,
        seq: 3,
        frag_offset: 0,
        total_len: 0,
        timestamp_ns: 7,
        duplicate: true,
        auth: None,
        payload_len: 3,
    }
}

/// Every vector with its repr and payload.
fn vectors() -> Vec<(&'static str, &'static [u8], Repr)> {
    vec![
        ("data_whole", &DATA_WHOLE, data_whole_repr()),
        ("data_frag_dup", &DATA_FRAG_DUP, data_frag_dup_repr()),
        ("data_auth", &DATA_AUTH, data_auth_repr()),
        ("probe", &PROBE, probe_repr()),
        ("probe_reply", &PROBE_REPLY, probe_reply_repr()),
        ("control", &CONTROL, control_repr()),
    ]
}

fn parse(bytes: &[u8]) -> Result<Repr, ParseError> {
    Repr::parse(&Packet::new_checked(bytes)?)
}

/// Emits `repr` and copies `payload` in, as the TX path does.
fn build(repr: &Repr, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0xffu8; repr.buffer_len()];
    let header_len = repr.emit_into(&mut buf).expect("valid repr");
    buf[header_len..header_len + payload.len()].copy_from_slice(payload);
    buf
}

#[rstest]
#[case::data_whole(&DATA_WHOLE, data_whole_repr(), &[0xde, 0xad, 0xbe, 0xef])]
#[case::data_frag_dup(&DATA_FRAG_DUP, data_frag_dup_repr(), &[1, 2, 3, 4])]
#[case::data_auth(&DATA_AUTH, data_auth_repr(), &[0xca, 0xfe])]
#[case::probe(&PROBE, probe_repr(), &[0; 8])]
#[case::probe_reply(&PROBE_REPLY, probe_reply_repr(), &PROBE_REPLY[32..])]
#[case::control(&CONTROL, control_repr(), &[1, 0xaa, 0xbb])]
fn deconstruct(#[case] bytes: &[u8], #[case] expected: Repr, #[case] payload: &[u8]) {
    let packet = Packet::new_checked(bytes).unwrap();
    assert_eq!(packet.version(), VERSION);
    assert_eq!(packet.packet_type(), Ok(expected.packet_type));
    assert_eq!(packet.link_id(), expected.link_id);
    assert_eq!(packet.flow_id(), expected.flow_id);
    assert_eq!(packet.seq(), expected.seq);
    assert_eq!(packet.frag_offset(), expected.frag_offset);
    assert_eq!(packet.total_len(), expected.total_len);
    assert_eq!(packet.timestamp_ns(), expected.timestamp_ns);
    assert_eq!(packet.duplicate(), expected.duplicate);
    assert_eq!(packet.replay_counter(), expected.auth);
    assert_eq!(packet.header_len(), expected.header_len());
    assert_eq!(packet.payload(), payload);
    assert_eq!(Repr::parse(&packet), Ok(expected));
}

#[rstest]
#[case::data_whole(&DATA_WHOLE, data_whole_repr())]
#[case::data_frag_dup(&DATA_FRAG_DUP, data_frag_dup_repr())]
#[case::data_auth(&DATA_AUTH, data_auth_repr())]
#[case::probe(&PROBE, probe_repr())]
#[case::probe_reply(&PROBE_REPLY, probe_reply_repr())]
#[case::control(&CONTROL, control_repr())]
fn construct(#[case] bytes: &[u8], #[case] repr: Repr) {
    assert_eq!(repr.buffer_len(), bytes.len());
    // Pre-filled with 0xff: emit must write every header byte and zero the tag.
    let mut buf = vec![0xffu8; repr.buffer_len()];
    let mut packet = Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut packet);
    let payload = Packet::new_checked(bytes).unwrap().payload().to_vec();
    packet.payload_mut().copy_from_slice(&payload);
    let tag_start = bytes.len() - repr.tag_len();
    assert_eq!(&buf[..tag_start], &bytes[..tag_start]);
    assert!(buf[tag_start..].iter().all(|&b| b == 0), "tag space zeroed");
}

#[test]
fn roundtrip_every_vector() {
    for (name, bytes, repr) in vectors() {
        let payload = Packet::new_checked(bytes).unwrap().payload().to_vec();
        let built = build(&repr, &payload);
        assert_eq!(parse(&built), Ok(repr), "{name}");
        assert_eq!(
            Packet::new_checked(&built[..]).unwrap().payload(),
            &payload[..]
        );
    }
}

/// The shortest packet of each type that can parse: header (+ counter) + minimum payload + tag.
fn min_len(repr: &Repr) -> usize {
    let min_payload = match repr.packet_type {
        PacketType::Data | PacketType::Control => 1,
        PacketType::Probe => 0,
        PacketType::ProbeReply => ProbeReplyBody::LEN,
    };
    repr.header_len() + min_payload + repr.tag_len()
}

/// Every prefix is an error, or — because the braid header has no payload length field (the
/// outer UDP length delimits the packet) — the same packet with a shorter payload. A cut data
/// packet then parses as a fragment, never as a whole datagram, so the reassembler cannot
/// deliver it as complete; the AUTH tag (a later issue) will reject it outright.
#[test]
fn truncated_every_prefix() {
    for (name, bytes, repr) in vectors() {
        for len in 0..bytes.len() {
            let prefix = &bytes[..len];
            let checked = Packet::new_checked(prefix);
            let parsed = Repr::parse(&Packet::new_unchecked(prefix));
            if len < HEADER_LEN {
                assert_eq!(checked, Err(ParseError::Truncated), "{name}: prefix {len}");
            }
            if len < min_len(&repr) {
                assert!(parsed.is_err(), "{name}: prefix {len} parsed");
                // Display on a bad packet names the error instead of panicking.
                assert!(
                    Packet::new_unchecked(prefix)
                        .to_string()
                        .starts_with("braid (")
                );
                continue;
            }
            let cut = parsed.unwrap_or_else(|err| panic!("{name}: prefix {len}: {err}"));
            assert_eq!(
                cut,
                Repr {
                    payload_len: len - repr.header_len() - repr.tag_len(),
                    ..repr
                },
                "{name}: prefix {len}"
            );
            if repr.packet_type == PacketType::Data {
                assert!(cut.is_fragment(), "{name}: prefix {len} looks whole");
            }
        }
    }
}

#[test]
fn truncated_auth_packet_before_tag() {
    // Cut inside the tag: what remains is too short for header + tag + one payload byte.
    let min = HEADER_LEN + AUTH_COUNTER_LEN + 1 + AUTH_TAG_LEN;
    for len in HEADER_LEN..min {
        let result = parse(&DATA_AUTH[..len]);
        let expected = if len < HEADER_LEN + AUTH_COUNTER_LEN + AUTH_TAG_LEN {
            ParseError::Truncated
        } else {
            ParseError::BadLength // room for the tag, but an empty data payload
        };
        assert_eq!(result, Err(expected), "prefix {len}");
    }
}

#[rstest]
#[case::auth_with_8_words(0x01, 8)]
#[case::plain_with_10_words(0x00, 10)]
#[case::zero_words(0x00, 0)]
#[case::too_many_words(0x00, 9)]
#[case::max_words(0x01, 255)]
fn bad_header_len(#[case] flags: u8, #[case] words: u8) {
    let mut bytes = [0u8; 128];
    bytes[..DATA_WHOLE.len()].copy_from_slice(&DATA_WHOLE);
    bytes[1] = flags;
    bytes[3] = words;
    assert_eq!(
        Packet::new_checked(&bytes[..]).unwrap_err(),
        ParseError::BadLength
    );
    assert_eq!(
        Repr::parse(&Packet::new_unchecked(&bytes[..])),
        Err(ParseError::BadLength)
    );
}

#[rstest]
#[case::empty_payload(0, 4, &[])]
#[case::past_total(1, 4, &[1, 2, 3, 4])]
#[case::past_total_large_offset(1997, 2000, &[1, 2, 3, 4])]
#[case::offset_overflows_u32(u32::MAX, u32::MAX, &[1, 2, 3, 4])]
#[case::payload_longer_than_total(0, 2, &[1, 2, 3])]
fn data_bad_length(#[case] frag_offset: u32, #[case] total_len: u32, #[case] payload: &[u8]) {
    let mut bytes = DATA_WHOLE[..HEADER_LEN].to_vec();
    bytes[16..20].copy_from_slice(&frag_offset.to_be_bytes());
    bytes[20..24].copy_from_slice(&total_len.to_be_bytes());
    bytes.extend_from_slice(payload);
    assert_eq!(parse(&bytes), Err(ParseError::BadLength));
}

#[test]
fn data_zero_total_len() {
    let mut bytes = DATA_WHOLE;
    bytes[20..24].fill(0);
    assert_eq!(
        parse(&bytes),
        Err(ParseError::IllegalValue { field: "total_len" })
    );
}

#[test]
fn data_last_fragment_ends_exactly_at_total() {
    let mut bytes = DATA_FRAG_DUP;
    bytes[16..20].copy_from_slice(&1996u32.to_be_bytes());
    let repr = parse(&bytes).unwrap();
    assert_eq!(repr.frag_offset, 1996);
    assert!(repr.is_fragment());
}

#[test]
fn is_fragment() {
    assert!(!data_whole_repr().is_fragment());
    assert!(data_frag_dup_repr().is_fragment());
    // A first fragment: offset 0 but shorter than the datagram.
    let first = Repr {
        total_len: 10,
        ..data_whole_repr()
    };
    assert!(first.is_fragment());
    assert!(!probe_repr().is_fragment());
}

#[rstest]
#[case::zero(0x00)]
#[case::two(0x20)]
#[case::fifteen(0xf0)]
fn bad_version(#[case] version_byte: u8) {
    for (name, bytes, _) in vectors() {
        let mut bytes = bytes.to_vec();
        bytes[0] = version_byte | (bytes[0] & 0x0f);
        assert_eq!(parse(&bytes), Err(ParseError::Unsupported), "{name}");
    }
}

#[test]
fn unknown_type() {
    for packet_type in 4..=15u8 {
        let mut bytes = DATA_WHOLE;
        bytes[0] = 0x10 | packet_type;
        assert_eq!(
            parse(&bytes),
            Err(ParseError::IllegalValue { field: "type" }),
            "type {packet_type}"
        );
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap().packet_type(),
            Err(ParseError::IllegalValue { field: "type" })
        );
    }
}

#[test]
fn reserved_flags() {
    assert_eq!(FLAGS_RESERVED, 0x08);
    for bit in 3..4 {
        for (name, bytes, _) in vectors() {
            let mut bytes = bytes.to_vec();
            bytes[1] |= 1 << bit;
            assert_eq!(
                parse(&bytes),
                Err(ParseError::IllegalValue { field: "flags" }),
                "{name}, bit {bit}"
            );
        }
    }
}

#[rstest]
#[case::probe(&PROBE)]
#[case::probe_reply(&PROBE_REPLY)]
#[case::control(&CONTROL)]
fn non_data_fragment_fields_must_be_zero(#[case] bytes: &[u8]) {
    let mut with_offset = bytes.to_vec();
    with_offset[19] = 1;
    assert_eq!(
        parse(&with_offset),
        Err(ParseError::IllegalValue {
            field: "frag_offset"
        })
    );
    let mut with_total = bytes.to_vec();
    with_total[23] = 1;
    assert_eq!(
        parse(&with_total),
        Err(ParseError::IllegalValue { field: "total_len" })
    );
}

#[rstest]
#[case::probe(&PROBE)]
#[case::probe_reply(&PROBE_REPLY)]
fn probes_are_never_duplicated(#[case] bytes: &[u8]) {
    let mut bytes = bytes.to_vec();
    bytes[1] = FLAG_DUPLICATE;
    assert_eq!(
        parse(&bytes),
        Err(ParseError::IllegalValue { field: "flags" })
    );
}

#[test]
fn probe_payload_may_be_empty() {
    let repr = parse(&PROBE[..HEADER_LEN]).unwrap();
    assert_eq!(repr, Repr::probe(3, 9, 1_000_000_000, 0));
}

#[test]
fn probe_reply_needs_its_body() {
    for len in HEADER_LEN..HEADER_LEN + ProbeReplyBody::LEN {
        assert_eq!(
            parse(&PROBE_REPLY[..len]),
            Err(ParseError::BadLength),
            "{len}"
        );
    }
    // Padding after the body is allowed.
    let mut padded = PROBE_REPLY.to_vec();
    padded.extend_from_slice(&[0; 20]);
    assert_eq!(parse(&padded).unwrap().payload_len, 36);
}

#[test]
fn probe_reply_body() {
    let packet = Packet::new_checked(&PROBE_REPLY[..]).unwrap();
    let body = ProbeReplyBody::parse(packet.payload()).unwrap();
    assert_eq!(
        body,
        ProbeReplyBody {
            echo_timestamp_ns: 1_000_000_000,
            rx_timestamp_ns: 2_000_000_000,
        }
    );
    let mut out = [0xffu8; 20];
    body.emit(&mut out).unwrap();
    assert_eq!(&out[..16], &PROBE_REPLY[32..]);
    assert_eq!(&out[16..], &[0xff; 4], "emit writes only the body");
    assert_eq!(
        ProbeReplyBody::parse(&PROBE_REPLY[32..47]),
        Err(ParseError::Truncated)
    );
    assert_eq!(body.emit(&mut [0; 15]), Err(ParseError::Truncated));
}

/// A 32-byte probe reply payload: the body of PROBE_REPLY, then 1 500 000 bytes and 1000
/// packets received on the link.
const PROBE_REPLY_COUNTERS: [u8; 32] = [
    0x00, 0x00, 0x00, 0x00, 0x3b, 0x9a, 0xca, 0x00, // echo: 1 s
    0x00, 0x00, 0x00, 0x00, 0x77, 0x35, 0x94, 0x00, // rx: 2 s
    0x00, 0x00, 0x00, 0x00, 0x00, 0x16, 0xe3, 0x60, // rx bytes 1_500_000
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xe8, // rx packets 1000
];

#[test]
fn probe_reply_counters_deconstruct_construct() {
    let counters = ProbeReplyCounters::parse(&PROBE_REPLY_COUNTERS).unwrap();
    assert_eq!(
        counters,
        ProbeReplyCounters {
            rx_bytes: 1_500_000,
            rx_packets: 1000,
        }
    );
    // The body in front reads as before.
    let body = ProbeReplyBody::parse(&PROBE_REPLY_COUNTERS).unwrap();
    assert_eq!(body.rx_timestamp_ns, 2_000_000_000);
    let mut out = [0xffu8; 36];
    body.emit(&mut out).unwrap();
    counters.emit(&mut out).unwrap();
    assert_eq!(&out[..32], &PROBE_REPLY_COUNTERS[..]);
    assert_eq!(&out[32..], &[0xff; 4], "emit writes only the counters");
}

#[test]
fn probe_reply_counters_truncated_or_absent() {
    // A 16-byte reply (a peer without counters) has none; so has any payload cut inside them.
    for len in 0..ProbeReplyCounters::REPLY_PAYLOAD_LEN {
        assert_eq!(
            ProbeReplyCounters::parse(&PROBE_REPLY_COUNTERS[..len]),
            None,
            "{len}"
        );
    }
    assert_eq!(ProbeReplyCounters::parse(&PROBE_REPLY[32..]), None);
    let c = ProbeReplyCounters::default();
    assert_eq!(c.emit(&mut [0; 31]), Err(ParseError::Truncated));
    // A whole packet with the counters parses as a probe reply with a 32-byte payload.
    let mut packet = PROBE_REPLY[..32].to_vec();
    packet.extend_from_slice(&PROBE_REPLY_COUNTERS);
    let repr = parse(&packet).unwrap();
    assert_eq!(repr.packet_type, PacketType::ProbeReply);
    assert_eq!(repr.payload_len, ProbeReplyCounters::REPLY_PAYLOAD_LEN);
}

#[test]
fn control_subtype() {
    let packet = Packet::new_checked(&CONTROL[..]).unwrap();
    assert_eq!(packet.control_subtype(), Some(1));
    assert_eq!(
        Packet::new_checked(&DATA_WHOLE[..])
            .unwrap()
            .control_subtype(),
        None
    );
    // A control packet without a subtype is malformed.
    assert_eq!(parse(&CONTROL[..HEADER_LEN]), Err(ParseError::BadLength));
    assert_eq!(
        Packet::new_checked(&CONTROL[..HEADER_LEN])
            .unwrap()
            .control_subtype(),
        None
    );
}

#[test]
fn auth_variant() {
    let packet = Packet::new_checked(&DATA_AUTH[..]).unwrap();
    assert!(packet.auth());
    assert_eq!(packet.header_len(), 40);
    assert_eq!(packet.tag_len(), AUTH_TAG_LEN);
    assert_eq!(packet.replay_counter(), Some(42));
    assert_eq!(packet.payload(), &[0xca, 0xfe]);
    assert_eq!(packet.auth_tag(), Some(&DATA_AUTH[42..]));
    let repr = Repr::parse(&packet).unwrap();
    assert_eq!(repr.header_len(), 40);
    assert_eq!(repr.buffer_len(), 58);

    // Without AUTH there is no counter and no tag.
    let plain = Packet::new_checked(&DATA_WHOLE[..]).unwrap();
    assert_eq!(plain.replay_counter(), None);
    assert_eq!(plain.auth_tag(), None);

    // The tag space is writable, and only the tag.
    let mut bytes = DATA_AUTH;
    let mut packet = Packet::new_unchecked(&mut bytes[..]);
    packet.auth_tag_mut().unwrap().fill(0x55);
    assert_eq!(&bytes[42..], &[0x55; 16]);
    assert_eq!(&bytes[..42], &DATA_AUTH[..42]);
    assert_eq!(
        Packet::new_unchecked(&mut { DATA_WHOLE }[..]).auth_tag_mut(),
        None
    );
}

/// The lane (bits 4..7) parses on every packet type, is shown by the view and by Display,
/// leaves the repr alone, and the setter touches only its bits.
#[test]
fn lane_bits() {
    assert_eq!((FLAGS_LANE, MAX_LANES), (0xf0, 16));
    for (name, vector, repr) in vectors() {
        for lane in 0..MAX_LANES {
            let mut bytes = vector.to_vec();
            Packet::new_unchecked(&mut bytes[..]).set_lane(lane);
            assert_eq!(
                bytes[1] & !FLAGS_LANE,
                vector[1],
                "{name}: other flags kept"
            );
            let view = Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(view.lane(), lane, "{name}");
            assert_eq!(Repr::parse(&view), Ok(repr), "{name}, lane {lane}");
            if lane > 0 {
                assert!(
                    view.to_string().contains(&format!(" lane={lane}")),
                    "{name}"
                );
            }
        }
    }
    // Emit writes lane 0; the setter keeps only the low 4 bits.
    let mut built = build(&data_auth_repr(), &[0xca, 0xfe]);
    assert_eq!(Packet::new_unchecked(&built[..]).lane(), 0);
    Packet::new_unchecked(&mut built[..]).set_lane(0x1f);
    assert_eq!(built[1], FLAG_AUTH | 0xf0);
}

/// ENCRYPTED (bit 2) is valid with AUTH only; emit leaves it clear and the setter touches
/// only its bit; the tag's place and the payload's do not move.
#[test]
fn encrypted_flag() {
    assert_eq!(FLAG_ENCRYPTED, 0x04);
    // With AUTH: parses to the same repr, and the view reports it.
    let mut bytes = DATA_AUTH;
    bytes[1] = FLAG_AUTH | FLAG_ENCRYPTED;
    assert_eq!(parse(&bytes), Ok(data_auth_repr()));
    let packet = Packet::new_checked(&bytes[..]).unwrap();
    assert!(packet.encrypted() && packet.auth());
    assert_eq!(packet.payload(), &[0xca, 0xfe]);
    assert_eq!(packet.auth_tag(), Some(&DATA_AUTH[42..]));
    assert_eq!(
        packet.to_string(),
        "braid v1 data link=1 flow=7 seq=1 frag=0+2/2 ts=5ns auth ctr=42 encrypted"
    );
    assert!(!Packet::new_checked(&DATA_AUTH[..]).unwrap().encrypted());
    // With AUTH and DUPLICATE as well.
    bytes[1] |= FLAG_DUPLICATE;
    assert_eq!(
        parse(&bytes),
        Ok(Repr {
            duplicate: true,
            ..data_auth_repr()
        })
    );
    // Without AUTH: refused on every vector that has no AUTH.
    for (name, vector, _) in vectors() {
        if vector[1] & FLAG_AUTH != 0 {
            continue;
        }
        let mut bytes = vector.to_vec();
        bytes[1] |= FLAG_ENCRYPTED;
        assert_eq!(
            parse(&bytes),
            Err(ParseError::IllegalValue { field: "flags" }),
            "{name}"
        );
    }
    // Emit clears it; the setter sets and clears only bit 2.
    let built = build(&data_auth_repr(), &[0xca, 0xfe]);
    assert_eq!(built[1], FLAG_AUTH);
    let mut built = built;
    let mut packet = Packet::new_unchecked(&mut built[..]);
    packet.set_encrypted(true);
    assert_eq!(packet.flags(), FLAG_AUTH | FLAG_ENCRYPTED);
    packet.set_duplicate(true);
    packet.set_encrypted(false);
    assert_eq!(packet.flags(), FLAG_AUTH | FLAG_DUPLICATE);
}

#[test]
fn auth_counter_roundtrips_extremes() {
    for counter in [0, 1, u64::MAX] {
        let repr = Repr {
            auth: Some(counter),
            ..data_auth_repr()
        };
        let built = build(&repr, &[9, 9]);
        assert_eq!(parse(&built), Ok(repr));
        assert_eq!(&built[32..40], &counter.to_be_bytes());
    }
}

#[test]
fn emit_into_checks_buffer_and_repr() {
    let repr = data_auth_repr();
    let mut buf = [0xffu8; 100];
    assert_eq!(repr.emit_into(&mut buf), Ok(40));
    assert_eq!(&buf[..40], &DATA_AUTH[..40]);
    assert_eq!(&buf[42..58], &[0; 16], "tag zeroed");
    assert_eq!(&buf[58..], &[0xff; 42], "nothing written past buffer_len");
    assert_eq!(repr.emit_into(&mut buf[..57]), Err(ParseError::Truncated));
    let bad = Repr {
        frag_offset: 1,
        ..repr
    };
    assert_eq!(bad.emit_into(&mut buf), Err(ParseError::BadLength));
    let bad = Repr {
        total_len: 0,
        ..repr
    };
    assert_eq!(
        bad.emit_into(&mut buf),
        Err(ParseError::IllegalValue { field: "total_len" })
    );
}

#[test]
fn emit_into_absurd_payload_len_does_not_wrap() {
    let repr = Repr::probe(0, 0, 0, usize::MAX - 8);
    assert_eq!(repr.buffer_len(), usize::MAX);
    assert_eq!(repr.emit_into(&mut [0; 64]), Err(ParseError::Truncated));
    let auth = Repr {
        auth: Some(1),
        ..repr
    };
    assert_eq!(auth.emit_into(&mut [0; 64]), Err(ParseError::Truncated));
}

#[test]
fn setters_touch_only_their_field() {
    let mut bytes = DATA_WHOLE;
    let mut packet = Packet::new_unchecked(&mut bytes[..]);
    packet.set_packet_type(PacketType::Control);
    assert_eq!(packet.version(), 1);
    packet.set_version(2);
    assert_eq!(packet.packet_type(), Ok(PacketType::Control));
    assert_eq!(packet.version(), 2);
    packet.set_duplicate(true);
    packet.set_auth(true);
    assert_eq!(packet.flags(), FLAG_AUTH | FLAG_DUPLICATE);
    packet.set_auth(false);
    assert_eq!(packet.flags(), FLAG_DUPLICATE);
    packet.set_duplicate(false);
    assert_eq!(packet.flags(), 0);
    packet.set_flow_id(0xa1b2_c3d4);
    packet.set_seq(u64::MAX);
    packet.set_frag_offset(5);
    packet.set_total_len(6);
    packet.set_timestamp_ns(7);
    packet.set_link_id(8);
    packet.set_header_len_words(10);
    assert_eq!(packet.header_len(), 40);
    assert_eq!(
        &bytes[..32],
        &[
            0x23, 0, 8, 10, 0xa1, 0xb2, 0xc3, 0xd4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 7
        ]
    );
    assert_eq!(&bytes[32..], &DATA_WHOLE[32..], "payload untouched");
}

#[test]
fn display() {
    assert_eq!(
        data_frag_dup_repr().to_string(),
        "braid v1 data link=0 flow=7 seq=42 frag=1400+4/2000 ts=1000ns dup"
    );
    assert_eq!(
        Packet::new_checked(&DATA_AUTH[..]).unwrap().to_string(),
        "braid v1 data link=1 flow=7 seq=1 frag=0+2/2 ts=5ns auth ctr=42"
    );
    assert_eq!(
        probe_repr().to_string(),
        "braid v1 probe link=3 flow=0 seq=9 len=8 ts=1000000000ns"
    );
    let mut bad = DATA_WHOLE;
    bad[1] = 0x08;
    assert_eq!(
        Packet::new_unchecked(&bad[..]).to_string(),
        "braid (illegal value in field flags)"
    );
    assert_eq!(PacketType::ProbeReply.to_string(), "probe-reply");
}

#[test]
fn packet_type_codes() {
    for (code, packet_type) in [
        (0u8, PacketType::Data),
        (1, PacketType::Probe),
        (2, PacketType::ProbeReply),
        (3, PacketType::Control),
    ] {
        assert_eq!(PacketType::try_from(code), Ok(packet_type));
        assert_eq!(u8::from(packet_type), code);
    }
}

#[test]
fn into_inner_returns_the_buffer() {
    let packet = Packet::new_checked(&PROBE[..]).unwrap();
    assert_eq!(packet.into_inner(), &PROBE[..]);
}

/// An arbitrary valid repr: per-type rules respected.
fn valid_repr() -> impl Strategy<Value = Repr> {
    let common = (
        any::<u8>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        proptest::option::of(any::<u64>()),
    );
    let typed = prop_oneof![
        (1u32..3000)
            .prop_flat_map(|total| (Just(total), 1..=total))
            .prop_flat_map(|(total, len)| (Just(total), Just(len), 0..=total - len))
            .prop_map(|(total, len, offset)| (PacketType::Data, offset, total, len as usize)),
        (0usize..64).prop_map(|len| (PacketType::Probe, 0, 0, len)),
        (16usize..64).prop_map(|len| (PacketType::ProbeReply, 0, 0, len)),
        (1usize..64).prop_map(|len| (PacketType::Control, 0, 0, len)),
    ];
    (common, typed).prop_map(
        |(
            (link_id, flow_id, seq, timestamp_ns, duplicate, auth),
            (packet_type, frag_offset, total_len, payload_len),
        )| Repr {
            packet_type,
            link_id,
            flow_id,
            seq,
            frag_offset,
            total_len,
            timestamp_ns,
            duplicate: duplicate && matches!(packet_type, PacketType::Data | PacketType::Control),
            auth,
            payload_len,
        },
    )
}

/// Bytes that look like a braid header often enough to get past the first checks.
fn header_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..=0x1f,
        0u8..=3,
        prop_oneof![Just(8u8), Just(10u8), any::<u8>()],
        proptest::collection::vec(any::<u8>(), 0..120),
    )
        .prop_map(|(ver_type, flags, words, mut rest)| {
            let mut bytes = vec![ver_type, flags, 0, words];
            bytes.append(&mut rest);
            bytes
        })
}

proptest! {
    #[test]
    fn parse_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Repr::parse(&Packet::new_unchecked(&bytes[..]));
        if let Ok(packet) = Packet::new_checked(&bytes[..]) {
            let _ = (packet.payload(), packet.auth_tag(), packet.replay_counter());
            let _ = packet.to_string();
        }
    }

    #[test]
    fn parse_header_like_bytes_never_panics(bytes in header_like_bytes()) {
        if let Ok(repr) = parse(&bytes) {
            // Whatever parses is valid and re-emits to the same header.
            prop_assert_eq!(repr.check(), Ok(()));
            let mut out = vec![0u8; repr.buffer_len()];
            let header_len = repr.emit_into(&mut out).unwrap();
            prop_assert_eq!(&out[..header_len], &bytes[..header_len]);
        }
    }

    #[test]
    fn emit_parse_roundtrip(repr in valid_repr(), fill in any::<u8>()) {
        prop_assert_eq!(repr.check(), Ok(()));
        let payload = vec![fill; repr.payload_len];
        let built = build(&repr, &payload);
        prop_assert_eq!(built.len(), repr.buffer_len());
        prop_assert_eq!(parse(&built), Ok(repr));
        let packet = Packet::new_checked(&built[..]).unwrap();
        prop_assert_eq!(packet.payload(), &payload[..]);
    }
}
