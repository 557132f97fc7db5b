//! `braid run --config braid.toml`: the daemon.
//!
//! It reads the config (one schema, errors name the field), reads the pre-shared key from its
//! file (permissions checked), creates the vNIC (TUN, multi-queue, configured by netlink),
//! opens one transport per NIC, builds the engine and runs it on a data-path worker thread
//! (pinned to a core when there is more than one). The main thread waits for SIGINT/SIGTERM,
//! writes the stats file every second, and on a signal stops the worker, closes every socket
//! and removes the vNIC before it exits.
//!
//! A NIC whose device is missing at start, or disappears later, does not stop the daemon: its
//! transport stays closed, link health marks it down (the flows move to the other NICs), and
//! the worker retries it every second; when the device is back, the NIC is used again.
//!
//! VXLAN/GRE tunnels (`[[tunnels]]`) get braid-io tunnel ports, one per kind and local
//! endpoint: every worker has its own sending sockets (a tunnelled flow may land on any vNIC
//! queue), and worker 0 alone has the receiving ones (a UDP port is bound once, and two raw
//! GRE sockets would each get every packet), so received tunnel traffic reaches the vNIC
//! through worker 0's queue. Unlike a NIC's, a tunnel port that cannot be opened stops the
//! daemon (it needs `CAP_NET_RAW` and the local address on the NIC's device).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use braid_core::auth::{AuthConfig, Role};
use braid_core::engine::{Command, CommandError, RuleTable};
use braid_core::qos::QosConfig;
use braid_core::rss::{Rss, ToeplitzKey};
use braid_io::dataplane::{Dataplane, DataplaneConfig, NicPort, Snapshot};
use braid_io::transport::NicTransport;
use serde_json::json;

use crate::config::{Capacity, Config, Endpoint, NicPlan, Plan, ReceiveMode, RoleName};

/// Capacity assumed for `capacity = "auto"` when the device reports no speed.
const AUTO_FALLBACK_BPS: u64 = 1_000_000_000;

/// Run the daemon until SIGINT or SIGTERM.
pub(crate) fn run(config_path: &Path) -> Result<()> {
    let plan = Config::load(config_path)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install the SIGINT/SIGTERM handler")?;
    }

    if plan.file.vnic.kind == crate::config::VnicKindName::Tap {
        // braid-io creates TAP devices (tested), but the engine classifies IP packets only:
        // Ethernet frames (ARP among them) need an L2 flow key first.
        bail!(
            "vnic.kind = \"tap\": the daemon carries IP packets only for now; use \"tun\" \
             (TAP needs the engine to classify Ethernet frames, ARP included)"
        );
    }
    let psk = match &plan.file.peer.key_file {
        Some(path) => Some(
            braid_io::keyfile::read_key_file(path)
                .with_context(|| format!("peer.key_file: {}", path.display()))?,
        ),
        None => {
            tracing::warn!("peer.key_file is not set: braid packets are not authenticated");
            None
        }
    };

    let mut vnic = braid_io::vnic::Vnic::create(&vnic_config(&plan)?)
        .with_context(|| format!("vnic: cannot create {}", plan.file.vnic.name))?;
    tracing::info!(
        name = %plan.file.vnic.name,
        queues = plan.file.vnic.queues,
        mtu = plan.file.vnic.mtu,
        offload = ?vnic.offload_state(),
        "vNIC up"
    );

    // One worker per vNIC queue (crates/braid-io/src/dataplane/steer.rs): worker k owns
    // queue k, its own engine and its own socket on every NIC (port base + k at both ends).
    let workers = usize::from(plan.file.vnic.queues);
    let mut link_mtu = Vec::new();
    let mut capacity = Vec::new();
    for n in &plan.nics {
        let mtu = match n.mtu {
            Some(m) => m,
            None => braid_io::netlink::link_mtu(&n.device).unwrap_or_else(|e| {
                tracing::warn!(nic = %n.name, error = %e, "cannot read the device's MTU; assuming 1500");
                1500
            }),
        };
        let bps = match n.capacity {
            Capacity::Bps(b) => b,
            Capacity::Auto => estimate_capacity(&n.device),
        };
        tracing::info!(nic = %n.name, device = %n.device, mtu, capacity_bps = bps, "NIC");
        link_mtu.push(mtu);
        capacity.push(bps);
    }
    // The workers share each link: each engine starts with an equal part of its capacity
    // (then `CapacityShares` below moves it to where it is used).
    let share: Vec<u64> = capacity
        .iter()
        .map(|b| (b / workers as u64).max(1))
        .collect();

    let rss = vnic.rss().clone();
    let receive = plan.file.daemon.receive;
    let mut steering = if workers > 1 {
        let buf_bytes = usize::try_from(plan.file.vnic.mtu).unwrap_or(usize::MAX);
        // `per-nic` receive: lanes for received braid packets too, each at most a link MTU.
        let rx_bytes = (receive == ReceiveMode::PerNic)
            .then(|| link_mtu.iter().max().map_or(1500, |m| *m as usize));
        braid_io::dataplane::Steering::build(workers, buf_bytes, rx_bytes)
            .context("vnic.queues: cannot set up the workers' channel")?
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None]
    };
    let mut dataplanes = Vec::new();
    for (k, queue) in vnic.take_queues().into_iter().enumerate() {
        let mut ports = Vec::new();
        for (n, mtu) in plan.nics.iter().zip(&link_mtu) {
            ports.push(NicPort {
                id: n.id,
                name: n.name.clone(),
                transport: open_transport(n, *mtu, k, workers, receive)?,
            });
        }
        let engine = build_engine(&plan, psk.as_ref(), k, &link_mtu, &share)?;
        let dp = Dataplane::new(
            engine,
            ports,
            vec![Box::new(queue) as Box<dyn NicTransport>],
            rss.clone(),
            DataplaneConfig {
                busy_poll: Duration::from_micros(u64::from(plan.file.daemon.busy_poll_us)),
                ..DataplaneConfig::default()
            },
        )
        .context("cannot start the data path")?
        .with_tunnels(tunnel_ports(&plan, &link_mtu, k == 0)?)
        .context("cannot start the data path")?;
        let dp = match steering.get_mut(k).and_then(Option::take) {
            Some(st) => dp.with_steering(st).context("cannot start the data path")?,
            None => dp,
        };
        dataplanes.push(dp);
    }
    braid_io::dataplane::link_workers(&mut dataplanes);
    let handles: Vec<_> = dataplanes.iter().map(Dataplane::handle).collect();
    let cpu = plan.file.daemon.cpu;
    let realtime = plan.file.daemon.realtime_priority;
    let mut threads = Vec::new();
    for (k, dp) in dataplanes.into_iter().enumerate() {
        let t = std::thread::Builder::new()
            .name(format!("braid-dp{k}"))
            .spawn(move || {
                // Worker k on core `daemon.cpu` + k, wrapping around the machine's cores.
                let cores = std::thread::available_parallelism().map_or(1, usize::from);
                pin_worker(cpu.map(|c| (c + k) % cores.max(c + 1)));
                if let Some(p) = realtime {
                    // A worker that cannot get the priority asked for stops the daemon
                    // (the main loop sees the thread end) rather than run without it.
                    braid_io::sched::set_realtime_priority(p).map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!(
                                "daemon.realtime_priority = {p}: cannot put worker {k} in \
                                 SCHED_FIFO ({e}; needs root or CAP_SYS_NICE)"
                            ),
                        )
                    })?;
                    tracing::info!(priority = p, "data-path thread in SCHED_FIFO");
                }
                dp.run()
            })
            .context("cannot start a data-path thread")?;
        threads.push(t);
    }
    tracing::info!(
        workers,
        "running; SIGINT or SIGTERM stops braid and removes {}",
        plan.file.vnic.name
    );

    let stats_file = plan.file.daemon.stats_file.clone();
    let snapshots = || -> Option<Vec<Snapshot>> { handles.iter().map(|h| h.snapshot()).collect() };
    // Several workers share each link: move each link's capacity to the workers that use
    // it (crates/braid-io/src/dataplane/share.rs). `auto` NICs are left to each worker's
    // estimator.
    let mut shares = braid_io::dataplane::CapacityShares::new(
        plan.nics
            .iter()
            .zip(&capacity)
            .map(|(n, c)| braid_io::dataplane::SharedNic {
                capacity_bps: (!matches!(n.capacity, Capacity::Auto)).then_some(*c),
                wire_overhead_bytes: n.wire_overhead(),
            })
            .collect(),
        workers,
    );
    let mut last_write = std::time::Instant::now();
    while !stop.load(Ordering::Acquire) && !threads.iter().any(|t| t.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if workers > 1
            && let Some(snaps) = snapshots()
        {
            for change in shares.update(&snaps) {
                match handles[change.worker].apply_quiet(change.command.clone()) {
                    Some(Ok(())) => {}
                    answer => {
                        tracing::warn!(worker = change.worker, command = ?change.command,
                            answer = ?answer, "capacity share not applied; resent next round");
                        shares.refused(&change);
                    }
                }
            }
        }
        if last_write.elapsed() >= Duration::from_secs(1) {
            last_write = std::time::Instant::now();
            if let (Some(path), Some(snaps)) = (&stats_file, snapshots()) {
                write_stats(path, &snaps);
            }
        }
    }
    tracing::info!("stopping");
    for h in &handles {
        h.stop();
    }
    let mut stopped = Vec::new();
    let mut failure = None;
    for t in threads {
        match t.join() {
            Ok(Ok(s)) => stopped.push(s),
            Ok(Err(e)) => failure = Some(anyhow::Error::from(e).context("the data path failed")),
            Err(_) => failure = Some(anyhow::anyhow!("a data-path thread panicked")),
        }
    }
    if let (Some(path), Some(snaps)) = (&stats_file, snapshots()) {
        write_stats(path, &snaps);
    }
    // The workers gave the queues back; dropping the last one removes the device.
    drop(stopped);
    drop(vnic);
    if let Some(e) = failure {
        return Err(e);
    }
    tracing::info!(
        "stopped; sockets closed and {} removed",
        plan.file.vnic.name
    );
    Ok(())
}

/// Replace the QoS configuration of every worker's engine with `qos`
/// ([`Command::SetQos`], which each engine applies between batches, whole or not at all),
/// through `apply` (in the daemon [`braid_io::dataplane::DataplaneHandle::apply`]). The
/// engines share one configuration, so they accept or refuse alike; should one refuse or not
/// answer after others took it, those are put back to `previous` (the set in force), so the
/// workers do not stay on different sets.
///
/// # Errors
/// The first worker that refused (the engine's reason, naming the field) or did not answer.
pub(crate) fn apply_qos<W>(
    workers: &[W],
    apply: impl Fn(&W, Command) -> Option<Result<(), CommandError>>,
    qos: &QosConfig,
    previous: &QosConfig,
) -> Result<()> {
    for (k, w) in workers.iter().enumerate() {
        let failure = match apply(w, Command::SetQos(qos.clone())) {
            Some(Ok(())) => continue,
            Some(Err(e)) => anyhow::anyhow!("worker {k} refused the qos configuration: {e}"),
            None => anyhow::anyhow!("worker {k} did not answer (stopped or stuck)"),
        };
        for (j, done) in workers[..k].iter().enumerate() {
            if !matches!(apply(done, Command::SetQos(previous.clone())), Some(Ok(()))) {
                tracing::error!(worker = j, "cannot put the previous qos configuration back");
            }
        }
        return Err(failure);
    }
    tracing::info!(
        workers = workers.len(),
        classes = qos.classes.len(),
        "qos replaced"
    );
    Ok(())
}

/// Replace the rule sets of every worker's engine with `new`'s `[[rules]]`
/// ([`Command::ReplaceRules`]): both tables are built and validated once, here, off the data
/// path (conflicts and shadowed rules named against the file), and each worker swaps them
/// in between two batches, whole or not at all. The engines share one configuration, so
/// they accept or refuse alike; should one refuse or not answer after others took the new
/// tables, those are put back to `previous`'s, so the workers do not stay on different sets.
///
/// # Errors
/// The tables do not build, or the first worker that refused (the engine's reason) or did
/// not answer.
pub(crate) fn apply_rules<W>(
    workers: &[W],
    apply: impl Fn(&W, Command) -> Option<Result<(), CommandError>>,
    new: &Plan,
    previous: &Plan,
) -> Result<()> {
    let (tx, rx) = crate::config::build_rule_tables(new)?;
    let command = |tx: &RuleTable, rx: &RuleTable| Command::ReplaceRules {
        tx: Box::new(tx.clone()),
        rx: Box::new(rx.clone()),
    };
    for (k, w) in workers.iter().enumerate() {
        let failure = match apply(w, command(&tx, &rx)) {
            Some(Ok(())) => continue,
            Some(Err(e)) => anyhow::anyhow!("worker {k} refused the rules: {e}"),
            None => anyhow::anyhow!("worker {k} did not answer (stopped or stuck)"),
        };
        if k > 0 {
            // Built only now: a large set of one priority takes a while to validate.
            let (old_tx, old_rx) = crate::config::build_rule_tables(previous)?;
            for (j, done) in workers[..k].iter().enumerate() {
                if !matches!(apply(done, command(&old_tx, &old_rx)), Some(Ok(()))) {
                    tracing::error!(worker = j, "cannot put the previous rules back");
                }
            }
        }
        return Err(failure);
    }
    tracing::info!(
        workers = workers.len(),
        tx_rules = new.rules.tx.len(),
        rx_rules = new.rules.rx.len(),
        "rules replaced"
    );
    Ok(())
}

/// Apply a new configuration's policies to the running workers as a whole, ready for the
/// REST API: `[qos]` first (a rule may name a class the new `[qos]` adds), then `[[rules]]`,
/// each on every worker or on none ([`apply_qos`], [`apply_rules`]); should the rules be
/// refused, the QoS configuration is put back too, so the workers keep the previous policies
/// whole. The rest of the file (NICs, vNIC, peer, classes, tunnels, reorder, daemon) is not
/// replaced at run time: a change there is refused, naming the section, before anything is
/// applied (a restart applies it).
///
/// # Errors
/// A section that cannot change at run time, or the refusal of [`apply_qos`] or
/// [`apply_rules`].
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "the REST API (issue 5) replaces policies through it"
    )
)]
pub(crate) fn apply_policies<W>(
    workers: &[W],
    apply: impl Fn(&W, Command) -> Option<Result<(), CommandError>>,
    new: &Plan,
    previous: &Plan,
) -> Result<()> {
    let (n, p) = (&new.file, &previous.file);
    let fixed = [
        ("vnic", n.vnic == p.vnic),
        ("peer", n.peer == p.peer),
        ("nics", n.nics == p.nics),
        ("classes", new.classes == previous.classes),
        ("tunnels", n.tunnels == p.tunnels),
        ("policy", n.policy == p.policy),
        ("reorder", n.reorder == p.reorder),
        ("daemon", n.daemon == p.daemon),
    ];
    if let Some((section, _)) = fixed.iter().find(|(_, same)| !same) {
        bail!(
            "{section}: changed, and only [qos] and [[rules]] are replaced at run time \
             (restart braid to apply the rest)"
        );
    }
    let qos_changed = new.qos != previous.qos;
    if qos_changed {
        apply_qos(workers, &apply, &new.qos, &previous.qos)?;
    }
    if let Err(e) = apply_rules(workers, &apply, new, previous) {
        if qos_changed && let Err(back) = apply_qos(workers, &apply, &previous.qos, &new.qos) {
            tracing::error!(error = %back, "cannot put the previous qos configuration back");
        }
        return Err(e);
    }
    Ok(())
}

/// Open NIC `n`'s transport for worker `worker` of `workers` (UDP: local port base +
/// worker). It sends to the peer's worker that reads this NIC for `worker`'s session: the
/// same worker, or with `per-nic` receive the NIC's reader (NIC i: worker i mod `workers`),
/// whose own socket then accepts every peer worker's port.
fn open_transport(
    n: &NicPlan,
    mtu: u32,
    worker: usize,
    workers: usize,
    receive: ReceiveMode,
) -> Result<Box<dyn NicTransport>> {
    let reader = receive.reader(usize::from(n.id.0), worker, workers);
    let transport: Box<dyn NicTransport> = match &n.endpoint {
        Endpoint::Udp { local, peer } => {
            let offset = |k: usize| u16::try_from(k).context("too many workers");
            let at_offset = |a: &std::net::SocketAddr, k: u16| {
                let mut a = *a;
                a.set_port(a.port() + k);
                a
            };
            let mut cfg = braid_io::udp::UdpConfig::new(
                at_offset(local, offset(worker)?),
                at_offset(peer, offset(reader)?),
                (mtu - n.transport_overhead()) as usize,
            );
            if receive == ReceiveMode::PerNic && reader == worker && workers > 1 {
                // config.rs checked that base + vnic.queues - 1 is a port.
                let last = peer.port() + offset(workers - 1)?;
                cfg.peer_ports = Some(peer.port()..=last);
            }
            cfg.device = Some(n.device.clone());
            cfg.gso = n.gso;
            cfg.gro = n.gro;
            Box::new(
                braid_io::udp::UdpTransport::open(cfg)
                    .with_context(|| format!("nics[{}] ({}): cannot open", n.id.0, n.name))?,
            )
        }
        Endpoint::Ethernet { peer_mac } => {
            // Every AF_PACKET socket bound to one EtherType on a device sees every frame of
            // that type, so each worker has an EtherType of its own, as each has a UDP port:
            // worker 0 braid's (0x88B5), worker 1 the other local experimental one (0x88B6).
            // config.rs refuses more than two workers with this transport.
            let ethertype = |k: usize| match k {
                0 => Ok(braid_io::packet::BRAID_ETHERTYPE),
                1 => Ok(braid_io::packet::BRAID_ETHERTYPE_ALT),
                _ => Err(anyhow::anyhow!(
                    "nics[{}].transport: \"ethernet\" carries two workers at most \
                     (vnic.queues <= 2)",
                    n.id.0
                )),
            };
            // The braid packet is the whole Ethernet payload: transport_overhead is 0 and
            // the 14-byte header counts in wire_overhead (pacing) only.
            let mut cfg = braid_io::packet::PacketConfig::new(
                n.device.clone(),
                *peer_mac,
                (mtu - n.transport_overhead()) as usize,
            );
            // Received on the worker's own EtherType; sent to the reader's.
            cfg.ethertype = ethertype(worker)?;
            cfg.tx_ethertype = Some(ethertype(reader)?);
            Box::new(
                braid_io::packet::PacketTransport::open(cfg)
                    .with_context(|| format!("nics[{}] ({}): cannot open", n.id.0, n.name))?,
            )
        }
    };
    Ok(transport)
}

/// The tunnel ports of one worker: one per kind and local endpoint of `[[tunnels]]`, bound
/// to the NIC's device, sending for every tunnel of that endpoint; `receive` for worker 0.
fn tunnel_ports(
    plan: &Plan,
    link_mtu: &[u32],
    receive: bool,
) -> Result<Vec<braid_io::dataplane::TunnelPortEntry>> {
    use braid_io::tunnel::{TunnelKind, TunnelPort, TunnelPortConfig};
    use braid_wire::tunnel::Encap;
    let mut entries: Vec<(TunnelPortConfig, braid_io::dataplane::TunnelPortEntry)> = Vec::new();
    for (id, t) in plan.tunnels.iter().enumerate() {
        let nic = &plan.nics[usize::from(t.nic.0)];
        let mtu = link_mtu[usize::from(t.nic.0)];
        let overhead = t.encap.overhead();
        if receive && plan.file.vnic.mtu as usize + overhead > mtu as usize {
            tracing::warn!(
                tunnel = %t.name, vnic_mtu = plan.file.vnic.mtu, overhead, nic_mtu = mtu,
                "vnic.mtu plus the tunnel's overhead exceeds the NIC's MTU: larger packets of                  the tunnel's flows are dropped (tunnel_too_big)"
            );
        }
        let kind = match &t.encap {
            Encap::Vxlan(v) => TunnelKind::Vxlan { port: v.dst_port },
            Encap::Gre(_) => TunnelKind::Gre,
        };
        let (local, _) = t.endpoints();
        let id = u8::try_from(id).expect("invariant: at most MAX_TUNNELS tunnels");
        if let Some((_, e)) = entries
            .iter_mut()
            .find(|(c, _)| c.kind == kind && c.local == local)
        {
            e.tunnels.push(id);
            continue;
        }
        let mut cfg = TunnelPortConfig::new(kind, local, Some(nic.device.clone()));
        cfg.receive = receive;
        cfg.max_tx_bytes = mtu as usize;
        cfg.max_rx_bytes = cfg.max_rx_bytes.max(plan.file.vnic.mtu as usize + 256);
        let name = match kind {
            TunnelKind::Vxlan { port } => {
                format!("vxlan {}", std::net::SocketAddr::new(local, port))
            }
            TunnelKind::Gre => format!("gre {local}"),
        };
        let port = TunnelPort::open(cfg.clone())
            .with_context(|| format!("tunnels[{id}] ({}): cannot open {name}", t.name))?;
        entries.push((
            cfg,
            braid_io::dataplane::TunnelPortEntry {
                name,
                port,
                tunnels: vec![id],
            },
        ));
    }
    Ok(entries.into_iter().map(|(_, e)| e).collect())
}

/// The engine of worker `worker`: its share of each link's capacity, and its own key,
/// derived from the pre-shared key and the worker's index, so no two workers ever use one
/// AEAD key with overlapping nonces (each counts its packets from the same wall-clock start).
fn build_engine(
    plan: &Plan,
    psk: Option<&[u8; 32]>,
    worker: usize,
    link_mtu: &[u32],
    capacity: &[u64],
) -> Result<braid_core::engine::Engine> {
    let mut engine_cfg = plan.engine_config(link_mtu, capacity);
    engine_cfg.seed = random_seed();
    // The worker's lane goes in every packet it sends: with `per-nic` receive, the peer's
    // NIC readers hand packets over by it (config.rs keeps the workers within 16 lanes
    // then; otherwise two workers on one lane are on different ports anyway).
    engine_cfg.lane = u8::try_from(worker % usize::from(braid_wire::BRAID_MAX_LANES))
        .expect("invariant: below 16");
    if let Some(psk) = psk {
        let role = match plan.file.peer.role {
            RoleName::A => Role::A,
            RoleName::B => Role::B,
        };
        let mut auth = AuthConfig::new(worker_key(psk, worker), role);
        // Wall-clock nanoseconds: a restarted daemon starts above every counter it sent
        // before, so the peer's replay window accepts it and no AEAD nonce is reused.
        auth.counter_start = braid_io::crypto::wall_clock_counter_start()?;
        engine_cfg.auth = Some(auth);
    }
    if plan.file.peer.encrypt() && engine_cfg.auth.is_none() {
        bail!("peer.encrypt: needs peer.key_file (the key the AEAD keys are derived from)");
    }
    // MAC-only: AES-GMAC (1.55× keyed BLAKE3's throughput at 1400 bytes here); with
    // `encrypt`: AES-256-GCM, faster still (docs/benchmarks.md).
    // Without a key: no protection at all (`Engine::new` with `auth` unset).
    let protection = if engine_cfg.auth.is_none() {
        braid_io::crypto::Protection::Blake3Mac
    } else if plan.file.peer.encrypt() {
        braid_io::crypto::Protection::Aead(braid_io::crypto::Cipher::Aes256Gcm)
    } else {
        braid_io::crypto::Protection::AesGmac
    };
    braid_io::crypto::build_engine_with(engine_cfg, braid_io::dataplane::now(), protection)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the engine refused the configuration")
}

/// Worker `worker`'s key: BLAKE3 in key-derivation mode over the pre-shared key and the
/// worker's index (both peers derive the same key for the same worker).
fn worker_key(psk: &[u8; 32], worker: usize) -> [u8; 32] {
    let mut material = [0u8; 40];
    material[..32].copy_from_slice(psk);
    material[32..].copy_from_slice(&(worker as u64).to_le_bytes());
    blake3::derive_key("braid 2026-11 worker key", &material)
}

fn vnic_config(plan: &Plan) -> Result<braid_io::vnic::VnicConfig> {
    let v = &plan.file.vnic;
    let kind = match v.kind {
        crate::config::VnicKindName::Tun => braid_io::vnic::VnicKind::Tun,
        crate::config::VnicKindName::Tap => braid_io::vnic::VnicKind::Tap,
    };
    let mut cfg = braid_io::vnic::VnicConfig::new(v.name.clone(), kind, usize::from(v.queues))
        .map_err(|e| anyhow::anyhow!("vnic: {e}"))?;
    cfg.mtu = v.mtu;
    cfg.addresses.clone_from(&plan.vnic_addresses);
    cfg.offload = v.offload;
    cfg.rss = rss(plan)?;
    Ok(cfg)
}

fn rss(plan: &Plan) -> Result<Rss> {
    let key = plan
        .rss_key
        .map_or(ToeplitzKey::MICROSOFT, ToeplitzKey::new);
    let mut rss =
        Rss::new(key, plan.file.vnic.queues).map_err(|e| anyhow::anyhow!("vnic.rss: {e}"))?;
    if let Some(table) = plan
        .file
        .vnic
        .rss
        .as_ref()
        .and_then(|r| r.indirection.as_ref())
    {
        rss.set_indirection(table)
            .map_err(|e| anyhow::anyhow!("vnic.rss.indirection: {e}"))?;
    }
    Ok(rss)
}

/// The initial guess of an `auto` capacity: the device's speed from sysfs (what ethtool
/// reports), else 1 Gbit/s. The engine then measures the link (`capacity_auto`): the estimate
/// moves by at most ×2 or ÷2 per 100 ms round, so a guess off by 100× (a veth reports
/// 10 Gbit/s) costs under a second.
fn estimate_capacity(device: &str) -> u64 {
    let path = PathBuf::from(format!("/sys/class/net/{device}/speed"));
    let mbit = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|m| *m > 0);
    let bps = mbit.map_or(AUTO_FALLBACK_BPS, |m| m.unsigned_abs() * 1_000_000);
    tracing::info!(
        device,
        initial_bps = bps,
        "capacity = auto: estimated from the measured delivery rate, starting here"
    );
    bps
}

/// 64 random bits from the kernel, for the engine's hash seeds and first flow id.
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    u64::from_ne_bytes(b) ^ braid_io::dataplane::now().as_nanos()
}

/// Pin the data-path thread to `daemon.cpu` if the config names one. Without it the thread
/// is left to the scheduler: on a small machine shared with the applications (or with a
/// second braid, as in the testbed) a fixed core is as likely to be the busy one.
fn pin_worker(cpu: Option<usize>) {
    let Some(cpu) = cpu else { return };
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    match rustix::thread::sched_setaffinity(None, &set) {
        Ok(()) => tracing::info!(cpu, "data-path thread pinned"),
        Err(e) => tracing::warn!(cpu, error = %e, "cannot pin the data-path thread"),
    }
}

/// Write the workers' snapshots as JSON, atomically (a temporary file renamed over the old
/// one): [`stats_json`] of one worker, or with several the totals ([`merge_json`]) plus each
/// worker's own under `"workers"`.
fn write_stats(path: &Path, snaps: &[Snapshot]) {
    let value = match snaps {
        [one] => stats_json(one),
        many => {
            let each: Vec<_> = many.iter().map(stats_json).collect();
            let mut total = each.iter().skip(1).fold(each[0].clone(), merge_json);
            if let Some(map) = total.as_object_mut() {
                map.insert("workers".into(), serde_json::Value::Array(each));
            }
            total
        }
    };
    let tmp = path.with_extension("json.tmp");
    let result = std::fs::write(&tmp, value.to_string()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the stats file");
    }
}

/// Add two workers' stats: counters are summed; a link's delay and loss (each worker
/// measures the same link) and the time take the larger; ids, names and states the first;
/// `open` is true only if it is for both.
pub(crate) fn merge_json(a: serde_json::Value, b: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    const LARGEST: [&str; 4] = ["at_ns", "srtt_us", "owd_us", "loss"];
    match (a, b) {
        (Value::Object(mut a), Value::Object(b)) => {
            for (k, vb) in b {
                let merged = match a.remove(k) {
                    Some(va) if LARGEST.contains(&k.as_str()) => {
                        if va.as_f64() >= vb.as_f64() {
                            va
                        } else {
                            vb.clone()
                        }
                    }
                    Some(va) if k == "id" || k == "worker" => va,
                    Some(va) => merge_json(va, vb),
                    None => vb.clone(),
                };
                a.insert(k.clone(), merged);
            }
            Value::Object(a)
        }
        (Value::Array(a), Value::Array(b)) => Value::Array(
            a.into_iter()
                .zip(b.iter().map(Some).chain(std::iter::repeat(None)))
                .map(|(va, vb)| match vb {
                    Some(vb) => merge_json(va, vb),
                    None => va,
                })
                .collect(),
        ),
        (Value::Number(x), Value::Number(y)) => match (x.as_u64(), y.as_u64()) {
            (Some(x), Some(y)) => json!(x.saturating_add(y)),
            _ => json!(x.as_f64().unwrap_or(0.0) + y.as_f64().unwrap_or(0.0)),
        },
        (Value::Bool(x), Value::Bool(y)) => Value::Bool(x && *y),
        (a, _) => a,
    }
}

/// The snapshot as JSON (the stats file; the REST API will serve the same shape).
pub(crate) fn stats_json(s: &Snapshot) -> serde_json::Value {
    let e = &s.engine;
    let nics: Vec<_> = s
        .nics
        .iter()
        .map(|n| {
            let link = n.link.map(|l| {
                json!({
                    "state": format!("{:?}", l.state),
                    "srtt_us": l.srtt.as_micros() as u64,
                    "owd_us": l.owd.as_micros() as u64,
                    "loss": l.loss,
                    "probes_sent": l.probes_sent,
                    "probes_lost": l.probes_lost,
                    "down_events": l.down_events,
                })
            });
            json!({
                "id": n.id.0,
                "name": n.name,
                "open": n.open,
                "link": link,
                "tx_packets": n.engine.tx_packets_count,
                "tx_bytes": n.engine.tx_bytes_count,
                "rx_packets": n.engine.rx_packets_count,
                "rx_bytes": n.engine.rx_bytes_count,
                "rx_first": n.engine.rx_first_count,
                // Configured, or the estimate of an `auto` NIC; the pacing rate adds the
                // estimator's probing gain.
                "capacity_bps": n.engine.capacity_bps,
                "pacing_bps": n.engine.pacing_bps,
                "transport": transport_json(&n.transport, &n.extra),
            })
        })
        .collect();
    let drops: serde_json::Map<_, _> = s
        .drops
        .iter()
        .filter(|(_, c)| *c > 0)
        .map(|(l, c)| ((*l).to_string(), json!(c)))
        .collect();
    json!({
        "at_ns": s.at.as_nanos(),
        "tx_packets": e.tx_packets_count,
        "tx_bytes": e.tx_bytes_count,
        "tx_whole": e.tx_whole_count,
        "tx_split": e.tx_split_count,
        "tx_duplicate": e.tx_duplicate_count,
        "rx_delivered": e.rx_delivered_count,
        "rx_delivered_bytes": e.rx_delivered_bytes,
        "rx_gap_seqs": e.rx_gap_seqs_count,
        "rx_reordered": e.rx_reordered_count,
        "reassembled": s.reassembly.datagrams_completed,
        "reassembly_dropped": s.reassembly.datagrams_dropped,
        "flows": { "tx": s.flows.0, "rx": s.flows.1 },
        "tx_unqueued": s.tx_unqueued,
        "deliver_unqueued": s.deliver_unqueued,
        "nics": nics,
        "vnic_queues": s
            .vnic_queues
            .iter()
            .map(|(t, extra)| transport_json(t, extra))
            .collect::<Vec<_>>(),
        "drops": drops,
        "tunnel_unqueued": s.tunnel_unqueued,
        "tunnels": s
            .tunnels
            .iter()
            .map(|t| json!({
                "id": t.id,
                "name": t.name,
                "tx_packets": t.engine.tx_packets_count,
                "tx_bytes": t.engine.tx_bytes_count,
                "rx_packets": t.engine.rx_packets_count,
                "rx_bytes": t.engine.rx_bytes_count,
                "rx_seq_resync": t.engine.rx_seq_resync_count,
            }))
            .collect::<Vec<_>>(),
        "tunnel_ports": s
            .tunnel_ports
            .iter()
            .map(|p| {
                let mut v = transport_json(&p.transport, &[]);
                if let Some(map) = v.as_object_mut() {
                    map.insert("name".into(), json!(p.name));
                    map.insert("receives".into(), json!(p.receives));
                }
                v
            })
            .collect::<Vec<_>>(),
        "steering": s.steering.map(|(worker, st)| json!({
            "worker": worker,
            "steered_out": st.steered_out,
            "steered_in": st.steered_in,
            "lane_full": st.lane_full,
            "pool_exhausted": st.pool_exhausted,
            "rx_handed_out": st.rx_handed_out,
            "rx_handed_in": st.rx_handed_in,
            "rx_lane_full": st.rx_lane_full,
            "rx_pool_exhausted": st.rx_pool_exhausted,
            "rx_too_big": st.rx_too_big,
        })),
    })
}

fn transport_json(
    t: &braid_io::transport::TransportStats,
    extra: &[(&'static str, u64)],
) -> serde_json::Value {
    let mut v = json!({
        "rx_packets": t.rx_packets, "rx_bytes": t.rx_bytes, "rx_batches": t.rx_batches,
        "tx_packets": t.tx_packets, "tx_bytes": t.tx_bytes, "tx_syscalls": t.tx_syscalls,
        "tx_drop_queue_full": t.tx_drop_queue_full, "tx_drop_too_big": t.tx_drop_too_big,
        "tx_drop_closed": t.tx_drop_closed, "tx_errors": t.tx_errors, "rx_errors": t.rx_errors,
        "rx_drop_foreign": t.rx_drop_foreign, "rx_drop_batch_full": t.rx_drop_batch_full,
        "rx_drop_truncated": t.rx_drop_truncated, "offload_disabled": t.offload_disabled,
        "reopened": t.reopened,
    });
    if let Some(map) = v.as_object_mut() {
        for (k, c) in extra {
            map.insert((*k).to_string(), json!(c));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_stats_sum_counters_and_keep_the_worst_link_view() {
        let a = json!({
            "at_ns": 5, "tx_packets": 10, "drops": {"auth_failed": 1},
            "nics": [{"id": 0, "name": "nic0", "open": true, "tx_bytes": 100,
                      "link": {"state": "Up", "srtt_us": 40, "loss": 0.01}}],
        });
        let b = json!({
            "at_ns": 7, "tx_packets": 5, "drops": {"replayed": 2},
            "nics": [{"id": 0, "name": "nic0", "open": false, "tx_bytes": 50,
                      "link": {"state": "Up", "srtt_us": 30, "loss": 0.02}}],
        });
        let m = merge_json(a, &b);
        assert_eq!(m["at_ns"], 7);
        assert_eq!(m["tx_packets"], 15);
        assert_eq!(m["drops"], json!({"auth_failed": 1, "replayed": 2}));
        let nic = &m["nics"][0];
        assert_eq!(nic["id"], 0);
        assert_eq!(nic["name"], "nic0");
        assert_eq!(nic["open"], false);
        assert_eq!(nic["tx_bytes"], 150);
        assert_eq!(nic["link"]["srtt_us"], 40);
        assert_eq!(nic["link"]["loss"], 0.02);
    }

    /// Every worker takes a new QoS set; if one refuses, the others are put back.
    #[test]
    fn qos_is_replaced_on_every_worker_or_on_none() {
        use std::cell::RefCell;

        use braid_core::engine::{
            ClassMatch, ClassPolicy, Engine, EngineConfig, FlowClass, NicSpec,
        };
        use braid_core::qos::{ClassConfig, ClassId, ClassKind};
        use braid_core::{Instant, NicId};

        let now = Instant::from_millis(1);
        let mut cfg = EngineConfig::new(vec![NicSpec::udp_ipv4(NicId(0), "n0", 100_000_000, 1500)]);
        cfg.qos
            .classes
            .push(ClassConfig::weighted(2, 3, 100, 1 << 20));
        let previous = cfg.qos.clone();
        let plain = Engine::new(cfg.clone(), now).unwrap();
        // Worker 1 has a flow class in QoS class 2.
        cfg.classes.push(FlowClass {
            qos_class: Some(ClassId(2)),
            ..FlowClass::new("ssh", ClassMatch::default(), ClassPolicy::Pin)
        });
        let uses_class_2 = Engine::new(cfg, now).unwrap();
        let workers = [RefCell::new(plain), RefCell::new(uses_class_2)];
        let apply = |w: &RefCell<Engine>, cmd| Some(w.borrow_mut().apply(now, cmd));
        // Weights changed: both take it.
        let mut reweighted = previous.clone();
        reweighted.classes[2].kind = ClassKind::Weighted { weight: 8 };
        apply_qos(&workers, apply, &reweighted, &previous).unwrap();
        for w in &workers {
            assert_eq!(w.borrow().config().qos, reweighted);
        }
        // Class 2 removed: worker 1 refuses, worker 0 is put back.
        let mut without_2 = reweighted.clone();
        without_2.classes.pop();
        let e = apply_qos(&workers, apply, &without_2, &reweighted).unwrap_err();
        assert_eq!(
            e.to_string(),
            "worker 1 refused the qos configuration: qos configuration refused: \
             classes[0].qos_class: names no class of qos.classes"
        );
        for w in &workers {
            assert_eq!(w.borrow().config().qos, reweighted);
        }
        // A worker that does not answer.
        let e = apply_qos(&workers, |_, _| None, &without_2, &reweighted).unwrap_err();
        assert!(e.to_string().contains("worker 0 did not answer"), "{e}");
    }

    /// A new configuration's `[qos]` and `[[rules]]` reach every worker together (a rule
    /// naming a QoS class the new `[qos]` adds); if one worker refuses the rules, every
    /// worker is back on the previous QoS and rules; other sections cannot change.
    #[test]
    fn policies_are_replaced_on_every_worker_or_on_none() {
        use std::cell::RefCell;

        use braid_core::Instant;
        use braid_core::engine::Engine;

        const BASE: &str = r#"
[vnic]
name = "braid0"
mtu = 1400

[peer]
role = "a"

[[nics]]
name = "link0"
device = "veth0"
local = "10.77.0.1:7700"
peer = "10.77.0.2:7700"
capacity = "1gbit"

[[rules]]
name = "mark"
protocol = "udp"
dst_ports = "5000"
set_dscp = 10
"#;
        let previous = Config::parse(BASE).unwrap();
        let new_text = format!(
            "{}qos = \"gold\"\n\n[[rules]]\nname = \"un-nat\"\ndirection = \"rx\"\n\
             src = \"192.0.2.7/32\"\nset_src = \"10.99.0.2\"\n\n[qos]\n\
             [[qos.classes]]\nname = \"feed\"\nstrict = true\n[[qos.classes]]\n\
             name = \"bulk\"\n[[qos.classes]]\nname = \"gold\"\nweight = 4\n",
            BASE.replacen("set_dscp = 10", "set_dscp = 20", 1)
        );
        let new = Config::parse(&new_text).unwrap();
        assert_eq!(new.qos.classes.len(), 3);
        let now = Instant::from_millis(1);
        let engine = || {
            let cfg = previous.engine_config(&[1500], &[1_000_000_000]);
            RefCell::new(Engine::new(cfg, now).unwrap())
        };
        let workers = [engine(), engine()];
        let real = |w: &RefCell<Engine>, cmd| Some(w.borrow_mut().apply(now, cmd));
        let on = |plan: &Plan| {
            workers.iter().all(|w| {
                let w = w.borrow();
                let c = w.config();
                c.tx_rules == plan.rules.tx && c.rx_rules == plan.rules.rx && c.qos == plan.qos
            })
        };
        assert!(on(&previous));
        // Worker 1 refuses the rules: worker 0 gets the previous rules back, and both the
        // previous QoS.
        let refusing = |w: &RefCell<Engine>, cmd: Command| {
            if std::ptr::eq(w, &workers[1]) && matches!(cmd, Command::ReplaceRules { .. }) {
                return Some(Err(CommandError::InvalidValue("tx")));
            }
            real(w, cmd)
        };
        let e = apply_policies(&workers, refusing, &new, &previous).unwrap_err();
        assert_eq!(
            e.to_string(),
            "worker 1 refused the rules: invalid value for tx"
        );
        assert!(on(&previous), "everything put back");
        // Both take them.
        apply_policies(&workers, real, &new, &previous).unwrap();
        assert!(on(&new));
        for w in &workers {
            let w = w.borrow();
            assert_eq!(w.tx_rule_set().len(), 1);
            assert_eq!(w.rx_rule_set().len(), 1);
        }
        // And back.
        apply_policies(&workers, real, &previous, &new).unwrap();
        assert!(on(&previous));
        // A section the daemon does not replace at run time.
        let other_nic =
            Config::parse(&BASE.replacen("capacity = \"1gbit\"", "capacity = \"2gbit\"", 1))
                .unwrap();
        let e = apply_policies(&workers, real, &other_nic, &previous).unwrap_err();
        assert!(e.to_string().starts_with("nics: changed"), "{e}");
        assert!(on(&previous));
    }

    #[test]
    fn each_worker_has_its_own_key_and_both_peers_derive_the_same() {
        let psk = [9u8; 32];
        assert_ne!(worker_key(&psk, 0), worker_key(&psk, 1));
        assert_ne!(worker_key(&psk, 0), psk);
        assert_eq!(worker_key(&psk, 1), worker_key(&[9u8; 32], 1));
        assert_ne!(worker_key(&psk, 1), worker_key(&[8u8; 32], 1));
    }
}
