//! The worker's tunnel ports: VXLAN/GRE to peers that are not braid ([`crate::tunnel`],
//! braid-core's `engine::tunnel`).
//!
//! Each turn the worker reads every receiving tunnel port (bounded, as the NICs:
//! `RX_BATCHES_PER_TURN` batches) into `Engine::handle_tunnel_rx` /
//! `handle_tunnel_payload_rx`, and after braid's own packets drains
//! `Engine::poll_tunnel_transmit` into the port of each packet's tunnel and flushes them.
//! What this file owns: the ports of one worker, the tunnel → port map, and their counters
//! in the [`Snapshot`](super::Snapshot). What it does not: the sockets (the ports) or the
//! packets (the engine).

use std::io;

use braid_core::engine::{MAX_TUNNELS, TunnelStats};
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
    /// Outer packets `poll_tunnel_transmit` produced that no port took.
    pub(super) unqueued: u64,
}

impl Default for TunnelPorts {
    fn default() -> Self {
        Self {
            ports: Vec::new(),
            by_tunnel: [u8::MAX; MAX_TUNNELS],
            unqueued: 0,
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

impl Dataplane {
    /// Give the worker its tunnel ports: each sends for its `tunnels` and, if it receives,
    /// is read every turn. The engine must have the tunnels they name.
    ///
    /// # Errors
    /// [`DataplaneError::Poll`] if a port cannot be watched, or if a tunnel id is not below
    /// `MAX_TUNNELS` or named by two ports (as an `InvalidInput` error).
    pub fn with_tunnels(mut self, ports: Vec<TunnelPortEntry>) -> Result<Self, DataplaneError> {
        let mut t = TunnelPorts::default();
        for (i, entry) in ports.iter().enumerate() {
            for &id in &entry.tunnels {
                let slot = t
                    .by_tunnel
                    .get_mut(usize::from(id))
                    .filter(|s| **s == u8::MAX);
                let Some(slot) = slot else {
                    return Err(DataplaneError::Poll(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("tunnel {id} is out of range or has two ports"),
                    )));
                };
                *slot = u8::try_from(i).map_err(|_| {
                    DataplaneError::Poll(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "more than 255 tunnel ports",
                    ))
                })?;
            }
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

    /// Read every receiving tunnel port until it has nothing more (or
    /// `RX_BATCHES_PER_TURN` batches) into the engine, then deliver. Returns `true` if
    /// every port was read dry (as `read_nics`, for the timers).
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
    pub(super) fn drain_tunnel_transmit(&mut self, now: Instant) {
        while let Some(t) = self.engine.poll_tunnel_transmit(now, &mut self.scratch) {
            let port = self
                .tunnels
                .by_tunnel
                .get(usize::from(t.tunnel))
                .and_then(|&i| self.tunnels.ports.get_mut(usize::from(i)));
            let Some(entry) = port else {
                self.tunnels.unqueued += 1;
                continue;
            };
            // Full even after a flush (the socket's buffer is full), too big, not IP: the
            // port counted why; no waiting for room, as tunnel traffic has no pacing to
            // keep.
            if entry.port.queue(&self.scratch[..t.len]).is_err() {
                self.tunnels.unqueued += 1;
            }
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
