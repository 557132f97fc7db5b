//! The worker's tunnel ports: VXLAN/GRE to peers that are not braid ([`crate::tunnel`],
//! braid-core's `engine::tunnel`).
//!
//! Each turn the worker reads every receiving tunnel port (bounded, as the NICs:
//! `RX_BATCHES_PER_TURN` batches) into `Engine::handle_tunnel_rx` /
//! `handle_tunnel_payload_rx`, and after braid's own packets drains
//! `Engine::poll_tunnel_transmit` into the port of each packet's tunnel and flushes them:
//! the fragments of one outer datagram all or none (the port must have room for all of
//! them before the first is queued; a refused datagram counts once).
//! A policy replacement that changes the tunnel table comes with the worker's next set of
//! ports ([`TunnelPortPlan`], through `DataplaneHandle::apply_with_tunnel_ports`): the
//! ports it keeps, by name, and the ones the control thread opened for it (a new kind or
//! local endpoint; opening sockets is the control thread's, off the data path). The worker
//! applies the engine's command and switches ports between two batches, both or neither,
//! then closes the ports no longer used.
//!
//! What this file owns: the ports of one worker, the tunnel → port map, their replacement,
//! and their counters in the [`Snapshot`](super::Snapshot). What it does not: the sockets
//! (the ports), which ports a tunnel table needs (the daemon), or the packets (the engine).

use std::io;

use braid_core::engine::{Command, CommandError, MAX_TUNNELS, TunnelStats};
use braid_core::time::Instant;
use rustix::event::epoll;

use super::{Dataplane, DataplaneError, RX_BATCHES_PER_TURN};
use crate::transport::TransportStats;
use crate::tunnel::{TunnelPort, TunnelRx};

/// Tokens in epoll's user data for the tunnel ports (above the NICs' and the vNIC's).
const TOKEN_TUNNEL: u64 = 2 << 32;

/// A tunnel port as the worker holds it, and the tunnels it sends for.
#[derive(Debug)]
pub struct TunnelPortEntry {
    /// A name for logs and the stats (`vxlan 10.77.0.1:4789`).
    pub name: String,
    /// The port.
    pub port: TunnelPort,
    /// The engine's tunnels (indexes into `EngineConfig::tunnels`) whose outer packets
    /// leave through this port.
    pub tunnels: Vec<u8>,
}

/// One tunnel's counters, as published.
#[derive(Clone, Debug)]
pub struct TunnelSnapshot {
    /// The tunnel (index into `EngineConfig::tunnels`).
    pub id: u8,
    /// Its name.
    pub name: String,
    /// The engine's counters for it.
    pub engine: TunnelStats,
}

/// One tunnel port's counters, as published.
#[derive(Clone, Debug)]
pub struct TunnelPortSnapshot {
    /// Its name.
    pub name: String,
    /// Whether it receives (only worker 0's ports do in the daemon).
    pub receives: bool,
    /// The sockets' counters.
    pub transport: TransportStats,
}

/// The worker's tunnel ports.
#[derive(Debug)]
pub(super) struct TunnelPorts {
    ports: Vec<TunnelPortEntry>,
    /// Port index by tunnel id (`u8::MAX`: none).
    by_tunnel: [u8; MAX_TUNNELS],
    /// Outer packets `poll_tunnel_transmit` produced for a tunnel that has no port here (a
    /// fragmented datagram counts once). A packet a port refuses is not counted here: the
    /// port counts it (its `tx_drop_queue_full` / `tx_drop_too_big`, once per datagram), and
    /// each refusal is counted once.
    pub(super) unqueued: u64,
    /// Fragments of the outer datagram being drained still to come (its first said how
    /// many: `TunnelTransmit::more_fragments`); 0 between datagrams.
    frags_left: u16,
    /// The datagram being drained was refused (no port, no room for all of its fragments,
    /// a fragment refused): its other fragments are dropped, not counted again.
    refusing: bool,
}

impl Default for TunnelPorts {
    fn default() -> Self {
        Self {
            ports: Vec::new(),
            by_tunnel: [u8::MAX; MAX_TUNNELS],
            unqueued: 0,
            frags_left: 0,
            refusing: false,
        }
    }
}

impl TunnelPorts {
    /// Packets the ports have moved (for the busy-poll check).
    pub(super) fn packets_moved(&self) -> u64 {
        self.ports
            .iter()
            .map(|p| {
                let s = p.port.stats();
                s.rx_packets + s.tx_packets
            })
            .sum()
    }

    /// `true` if a port holds packets the kernel has not taken yet.
    pub(super) fn has_backlog(&self) -> bool {
        self.ports.iter().any(|p| p.port.has_backlog())
    }

    /// The ports' counters.
    pub(super) fn snapshot(&self) -> Vec<TunnelPortSnapshot> {
        self.ports
            .iter()
            .map(|p| TunnelPortSnapshot {
                name: p.name.clone(),
                receives: p.port.fd().is_some(),
                transport: p.port.stats(),
            })
            .collect()
    }
}

/// One port of a worker's next set of tunnel ports ([`DataplaneHandle::apply_with_tunnel_ports`]):
/// a port the worker has, by name, or one the caller opened for the new set.
///
/// [`DataplaneHandle::apply_with_tunnel_ports`]: super::DataplaneHandle::apply_with_tunnel_ports
#[derive(Debug)]
pub struct TunnelPortPlan {
    /// The port's name ([`TunnelPortEntry::name`]).
    pub name: String,
    /// `None`: the worker's port of this name, kept open. `Some`: a port opened for the new
    /// set; the worker's port of the same name, if it has one, is closed.
    pub port: Option<TunnelPort>,
    /// The engine's tunnels (indexes into the new tunnel table) that leave through it.
    pub tunnels: Vec<u8>,
}

/// Port index by tunnel id for ports that send for `tunnels` (one list per port, in order).
fn tunnel_map<'a>(tunnels: impl Iterator<Item = &'a Vec<u8>>) -> Result<[u8; MAX_TUNNELS], String> {
    let mut by_tunnel = [u8::MAX; MAX_TUNNELS];
    for (i, ids) in tunnels.enumerate() {
        let i = u8::try_from(i).map_err(|_| "more than 255 tunnel ports".to_owned())?;
        for &id in ids {
            match by_tunnel
                .get_mut(usize::from(id))
                .filter(|s| **s == u8::MAX)
            {
                Some(slot) => *slot = i,
                None => return Err(format!("tunnel {id} is out of range or has two ports")),
            }
        }
    }
    Ok(by_tunnel)
}

/// Check `plans` against the names of the ports a worker has: the port map of the new set.
fn check_plans(plans: &[TunnelPortPlan], have: &[&str]) -> Result<[u8; MAX_TUNNELS], String> {
    for (i, p) in plans.iter().enumerate() {
        if p.port.is_none() && !have.contains(&p.name.as_str()) {
            return Err(format!("no tunnel port {:?} to keep", p.name));
        }
        if plans[..i].iter().any(|o| o.name == p.name) {
            return Err(format!("two tunnel ports are named {:?}", p.name));
        }
    }
    tunnel_map(plans.iter().map(|p| &p.tunnels))
}

impl Dataplane {
    /// Give the worker its tunnel ports: each sends for its `tunnels` and, if it receives,
    /// is read every turn. The engine must have the tunnels they name.
    ///
    /// # Errors
    /// [`DataplaneError::Poll`] if a port cannot be watched, or if a tunnel id is not below
    /// `MAX_TUNNELS` or named by two ports (as an `InvalidInput` error).
    pub fn with_tunnels(mut self, ports: Vec<TunnelPortEntry>) -> Result<Self, DataplaneError> {
        let mut t = TunnelPorts {
            by_tunnel: tunnel_map(ports.iter().map(|e| &e.tunnels)).map_err(|e| {
                DataplaneError::Poll(io::Error::new(io::ErrorKind::InvalidInput, e))
            })?,
            ..TunnelPorts::default()
        };
        for (i, entry) in ports.iter().enumerate() {
            if let Some(fd) = entry.port.fd() {
                epoll::add(
                    &self.epoll,
                    fd,
                    epoll::EventData::new_u64(TOKEN_TUNNEL + i as u64),
                    epoll::EventFlags::IN,
                )
                .map_err(io::Error::from)?;
            }
        }
        t.ports = ports;
        self.tunnels = t;
        Ok(self)
    }

    /// Between batches: apply `cmd` (a policy replacement with a new tunnel table) to the
    /// engine and switch to the ports of `plans`, both or neither. The plans are checked
    /// first (every kept port exists, every tunnel has at most one port), then the engine
    /// applies the command; if either refuses, nothing changes and the ports the plans
    /// opened are closed. Otherwise the new ports are watched, and the worker's ports that
    /// the plans do not keep are flushed (what the kernel takes) and closed.
    ///
    /// # Errors
    /// The engine's refusal, or `InvalidValue("tunnel_ports")` for plans that do not fit the
    /// worker's ports (logged with the reason).
    pub(super) fn replace_tunnel_ports(
        &mut self,
        now: Instant,
        cmd: Command,
        plans: Vec<TunnelPortPlan>,
    ) -> Result<(), CommandError> {
        let have: Vec<&str> = self.tunnels.ports.iter().map(|e| e.name.as_str()).collect();
        let by_tunnel = check_plans(&plans, &have).map_err(|e| {
            tracing::warn!(error = %e, "tunnel ports refused");
            CommandError::InvalidValue("tunnel_ports")
        })?;
        self.engine.apply(now, cmd)?;
        let mut old: Vec<Option<TunnelPortEntry>> = std::mem::take(&mut self.tunnels.ports)
            .into_iter()
            .map(Some)
            .collect();
        let mut ports = Vec::with_capacity(plans.len());
        for (i, plan) in plans.into_iter().enumerate() {
            let port = match plan.port {
                Some(port) => {
                    // The epoll token only wakes the worker, which reads every port each
                    // turn; a port that cannot be watched is still read.
                    if let Some(fd) = port.fd()
                        && let Err(e) = epoll::add(
                            &self.epoll,
                            fd,
                            epoll::EventData::new_u64(TOKEN_TUNNEL + i as u64),
                            epoll::EventFlags::IN,
                        )
                    {
                        tracing::warn!(port = %plan.name, error = %e, "cannot watch tunnel port");
                    }
                    tracing::info!(port = %plan.name, receives = port.fd().is_some(),
                        "tunnel port opened");
                    port
                }
                None => {
                    let kept = old
                        .iter_mut()
                        .find(|e| e.as_ref().is_some_and(|e| e.name == plan.name))
                        .and_then(Option::take)
                        .expect("invariant: check_plans found the port");
                    kept.port
                }
            };
            ports.push(TunnelPortEntry {
                name: plan.name,
                port,
                tunnels: plan.tunnels,
            });
        }
        for mut e in old.into_iter().flatten() {
            if e.port.has_backlog() {
                let _ = e.port.flush();
            }
            if let Some(fd) = e.port.fd() {
                let _ = epoll::delete(&self.epoll, fd);
            }
            tracing::info!(port = %e.name, "tunnel port closed");
        }
        self.tunnels.ports = ports;
        self.tunnels.by_tunnel = by_tunnel;
        // A drain ends between datagrams (the engine hands a datagram's fragments out
        // together), so nothing is half-way here; start clean all the same.
        self.tunnels.frags_left = 0;
        self.tunnels.refusing = false;
        Ok(())
    }

    /// Read every receiving tunnel port until it has nothing more (or
    /// `RX_BATCHES_PER_TURN` batches) into the engine, then deliver. Returns `true` if
    /// every port was read dry (as `read_ports` for the NICs, for the timers).
    pub(super) fn read_tunnels(&mut self, now: Instant) -> bool {
        let mut drained = true;
        let mut any = false;
        for entry in &mut self.tunnels.ports {
            let mut emptied = false;
            for _ in 0..RX_BATCHES_PER_TURN {
                let engine = &mut self.engine;
                // The engine counts every drop by reason.
                let got = entry.port.recv_batch(|rx| match rx {
                    TunnelRx::Outer(packet) => {
                        let _ = engine.handle_tunnel_rx(now, packet);
                    }
                    TunnelRx::Payload(meta, payload) => {
                        let _ = engine.handle_tunnel_payload_rx(now, &meta, payload);
                    }
                });
                match got {
                    Ok(0) => {
                        emptied = true;
                        break;
                    }
                    Ok(_) => any = true,
                    Err(e) => {
                        // Counted by the port (`rx_errors`); logged at the 1st, 2nd, 4th, 8th,
                        // ... error only, so a socket that keeps failing cannot flood the log
                        // (with busy polling it would fail every few microseconds).
                        let errors = entry.port.stats().rx_errors;
                        if errors.is_power_of_two() {
                            tracing::warn!(port = %entry.name, error = %e, errors,
                                "tunnel receive failed");
                        }
                        emptied = true;
                        break;
                    }
                }
            }
            drained &= emptied;
        }
        if any {
            self.drain_deliver(now);
        }
        drained
    }

    /// Hand every encapsulated packet the engine has to its tunnel's port, and flush them.
    ///
    /// The fragments of one outer datagram (GRE with DF clear, braid-core's
    /// `tunnel/fragment.rs`) go all or none: at the first, the port must have room for all of
    /// them ([`TunnelPort::reserve`]: flushed first if need be), else the datagram is dropped
    /// whole and counted once by the port (`tx_drop_queue_full`); a datagram whose fragment
    /// the port refuses loses its later fragments too. The engine hands a datagram's
    /// fragments out one after the other, so one drain has them all.
    ///
    /// [`TunnelPort::reserve`]: crate::tunnel::TunnelPort::reserve
    pub(super) fn drain_tunnel_transmit(&mut self, now: Instant) {
        while let Some(t) = self.engine.poll_tunnel_transmit(now, &mut self.scratch) {
            let ports = &mut self.tunnels;
            let first = ports.frags_left == 0;
            ports.frags_left = t.more_fragments;
            if !first && ports.refusing {
                continue;
            }
            ports.refusing = false;
            let port = ports
                .by_tunnel
                .get(usize::from(t.tunnel))
                .and_then(|&i| ports.ports.get_mut(usize::from(i)));
            let Some(entry) = port else {
                ports.unqueued += 1;
                ports.refusing = true;
                continue;
            };
            // Full even after a flush (the socket's buffer is full), too big, not IP: the
            // port counted why, and that count is the only one (not `unqueued` too); no
            // waiting for room, as tunnel traffic has no pacing to keep.
            let refused = (first
                && t.more_fragments > 0
                && entry
                    .port
                    .reserve(1 + usize::from(t.more_fragments))
                    .is_err())
                || entry.port.queue(&self.scratch[..t.len]).is_err();
            ports.refusing = refused;
        }
        for entry in &mut self.tunnels.ports {
            if entry.port.has_backlog()
                && let Err(e) = entry.port.flush()
            {
                tracing::debug!(port = %entry.name, error = %e, "tunnel send failed");
            }
        }
    }

    /// Every tunnel's engine counters.
    pub(super) fn tunnel_snapshots(&self) -> Vec<TunnelSnapshot> {
        let specs = &self.engine.config().tunnels;
        (0..specs.len().min(MAX_TUNNELS))
            .filter_map(|i| {
                let id = u8::try_from(i).ok()?;
                self.engine.tunnel_stats(id).map(|s| TunnelSnapshot {
                    id,
                    name: specs[i].name.clone(),
                    engine: *s,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan that keeps the worker's port `name` (a new port needs a socket: the daemon's
    /// tests/reload.rs opens them, as root).
    fn kept(name: &str, tunnels: &[u8]) -> TunnelPortPlan {
        TunnelPortPlan {
            name: name.into(),
            port: None,
            tunnels: tunnels.to_vec(),
        }
    }

    /// The port map of a new set: each tunnel to its port's index, the others none.
    #[test]
    fn plans_map_each_tunnel_to_its_port() {
        let plans = [
            kept("gre 10.0.0.1", &[2, 0]),
            kept("vxlan 10.0.0.1:4789", &[1]),
        ];
        let map = check_plans(&plans, &["vxlan 10.0.0.1:4789", "gre 10.0.0.1"]).unwrap();
        assert_eq!(&map[..4], &[0, 1, 0, u8::MAX]);
        assert!(map[3..].iter().all(|&p| p == u8::MAX));
    }

    /// Plans that do not fit the worker's ports are refused, saying why.
    #[test]
    fn plans_that_do_not_fit_are_refused() {
        let have = ["gre 10.0.0.1"];
        let cases: [(&[TunnelPortPlan], &str); 4] = [
            (
                &[kept("vxlan 10.0.0.1:4789", &[0])],
                "no tunnel port \"vxlan 10.0.0.1:4789\" to keep",
            ),
            (
                &[kept("gre 10.0.0.1", &[0]), kept("gre 10.0.0.1", &[1])],
                "two tunnel ports are named \"gre 10.0.0.1\"",
            ),
            (
                &[kept("gre 10.0.0.1", &[0, 0])],
                "tunnel 0 is out of range or has two ports",
            ),
            (
                &[kept("gre 10.0.0.1", &[MAX_TUNNELS as u8])],
                "tunnel 32 is out of range or has two ports",
            ),
        ];
        for (plans, why) in cases {
            assert_eq!(check_plans(plans, &have).unwrap_err(), why);
        }
    }

    /// Root: the fragments of an outer datagram go to the tunnel port all or none. In a
    /// namespace of its own (`braid-fixrun-frag-<pid>`), a veth end with 10.9.0.1/24 whose
    /// peer end stays down: 10.9.0.2 never answers ARP, so the kernel keeps every packet
    /// sent to it in the neighbour's queue, charged to the sending socket, whose buffer (the
    /// smallest the kernel allows) soon refuses more. A GRE tunnel with DF clear and a
    /// 576-byte MTU cuts each of 10 inner packets of 1400 bytes into 3 fragments; the port
    /// queues 4 packets at most. Whatever the kernel took, what the port took (sent and
    /// still queued) is whole datagrams, and each datagram it refused counts once.
    #[test]
    fn a_fragmented_datagram_goes_to_the_port_all_or_none() {
        use std::net::{IpAddr, Ipv4Addr};

        use braid_core::NicId;
        use braid_core::engine::{
            ClassMatch, ClassPolicy, Engine, EngineConfig, FlowClass, NicSpec, TunnelSpec,
            TxVerdict,
        };
        use braid_core::rss::{Rss, ToeplitzKey};
        use braid_wire::tunnel::{Encap, GreEncap, InnerFormat, OuterIp};

        use crate::dataplane::{DataplaneConfig, now};
        use crate::pipe::PipePort;
        use crate::sys::netns::NetNs;
        use crate::transport::NicTransport;
        use crate::tunnel::{TunnelKind, TunnelPortConfig};

        assert!(
            rustix::process::geteuid().is_root(),
            "needs root: a network namespace, a veth pair and a raw socket"
        );
        let name = format!("braid-fixrun-frag-{}", std::process::id());
        let ns = NetNs::create(&name).expect("netns");
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(["-n", &name])
                .args(args)
                .output()
                .expect("run ip (iproute2)");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        ip(&["link", "add", "fa", "type", "veth", "peer", "name", "fb"]);
        ip(&["addr", "add", "10.9.0.1/24", "dev", "fa"]);
        ip(&["link", "set", "fa", "up"]);

        let local = Ipv4Addr::new(10, 9, 0, 1);
        let mut t = TunnelSpec::new(
            "t0",
            NicId(0),
            Encap::Gre(GreEncap::new(
                OuterIp::V4 {
                    src: local,
                    dst: Ipv4Addr::new(10, 9, 0, 2),
                },
                InnerFormat::Ip,
            )),
        );
        t.mtu_bytes = 576;
        let mut cfg =
            EngineConfig::new(vec![NicSpec::udp_ipv4(NicId(0), "n0", 1_000_000_000, 1500)]);
        cfg.tunnels = vec![t];
        let mut class = FlowClass::new(
            "to-t0",
            ClassMatch {
                protocol: Some(17),
                src_ports: Some((40_000, 40_000)),
                ..ClassMatch::default()
            },
            ClassPolicy::Pin,
        );
        class.tunnel = Some(0);
        cfg.classes.push(class);
        let engine = Engine::new(cfg, now()).expect("engine");
        let port = ns.run(|| {
            let mut c = TunnelPortConfig::new(TunnelKind::Gre, IpAddr::V4(local), None);
            c.receive = false;
            c.batch = 4;
            c.socket_buffer_bytes = 1;
            TunnelPort::open(c).expect("open the tunnel port")
        });
        let (vnic, _app) = PipePort::pair(9000, 4096).expect("pair");
        let mut dp = Dataplane::new(
            engine,
            Vec::new(),
            vec![Box::new(vnic) as Box<dyn NicTransport>],
            Rss::new(ToeplitzKey::MICROSOFT, 1).expect("rss"),
            DataplaneConfig::default(),
        )
        .expect("dataplane")
        .with_tunnels(vec![TunnelPortEntry {
            name: "gre 10.9.0.1".into(),
            port,
            tunnels: vec![0],
        }])
        .expect("tunnel ports");
        let t = now();
        let datagrams = 10;
        for i in 0..datagrams {
            let mut p = vec![0u8; 1400];
            p[28..].fill(i);
            braid_wire::ip::emit_udp_ipv4(
                &mut p,
                Ipv4Addr::new(10, 99, 0, 1),
                Ipv4Addr::new(10, 99, 0, 2),
                40_000,
                9,
                0,
            )
            .expect("emit");
            assert_eq!(dp.engine.handle_tx(t, &p), TxVerdict::Queued);
        }
        assert_eq!(dp.engine.tunnel_tx_queued(), 3 * usize::from(datagrams));
        dp.drain_tunnel_transmit(t);
        assert_eq!(dp.engine.tunnel_tx_queued(), 0);
        let port = &dp.tunnels.ports[0].port;
        let st = port.stats();
        let taken = st.tx_packets + port.queued() as u64;
        let refused = st.tx_drop_queue_full;
        assert_eq!((st.tx_errors, st.tx_drop_too_big), (0, 0), "{st:?}");
        assert!(
            refused > 0 && st.tx_packets > 0,
            "the kernel took some, then refused: {st:?}"
        );
        assert_eq!(
            taken,
            3 * (u64::from(datagrams) - refused),
            "whole datagrams taken, one drop per datagram refused: {st:?}, {} queued",
            port.queued()
        );
        drop(dp);
        drop(ns);
    }
}
