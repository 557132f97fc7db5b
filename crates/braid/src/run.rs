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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use braid_core::auth::{AuthConfig, Role};
use braid_core::rss::{Rss, ToeplitzKey};
use braid_io::dataplane::{Dataplane, DataplaneConfig, NicPort, Snapshot};
use braid_io::transport::NicTransport;
use serde_json::json;

use crate::config::{Capacity, Config, Endpoint, Plan, RoleName};

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

    let mut link_mtu = Vec::new();
    let mut capacity = Vec::new();
    let mut ports = Vec::new();
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
        let transport: Box<dyn NicTransport> = match &n.endpoint {
            Endpoint::Udp { local, peer } => {
                let mut cfg = braid_io::udp::UdpConfig::new(
                    *local,
                    *peer,
                    (mtu - n.transport_overhead()) as usize,
                );
                cfg.device = Some(n.device.clone());
                cfg.gso = n.gso;
                cfg.gro = n.gro;
                Box::new(
                    braid_io::udp::UdpTransport::open(cfg)
                        .with_context(|| format!("nics[{}] ({}): cannot open", n.id.0, n.name))?,
                )
            }
            Endpoint::Ethernet { .. } => {
                bail!(
                    "nics[{}].transport: \"ethernet\" (AF_PACKET) is not built yet; use \"udp\"",
                    n.id.0
                )
            }
        };
        tracing::info!(nic = %n.name, device = %n.device, mtu, capacity_bps = bps, "NIC open");
        link_mtu.push(mtu);
        capacity.push(bps);
        ports.push(NicPort {
            id: n.id,
            name: n.name.clone(),
            transport,
        });
    }

    let mut engine_cfg = plan.engine_config(&link_mtu, &capacity);
    engine_cfg.seed = random_seed();
    if let Some(psk) = psk {
        let role = match plan.file.peer.role {
            RoleName::A => Role::A,
            RoleName::B => Role::B,
        };
        let mut auth = AuthConfig::new(psk, role);
        // Wall-clock nanoseconds: a restarted daemon starts above every counter it sent
        // before, so the peer's replay window accepts it and no AEAD nonce is reused.
        auth.counter_start = braid_io::crypto::wall_clock_counter_start()?;
        engine_cfg.auth = Some(auth);
    }
    if plan.file.peer.encrypt && engine_cfg.auth.is_none() {
        bail!("peer.encrypt: needs peer.key_file (the key the AEAD keys are derived from)");
    }
    // MAC-only: AES-GMAC (1.55× keyed BLAKE3's throughput at 1400 bytes here); with
    // `encrypt`: AES-256-GCM, faster still (docs/benchmarks.md).
    // Without a key: no protection at all (`Engine::new` with `auth` unset).
    let protection = if engine_cfg.auth.is_none() {
        braid_io::crypto::Protection::Blake3Mac
    } else if plan.file.peer.encrypt {
        braid_io::crypto::Protection::Aead(braid_io::crypto::Cipher::Aes256Gcm)
    } else {
        braid_io::crypto::Protection::AesGmac
    };
    let engine =
        braid_io::crypto::build_engine_with(engine_cfg, braid_io::dataplane::now(), protection)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("the engine refused the configuration")?;

    let rss = vnic.rss().clone();
    let queues: Vec<Box<dyn NicTransport>> = vnic
        .take_queues()
        .into_iter()
        .map(|q| Box::new(q) as Box<dyn NicTransport>)
        .collect();
    let dp = Dataplane::new(engine, ports, queues, rss, DataplaneConfig::default())
        .context("cannot start the data path")?;
    let handle = dp.handle();
    let cpu = plan.file.daemon.cpu;
    let worker = std::thread::Builder::new()
        .name("braid-dp".into())
        .spawn(move || {
            pin_worker(cpu);
            dp.run()
        })
        .context("cannot start the data-path thread")?;
    tracing::info!(
        "running; SIGINT or SIGTERM stops braid and removes {}",
        plan.file.vnic.name
    );

    let stats_file = plan.file.daemon.stats_file.clone();
    let mut last_write = std::time::Instant::now();
    while !stop.load(Ordering::Acquire) && !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        if last_write.elapsed() >= Duration::from_secs(1) {
            last_write = std::time::Instant::now();
            if let (Some(path), Some(snap)) = (&stats_file, handle.snapshot()) {
                write_stats(path, &snap);
            }
        }
    }
    tracing::info!("stopping");
    handle.stop();
    let stopped = worker
        .join()
        .map_err(|_| anyhow::anyhow!("the data-path thread panicked"))?
        .context("the data path failed")?;
    if let (Some(path), Some(snap)) = (&stats_file, handle.snapshot()) {
        write_stats(path, &snap);
    }
    // The worker gave the queues back; dropping the last one removes the device.
    drop(stopped);
    drop(vnic);
    tracing::info!(
        "stopped; sockets closed and {} removed",
        plan.file.vnic.name
    );
    Ok(())
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

/// `auto` capacity: the device's speed from sysfs (what ethtool reports), else 1 Gbit/s.
// XXX(#3): measure it (delivery rate under load) instead of trusting the device's word.
fn estimate_capacity(device: &str) -> u64 {
    let path = PathBuf::from(format!("/sys/class/net/{device}/speed"));
    let mbit = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|m| *m > 0);
    let bps = mbit.map_or(AUTO_FALLBACK_BPS, |m| m.unsigned_abs() * 1_000_000);
    tracing::info!(device, capacity_bps = bps, "capacity = auto");
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

/// Write the snapshot as JSON, atomically (a temporary file renamed over the old one).
fn write_stats(path: &Path, snap: &Snapshot) {
    let value = stats_json(snap);
    let tmp = path.with_extension("json.tmp");
    let result = std::fs::write(&tmp, value.to_string()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the stats file");
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
