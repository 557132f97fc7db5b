//! `[[tunnels]]`: VXLAN (RFC 7348) and GRE (RFC 2784/2890) tunnels to peers that are not
//! braid, and their check and translation into the engine's `TunnelSpec`s. A flow class
//! sends its flows into one with `[[classes]] tunnel = "name"`.
//!
//! What this file owns: the section's checks (every error names the field; its schema is
//! braid-control's `TunnelSection`, the REST API's: one schema) and the translation. What it does not: the sockets (`run` opens braid-io's tunnel ports), the
//! packets (braid-core's `engine::tunnel`).

use std::collections::HashMap;
use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use braid_control::schema::{TunnelKindName, TunnelSection};
use braid_core::engine::TunnelSpec;
use braid_wire::tunnel::{
    Encap, GreEncap, InnerFormat, InnerMacs, OuterConfig, OuterIp, VxlanEncap,
};
use braid_wire::vxlan::SrcPortRange;

use super::{NicPlan, parse_mac, parse_port_range};

/// braid's inner MAC address by default: locally administered, "braid" in ASCII.
pub(crate) const DEFAULT_INNER_MAC: &str = "02:62:72:61:69:64";

/// Check `[[tunnels]]` against the NICs; the engine's tunnels in file order (their ids),
/// with `mtu_bytes` still the default (the daemon sets the link's).
pub(crate) fn check(
    tunnels: &[TunnelSection],
    nics: &[NicPlan],
    vnic_queues: u16,
) -> Result<Vec<TunnelSpec>> {
    if tunnels.len() > braid_core::engine::MAX_TUNNELS {
        bail!(
            "tunnels: {} entries, at most {}",
            tunnels.len(),
            braid_core::engine::MAX_TUNNELS
        );
    }
    let mut specs = Vec::new();
    // (kind, local, port) → (nic, index): one socket per local endpoint, on one NIC.
    let mut endpoints: HashMap<(TunnelKindName, IpAddr, u16), (String, usize)> = HashMap::new();
    for (i, t) in tunnels.iter().enumerate() {
        let at = |f: &str| format!("tunnels[{i}].{f}");
        if t.name.is_empty() || tunnels[..i].iter().any(|o| o.name == t.name) {
            bail!("{}: {:?} is empty or used twice", at("name"), t.name);
        }
        let nic = nics.iter().find(|n| n.name == t.nic).with_context(|| {
            format!(
                "{}: no [[nics]] entry is named {:?} (there are {:?})",
                at("nic"),
                t.nic,
                nics.iter().map(|n| n.name.as_str()).collect::<Vec<_>>()
            )
        })?;
        let ip = |s: &str, f: &str| -> Result<IpAddr> {
            s.parse()
                .map_err(|_| anyhow::anyhow!("{}: {s:?} is not an IP address", at(f)))
        };
        let local = ip(&t.local, "local")?;
        let remote = ip(&t.remote, "remote")?;
        let outer_ip = match (local, remote) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => OuterIp::V4 { src, dst },
            (IpAddr::V6(src), IpAddr::V6(dst)) => OuterIp::V6 { src, dst },
            _ => bail!(
                "{}: {remote} and local {local} are not the same IP version",
                at("remote")
            ),
        };
        let mut outer = OuterConfig::new(outer_ip);
        if let Some(ttl) = t.ttl {
            if ttl == 0 {
                bail!("{}: must be 1..=255", at("ttl"));
            }
            outer.ttl = ttl;
        }
        outer.tos = t.tos.unwrap_or(0);
        if let Some(df) = t.df {
            if df && local.is_ipv6() {
                bail!("{}: IPv4 only (IPv6 routers never fragment)", at("df"));
            }
            outer.df = df;
        }
        let only = |set: bool, f: &str, kind: &str| -> Result<()> {
            if set {
                bail!("{}: only for kind = \"{kind}\"", at(f));
            }
            Ok(())
        };
        let (encap, port) = match t.kind {
            TunnelKindName::Vxlan => {
                only(t.key.is_some(), "key", "gre")?;
                only(t.seq.is_some(), "seq", "gre")?;
                only(t.checksum.is_some(), "checksum", "gre")?;
                let vni = t
                    .vni
                    .with_context(|| format!("{}: needed with kind = \"vxlan\"", at("vni")))?;
                if vni > braid_wire::vxlan::VNI_MAX {
                    bail!("{}: {vni} must be 0..=16777215 (24 bits)", at("vni"));
                }
                let dst = t.inner_dst_mac.as_deref().with_context(|| {
                    format!(
                        "{}: needed with kind = \"vxlan\": the MAC of the far end's VXLAN \
                         device (it drops frames to any other address)",
                        at("inner_dst_mac")
                    )
                })?;
                let macs = InnerMacs {
                    src: parse_mac(t.inner_src_mac.as_deref().unwrap_or(DEFAULT_INNER_MAC))
                        .with_context(|| at("inner_src_mac"))?,
                    dst: parse_mac(dst).with_context(|| at("inner_dst_mac"))?,
                };
                if macs.src == macs.dst {
                    bail!(
                        "{}: the same as inner_dst_mac (the far end drops its own address as \
                         a loop)",
                        at("inner_src_mac")
                    );
                }
                let mut v = VxlanEncap::new(outer_ip, vni, InnerFormat::IpInEthernet(macs));
                v.outer = outer;
                if let Some(p) = t.port {
                    if p == 0 {
                        bail!("{}: must be 1..=65535", at("port"));
                    }
                    v.dst_port = p;
                }
                if let Some(r) = &t.src_ports {
                    let (min, max) = parse_port_range(r).with_context(|| at("src_ports"))?;
                    v.src_ports = SrcPortRange { min, max };
                }
                v.udp_checksum_v4 = t.udp_checksum.unwrap_or(false);
                (Encap::Vxlan(v), v.dst_port)
            }
            TunnelKindName::Gre => {
                for (f, set) in [
                    ("vni", t.vni.is_some()),
                    ("port", t.port.is_some()),
                    ("src_ports", t.src_ports.is_some()),
                    ("udp_checksum", t.udp_checksum.is_some()),
                    ("inner_src_mac", t.inner_src_mac.is_some()),
                    ("inner_dst_mac", t.inner_dst_mac.is_some()),
                ] {
                    only(set, f, "vxlan")?;
                }
                let mut g = GreEncap::new(outer_ip, InnerFormat::Ip);
                g.outer = outer;
                g.key = t.key;
                g.seq = t.seq.unwrap_or(false);
                g.checksum = t.checksum.unwrap_or(false);
                if g.seq && vnic_queues > 1 {
                    bail!(
                        "{}: needs vnic.queues = 1 (each worker would number its own packets \
                         and the peer would see them out of order); it is {vnic_queues}",
                        at("seq")
                    );
                }
                (Encap::Gre(g), 0)
            }
        };
        match endpoints.get(&(t.kind, local, port)) {
            Some((other, j)) if *other != t.nic => bail!(
                "{}: tunnels[{j}] has the same local endpoint on NIC {other:?}; tunnels that \
                 share a local address share its sockets and leave on one NIC",
                at("nic")
            ),
            Some(_) => {}
            None => {
                endpoints.insert((t.kind, local, port), (t.nic.clone(), i));
            }
        }
        specs.push(TunnelSpec::new(&t.name, nic.id, encap));
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use braid_core::NicId;

    use super::super::Config;
    use super::super::tests::{assert_errors_name, err};
    use super::*;

    const BASE: &str = r#"
[vnic]
name = "braid0"
addresses = ["10.99.0.1/24"]
mtu = 1400

[peer]
role = "a"

[[nics]]
name = "link0"
device = "veth0"
local = "10.77.0.1:7700"
peer = "10.77.0.2:7700"
capacity = "1gbit"

[[tunnels]]
name = "vx"
kind = "vxlan"
nic = "link0"
local = "10.77.0.1"
remote = "10.77.0.2"
vni = 42
inner_dst_mac = "02:00:00:00:00:0b"
src_ports = "32768-60999"

[[tunnels]]
name = "gre"
kind = "gre"
nic = "link0"
local = "10.77.0.1"
remote = "10.77.0.2"
key = 7
seq = true
checksum = true
ttl = 32

[[classes]]
name = "to-vxlan"
protocol = "udp"
dst_ports = "6000"
policy = "pin"
tunnel = "vx"

[[classes]]
name = "to-gre"
protocol = "udp"
dst_ports = "6001"
policy = "pin"
tunnel = "gre"
"#;

    #[test]
    fn tunnels_translate() {
        let plan = Config::parse(BASE).unwrap();
        assert_eq!(plan.tunnels.len(), 2);
        assert_eq!(plan.classes[0].tunnel, Some(0));
        assert_eq!(plan.classes[1].tunnel, Some(1));
        let Encap::Vxlan(v) = plan.tunnels[0].encap else {
            panic!("vxlan")
        };
        assert_eq!(v.vni, 42);
        assert_eq!(v.dst_port, 4789);
        assert_eq!(v.src_ports, SrcPortRange::LINUX_DEFAULT);
        assert_eq!(
            v.inner,
            InnerFormat::IpInEthernet(InnerMacs {
                src: [0x02, 0x62, 0x72, 0x61, 0x69, 0x64],
                dst: [2, 0, 0, 0, 0, 0x0b],
            })
        );
        let Encap::Gre(g) = plan.tunnels[1].encap else {
            panic!("gre")
        };
        assert_eq!(
            (g.key, g.seq, g.checksum, g.outer.ttl),
            (Some(7), true, true, 32)
        );
        assert!(plan.tunnels[1].rx_check_seq);
        // GRE over IPv4 with DF clear (the default) fragments its outer packets; VXLAN
        // never does; `df = true` stops it.
        assert!(plan.tunnels[1].fragments_outer());
        assert!(!plan.tunnels[0].fragments_outer());
        let df = Config::parse(&BASE.replacen("ttl = 32", "ttl = 32\ndf = true", 1)).unwrap();
        assert!(!df.tunnels[1].fragments_outer());
        assert_eq!(plan.tunnels[1].nic, NicId(0));
        // The engine takes it, with the link's MTU as the tunnels' MTU.
        let cfg = plan.engine_config(&[1500], &[1_000_000_000]);
        assert_eq!(cfg.tunnels.len(), 2);
        assert_eq!(cfg.tunnels[0].mtu_bytes, 1500);
        cfg.validate().unwrap();
    }

    #[test]
    fn tunnel_errors_name_the_field() {
        let cases = [
            ("tunnel = \"gre\"", "tunnel = \"ipip\"", "classes[1].tunnel"),
            ("vni = 42", "vni = 16777216", "tunnels[0].vni"),
            ("vni = 42\n", "", "tunnels[0].vni"),
            ("kind = \"gre\"", "kind = \"ipip\"", "vxlan"),
            (
                "nic = \"link0\"\nlocal = \"10.77.0.1\"\nremote = \"10.77.0.2\"\nkey",
                "nic = \"link9\"\nlocal = \"10.77.0.1\"\nremote = \"10.77.0.2\"\nkey",
                "tunnels[1].nic",
            ),
            (
                "inner_dst_mac = \"02:00:00:00:00:0b\"\n",
                "",
                "tunnels[0].inner_dst_mac",
            ),
            (
                "inner_dst_mac = \"02:00:00:00:00:0b\"",
                "inner_dst_mac = \"02:00\"",
                "tunnels[0].inner_dst_mac",
            ),
            (
                "key = 7",
                "key = 7\nvni = 3",
                "tunnels[1].vni: only for kind = \"vxlan\"",
            ),
            (
                "vni = 42",
                "vni = 42\nseq = true",
                "tunnels[0].seq: only for kind = \"gre\"",
            ),
            ("name = \"gre\"", "name = \"vx\"", "tunnels[1].name"),
            (
                "remote = \"10.77.0.2\"\nvni",
                "remote = \"fd00::2\"\nvni",
                "tunnels[0].remote",
            ),
            (
                "remote = \"10.77.0.2\"\nvni",
                "remote = \"nowhere\"\nvni",
                "tunnels[0].remote",
            ),
            ("ttl = 32", "ttl = 0", "tunnels[1].ttl"),
            (
                "src_ports = \"32768-60999\"",
                "src_ports = \"9-1\"",
                "tunnels[0].src_ports",
            ),
            ("key = 7", "key = 7\nflags = 1", "unknown field `flags`"),
        ];
        assert_errors_name(BASE, &cases);
        // GRE sequence numbers need one worker.
        let e = err(&BASE.replacen("mtu = 1400", "mtu = 1400\nqueues = 2", 1));
        assert!(
            e.contains("tunnels[1].seq") && e.contains("vnic.queues"),
            "{e}"
        );
        // Two tunnels on one local endpoint must leave on one NIC.
        let two_nics = BASE.replacen(
            "[[tunnels]]\nname = \"vx\"",
            "[[nics]]\nname = \"link1\"\ndevice = \"veth1\"\nlocal = \"10.77.1.1:7700\"\n\
             peer = \"10.77.1.2:7700\"\ncapacity = \"1gbit\"\n\n[[tunnels]]\nname = \"vx\"",
            1,
        );
        Config::parse(&two_nics).unwrap();
        let e = err(&two_nics.replacen(
            "name = \"gre\"\nkind = \"gre\"\nnic = \"link0\"",
            "name = \"vx2\"\nkind = \"vxlan\"\nnic = \"link1\"\nvni = 5\ninner_dst_mac = \"02:00:00:00:00:0c\"",
            1,
        ).replacen("key = 7\nseq = true\nchecksum = true\n", "", 1));
        assert!(
            e.contains("tunnels[1].nic") && e.contains("same local endpoint"),
            "{e}"
        );
    }
}
