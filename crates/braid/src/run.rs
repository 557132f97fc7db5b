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
//!
//! **SIGHUP** reloads the policies: the main thread reads the file again and, if only its
//! policy sections (`[[tunnels]]`, `[qos]`, `[[rules]]`, `[policy]`, `[reorder]`,
//! `[fragmentation]`, `[reassembly]`) and the flow classes' `policy` changed, replaces them
//! on every worker as one set ([`apply_policies`]): the tunnel ports a new tunnel needs are
//! opened first, by the main
//! thread, and handed to the workers with the engines' command; each worker switches
//! between two batches and closes the ports it no longer uses; a worker that refuses puts
//! the others back. An invalid file, a change elsewhere (which needs a restart) or a port
//! that cannot be opened leaves everything in force, and the log says why.
//!
//! **REST API**: with an `[api]` section, a control thread serves braid-control's router
//! (`crate::api`): it reads the workers' snapshots, sends them NIC commands, and replaces
//! the policies through [`replace_policies`] under the same lock as SIGHUP, persisting them
//! to the policies file, whose policies replace the config file's at the next start. It is
//! started before the workers (a refused token or address stops braid at once) and stopped
//! before them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use braid_core::auth::{AuthConfig, Role};
use braid_core::engine::{Command, CommandError, FlowClass, Policies};
use braid_core::rss::{Rss, ToeplitzKey};
use braid_io::dataplane::{Dataplane, DataplaneConfig, NicPort, Snapshot, TunnelPortPlan};
use braid_io::transport::NicTransport;
use serde_json::json;

use crate::config::{Capacity, Config, Endpoint, NicPlan, Plan, ReceiveMode, RoleName};

/// Capacity assumed for `capacity = "auto"` when the device reports no speed.
const AUTO_FALLBACK_BPS: u64 = 1_000_000_000;

/// Run the daemon until SIGINT or SIGTERM; SIGHUP reloads the policies ([`reload`]).
pub(crate) fn run(config_path: &Path) -> Result<()> {
    let mut plan = Config::load(config_path)?;
    if let Some(path) = plan
        .file
        .api
        .as_ref()
        .map(crate::config::ApiSection::policies_file)
    {
        // The policies last set through the API (or by SIGHUP) replace the file's.
        plan = crate::api::with_persisted(plan, &path)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install the SIGINT/SIGTERM handler")?;
    }
    let hangup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hangup))
        .context("cannot install the SIGHUP handler")?;

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
    // (then `CapacityShares`, in `api::Control`, moves it to where it is used).
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
    warn_tunnel_mtu(&plan, &link_mtu);
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
    let stats_file = plan.file.daemon.stats_file.clone();
    let cpu = plan.file.daemon.cpu;
    let realtime = plan.file.daemon.realtime_priority;
    let api_section = plan.file.api.clone();
    // The plan in force, the capacity shares and the rates: shared by this loop (SIGHUP,
    // share rounds) and the REST API, which is started before any worker runs, so that a
    // token or address it refuses stops braid before the data path starts.
    let control = Arc::new(crate::api::Control::new(crate::api::ControlParts {
        workers: handles.clone(),
        plan,
        link_mtu: link_mtu.clone(),
        capacity_bps: capacity.clone(),
        vnic: crate::api::VnicInfo {
            rss: crate::api::rss_info(&rss),
        },
        persist: api_section
            .as_ref()
            .map(crate::config::ApiSection::policies_file),
    }));
    let api = match &api_section {
        Some(section) => {
            let server = crate::api::serve(section, Arc::clone(&control))?;
            tracing::info!(
                listen = %server.listen,
                token_file = %section.token_file.display(),
                audit_log = %section.audit_log().display(),
                policies_file = %section.policies_file().display(),
                "REST API listening (docs/api.md)"
            );
            Some(server)
        }
        None => {
            tracing::info!("no [api] section: the REST API is off");
            None
        }
    };
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
    let vnic_name = control.vnic_name();
    tracing::info!(
        workers,
        "running; SIGINT or SIGTERM stops braid and removes {vnic_name}"
    );

    let mut last_write = std::time::Instant::now();
    while !stop.load(Ordering::Acquire) && !threads.iter().any(|t| t.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if hangup.swap(false, Ordering::AcqRel) {
            reload(config_path, &control);
        }
        // Several workers share each link: move each link's capacity to the workers that
        // use it (crates/braid-io/src/dataplane/share.rs). `auto` NICs are left to each
        // worker's estimator.
        control.share_round();
        if last_write.elapsed() >= Duration::from_secs(1) {
            last_write = std::time::Instant::now();
            control.sample();
            if let (Some(path), Some(snaps)) = (&stats_file, control.snapshots()) {
                write_stats(path, &snaps);
            }
        }
    }
    tracing::info!("stopping");
    // The API first: no request reaches a worker that is stopping.
    if let Some(api) = api {
        api.stop();
    }
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
    if let (Some(path), Some(snaps)) = (&stats_file, control.snapshots()) {
        write_stats(path, &snaps);
    }
    // The workers gave the queues back; dropping the last one removes the device.
    drop(stopped);
    drop(vnic);
    if let Some(e) = failure {
        return Err(e);
    }
    tracing::info!("stopped; sockets closed and {vnic_name} removed");
    Ok(())
}

/// The engine command that replaces a worker's policies with `plan`'s as one set
/// ([`Command::ReplacePolicies`], all or nothing in each engine): `[[tunnels]]`, `[qos]`,
/// `[[rules]]`, the striping policies (`[policy]` and each flow class's), `[fragmentation]`
/// (the scheduler's cost model), `[reassembly]` and `[reorder]`. The rule tables are built
/// and validated here, off the data path, against the plan's own tunnels and QoS classes
/// (errors name the `[[rules]]` entries); each tunnel's MTU is its NIC's link MTU
/// (`link_mtu`).
fn policies_command(plan: &Plan, link_mtu: &[u32]) -> Result<Command> {
    let (tx_rules, rx_rules) = crate::config::build_rule_tables(plan)?;
    // The capacities do not matter here: only the policies are taken.
    let cfg = plan.engine_config(link_mtu, &vec![1; plan.nics.len()]);
    Ok(Command::ReplacePolicies(Box::new(Policies {
        tunnels: cfg.tunnels,
        qos: cfg.qos,
        tx_rules,
        rx_rules,
        default_policy: cfg.default_policy,
        class_policies: cfg.classes.iter().map(|c| c.policy).collect(),
        scheduler: cfg.scheduler,
        reassembly: cfg.reassembly,
        reorder: cfg.reorder,
    })))
}

/// `true` if the flow classes are the same but for their striping policy (which the
/// engines replace with the rest), each naming its tunnel by name: the engine follows a
/// class's tunnel by name across a tunnel table replacement, so a class whose tunnel only
/// moved in `[[tunnels]]` did not change.
fn same_classes(new: &Plan, previous: &Plan) -> bool {
    let tunnel_name = |plan: &Plan, t: Option<u8>| {
        t.and_then(|t| plan.tunnels.get(usize::from(t)))
            .map(|t| t.name.clone())
    };
    new.classes.len() == previous.classes.len()
        && new.classes.iter().zip(&previous.classes).all(|(n, p)| {
            let untunnelled = |c: &FlowClass| FlowClass {
                tunnel: None,
                policy: braid_core::engine::ClassPolicy::Stripe,
                ..c.clone()
            };
            untunnelled(n) == untunnelled(p)
                && tunnel_name(new, n.tunnel) == tunnel_name(previous, p.tunnel)
        })
}

/// Apply a new configuration's policies (`[[tunnels]]`, `[qos]`, `[[rules]]`, `[policy]`,
/// `[reorder]`, `[fragmentation]`, `[reassembly]`, and the flow classes' `policy`) to the
/// running workers as a whole: what `braid run` does on SIGHUP and on the REST API's
/// `PUT /v1/policies` ([`replace_policies`]).
///
/// The rest of the file (NICs, vNIC, peer, the classes but for their policy, daemon, api)
/// is not replaced at run time: a change there is refused, naming the section, before
/// anything is applied (a restart applies it). Then the engines' command is built ([`policies_command`]: the
/// rule tables validated against the new tunnels and QoS classes), and `ports(k, new,
/// previous)` opens the tunnel ports each worker `k` needs for the new tunnels and does not
/// have (the daemon's [`tunnel_port_plans`]), for every worker, before any worker switches:
/// a port that cannot be opened changes nothing. Each worker then swaps its engine's
/// policies and its tunnel ports between two batches, whole or not at all (`apply`: in the
/// daemon [`braid_io::dataplane::DataplaneHandle::apply_with_tunnel_ports`]), and closes the
/// ports it no longer uses. The engines share one configuration, so they accept or refuse
/// alike; should one refuse or not answer after others took the new set, those are put back
/// to `previous`'s policies (with the ports `ports(k, previous, new)` reopens), so the
/// workers do not stay on different sets. "No answer" must mean "not applied, ever": the
/// daemon's `apply` waits as long as the worker runs (a worker that applied the command
/// after its caller had given up would stay on the new set while the others went back).
/// The rollback command is built before any worker switches (with more than one worker), so
/// that a rollback cannot fail half-way for want of it; only its tunnel ports are opened
/// when it is needed (the old ones hold their addresses until then).
///
/// # Errors
/// A section that cannot change at run time, rules that do not build, a tunnel port that
/// cannot be opened (naming the tunnel and why), or the first worker that refused (the
/// engine's reason) or did not take them (`apply` answered `None`: not applied, ever).
pub(crate) fn apply_policies<W>(
    workers: &[W],
    apply: impl Fn(&W, Command, Vec<TunnelPortPlan>) -> Option<Result<(), CommandError>>,
    ports: impl Fn(usize, &Plan, &Plan) -> Result<Vec<TunnelPortPlan>>,
    new: &Plan,
    previous: &Plan,
    link_mtu: &[u32],
) -> Result<()> {
    let (n, p) = (&new.file, &previous.file);
    let fixed = [
        ("vnic", n.vnic == p.vnic),
        ("peer", n.peer == p.peer),
        ("nics", n.nics == p.nics),
        ("classes", same_classes(new, previous)),
        ("daemon", n.daemon == p.daemon),
        ("api", n.api == p.api),
    ];
    if let Some((section, _)) = fixed.iter().find(|(_, same)| !same) {
        bail!(
            "{section}: changed, and only the policy sections ([[tunnels]], [qos], [[rules]], \
             [policy], [reorder], [fragmentation], [reassembly]) and the classes' policy are \
             replaced at run time (restart braid to apply the rest)"
        );
    }
    let class_policies = |plan: &Plan| plan.classes.iter().map(|c| c.policy).collect::<Vec<_>>();
    let changed = crate::api::document_of(p).changed_sections(&crate::api::document_of(n));
    if changed.is_empty() && class_policies(new) == class_policies(previous) {
        tracing::info!("no policy changed");
        return Ok(());
    }
    let command = policies_command(new, link_mtu)?;
    // Built now, before anything changes: a rollback that could not be built would leave
    // the workers that switched on the new set (a large rule set takes a while, so only
    // when there is someone to roll back).
    let back = if workers.len() > 1 {
        Some(
            policies_command(previous, link_mtu)
                .context("the policies in force (to roll back to)")?,
        )
    } else {
        None
    };
    let mut opened = Vec::with_capacity(workers.len());
    for k in 0..workers.len() {
        opened.push(ports(k, new, previous)?);
    }
    for (k, (w, plans)) in workers.iter().zip(opened).enumerate() {
        let failure = match apply(w, command.clone(), plans) {
            Some(Ok(())) => continue,
            Some(Err(e)) => anyhow::anyhow!("worker {k} refused the policies: {e}"),
            None => anyhow::anyhow!(
                "worker {k} did not take the policies (its thread has ended, or its command \
                 queue is full)"
            ),
        };
        if let Some(back) = back.as_ref().filter(|_| k > 0) {
            for (j, done) in workers[..k].iter().enumerate() {
                let restored = ports(j, previous, new)
                    .map(|plans| apply(done, back.clone(), plans))
                    .map_err(|e| format!("{e:#}"));
                if !matches!(restored, Ok(Some(Ok(())))) {
                    tracing::error!(worker = j, outcome = ?restored,
                        "cannot put the previous policies back");
                }
            }
        }
        // The workers after k never saw the new set; their new ports are closed here.
        return Err(failure);
    }
    tracing::info!(
        workers = workers.len(),
        tunnels = new.tunnels.len(),
        qos_classes = new.qos.classes.len(),
        tx_rules = new.rules.tx.len(),
        rx_rules = new.rules.rx.len(),
        changed = ?changed.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "policies replaced"
    );
    Ok(())
}

/// SIGHUP: read the config file again and apply its policies to every worker
/// ([`crate::api::Control::reload`]: [`replace_policies`], and with `[api]` the policies
/// file rewritten, so the file's policies are also those a restart finds). An invalid file,
/// a change that needs a restart, a tunnel port that cannot be opened or a refusal leaves
/// everything in force, and the log says why (naming the field or section).
fn reload(path: &Path, control: &crate::api::Control) {
    tracing::info!(config = %path.display(), "SIGHUP: reloading the policies");
    match Config::load(path).and_then(|new| control.reload(new)) {
        Ok(()) => tracing::info!("reload done: the file's policies are in force"),
        Err(e) => tracing::error!("reload refused, the policies in force stay: {e:#}"),
    }
}

/// Put `new`'s policies in force on the workers of `handles` ([`apply_policies`], with
/// the tunnel ports `new` needs opened here) and make `new` the plan in force
/// (`*in_force`): SIGHUP's reload and the REST API's `PUT /v1/policies` both come here.
///
/// # Errors
/// As [`apply_policies`]; `*in_force` is unchanged.
pub(crate) fn replace_policies(
    handles: &[braid_io::dataplane::DataplaneHandle],
    in_force: &mut Plan,
    new: Plan,
    link_mtu: &[u32],
) -> Result<()> {
    apply_policies(
        handles,
        |h, cmd, ports| h.apply_with_tunnel_ports(cmd, ports),
        |k, to, from| tunnel_port_plans(k, to, from, link_mtu),
        &new,
        in_force,
        link_mtu,
    )?;
    warn_tunnel_mtu(&new, link_mtu);
    *in_force = new;
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

/// One tunnel port a worker needs for a plan's `[[tunnels]]`.
struct PortSpec {
    /// `vxlan 10.77.0.1:4789`, `gre 10.77.0.1`: unique per worker (one port per kind and
    /// local endpoint, on one NIC: config.rs checks it).
    name: String,
    config: braid_io::tunnel::TunnelPortConfig,
    /// The tunnels (indexes into the plan's) that send through it.
    tunnels: Vec<u8>,
}

/// The tunnel ports of one worker for `plan`: one per kind and local endpoint of
/// `[[tunnels]]`, bound to the NIC's device, sending for every tunnel of that endpoint;
/// `receive` for worker 0.
fn tunnel_layout(plan: &Plan, link_mtu: &[u32], receive: bool) -> Vec<PortSpec> {
    use braid_io::tunnel::{TunnelKind, TunnelPortConfig};
    use braid_wire::tunnel::Encap;
    let mut specs: Vec<PortSpec> = Vec::new();
    for (id, t) in plan.tunnels.iter().enumerate() {
        let nic = &plan.nics[usize::from(t.nic.0)];
        let mtu = link_mtu[usize::from(t.nic.0)];
        let kind = match &t.encap {
            Encap::Vxlan(v) => TunnelKind::Vxlan { port: v.dst_port },
            Encap::Gre(_) => TunnelKind::Gre,
        };
        let (local, _) = t.endpoints();
        let id = u8::try_from(id).expect("invariant: at most MAX_TUNNELS tunnels");
        if let Some(s) = specs
            .iter_mut()
            .find(|s| s.config.kind == kind && s.config.local == local)
        {
            s.tunnels.push(id);
            continue;
        }
        let mut config = TunnelPortConfig::new(kind, local, Some(nic.device.clone()));
        config.receive = receive;
        config.max_tx_bytes = mtu as usize;
        config.max_rx_bytes = config.max_rx_bytes.max(plan.file.vnic.mtu as usize + 256);
        let name = match kind {
            TunnelKind::Vxlan { port } => {
                format!("vxlan {}", std::net::SocketAddr::new(local, port))
            }
            TunnelKind::Gre => format!("gre {local}"),
        };
        specs.push(PortSpec {
            name,
            config,
            tunnels: vec![id],
        });
    }
    specs
}

/// Open a port of [`tunnel_layout`]; the error names the first tunnel that needs it.
fn open_tunnel_port(plan: &Plan, spec: &PortSpec) -> Result<braid_io::tunnel::TunnelPort> {
    let first = usize::from(spec.tunnels[0]);
    braid_io::tunnel::TunnelPort::open(spec.config.clone()).with_context(|| {
        format!(
            "tunnels[{first}] ({}): cannot open {}",
            plan.tunnels[first].name, spec.name
        )
    })
}

/// How a tunnel's outer packet for a vNIC-MTU packet compares with its NIC's MTU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TunnelFit {
    /// It fits.
    Fits,
    /// Larger: sent as IPv4 fragments (GRE over IPv4 with `df = false`).
    Fragments,
    /// Larger: the tunnel's larger packets are dropped (`tunnel_too_big`).
    TooBig,
}

/// The most tunnel `id` of `plan` adds to a vNIC packet: its encapsulation's overhead, plus
/// an 802.1Q tag ([`braid_wire::tunnel::VLAN_TAG_LEN`]) if a TX rule may push one into its
/// flows' inner Ethernet header: a `push_vlan` rule whose own VXLAN tunnel action names it,
/// or, for a rule without a tunnel action (its flows' class gives the tunnel), a VXLAN
/// tunnel that some flow class names (which class's flows the rule takes is not worked out
/// here: conservatively, any).
fn tunnel_overhead(plan: &Plan, id: usize) -> usize {
    use braid_core::rules::Action;
    use braid_wire::tunnel::{Encap, VLAN_TAG_LEN};
    let t = &plan.tunnels[id];
    if !matches!(t.encap, Encap::Vxlan(_)) {
        return t.encap.overhead();
    }
    let in_a_class = plan
        .classes
        .iter()
        .any(|c| c.tunnel.is_some_and(|k| usize::from(k) == id));
    let tagged = plan.rules.tx.iter().any(|r| {
        let pushes = r.actions.iter().any(|a| matches!(a, Action::PushVlan(_)));
        let own = r.actions.iter().find_map(|a| match a {
            Action::VxlanEncap(k) | Action::GreEncap(k) => Some(usize::from(k.0)),
            _ => None,
        });
        pushes && own.map_or(in_a_class, |k| k == id)
    });
    t.encap.overhead() + if tagged { VLAN_TAG_LEN } else { 0 }
}

/// Per tunnel of `plan`: its overhead ([`tunnel_overhead`]), its NIC's MTU and how a
/// vNIC-MTU packet fits.
fn tunnel_fits(plan: &Plan, link_mtu: &[u32]) -> Vec<(usize, u32, TunnelFit)> {
    (0..plan.tunnels.len())
        .map(|id| {
            let t = &plan.tunnels[id];
            let mtu = link_mtu[usize::from(t.nic.0)];
            let overhead = tunnel_overhead(plan, id);
            let fit = if plan.file.vnic.mtu as usize + overhead <= mtu as usize {
                TunnelFit::Fits
            } else if t.fragments_outer() {
                TunnelFit::Fragments
            } else {
                TunnelFit::TooBig
            };
            (overhead, mtu, fit)
        })
        .collect()
}

/// Warn about tunnels whose outer packets cannot carry a vNIC-MTU packet (with the VLAN tag
/// a rule pushes, [`tunnel_overhead`]).
fn warn_tunnel_mtu(plan: &Plan, link_mtu: &[u32]) {
    for (t, (overhead, mtu, fit)) in plan.tunnels.iter().zip(tunnel_fits(plan, link_mtu)) {
        match fit {
            TunnelFit::Fits => {}
            TunnelFit::Fragments => tracing::info!(
                tunnel = %t.name, vnic_mtu = plan.file.vnic.mtu, overhead, nic_mtu = mtu,
                "vnic.mtu plus the tunnel's overhead exceeds the NIC's MTU: larger outer \
                 packets are sent as IPv4 fragments (GRE with df = false)"
            ),
            TunnelFit::TooBig => tracing::warn!(
                tunnel = %t.name, vnic_mtu = plan.file.vnic.mtu, overhead, nic_mtu = mtu,
                "vnic.mtu plus the tunnel's overhead (with a push_vlan rule's tag) exceeds \
                 the NIC's MTU: larger packets of the tunnel's flows are dropped \
                 (tunnel_too_big)"
            ),
        }
    }
}

/// The tunnel ports of one worker, opened (at start).
fn tunnel_ports(
    plan: &Plan,
    link_mtu: &[u32],
    receive: bool,
) -> Result<Vec<braid_io::dataplane::TunnelPortEntry>> {
    tunnel_layout(plan, link_mtu, receive)
        .into_iter()
        .map(|spec| {
            Ok(braid_io::dataplane::TunnelPortEntry {
                port: open_tunnel_port(plan, &spec)?,
                name: spec.name,
                tunnels: spec.tunnels,
            })
        })
        .collect()
}

/// The tunnel ports worker `worker` needs to go from `from`'s tunnels to `to`'s: the ports
/// it has with the same name and configuration are kept, the others opened here (off the
/// data path, before the worker switches); the worker closes the ones `to` does not keep.
/// A port whose configuration changed while its local endpoint stayed (the tunnel moved to
/// another NIC) is opened while the old one still holds the address, which a VXLAN UDP
/// port refuses (address in use): such a change takes two reloads (remove, then add).
///
/// # Errors
/// A port that cannot be opened, naming the tunnel and why; the ones opened before it are
/// closed.
fn tunnel_port_plans(
    worker: usize,
    to: &Plan,
    from: &Plan,
    link_mtu: &[u32],
) -> Result<Vec<TunnelPortPlan>> {
    let have = tunnel_layout(from, link_mtu, worker == 0);
    tunnel_layout(to, link_mtu, worker == 0)
        .into_iter()
        .map(|spec| {
            let kept = have
                .iter()
                .any(|h| h.name == spec.name && h.config == spec.config);
            Ok(TunnelPortPlan {
                port: if kept {
                    None
                } else {
                    Some(open_tunnel_port(to, &spec)?)
                },
                name: spec.name,
                tunnels: spec.tunnels,
            })
        })
        .collect()
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
///
/// The entries of a list that say who they are (an `id`, a `name`, or both: NICs, rules,
/// tunnels, tunnel ports, QoS classes) are matched by that, not by their place: for a
/// moment after a reload the workers may be on different tables (each switches between two
/// of its own batches), and the second rule of one table is not the second of the other.
/// An entry only one worker has is taken as it is. Entries without either (the vNIC
/// queues) are matched by place.
pub(crate) fn merge_json(a: serde_json::Value, b: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    // `replaced` (rule replacements): every worker takes each one.
    const LARGEST: [&str; 5] = ["at_ns", "srtt_us", "owd_us", "loss", "replaced"];
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
        (Value::Array(a), Value::Array(b)) => {
            let key = |v: &Value| {
                let (id, name) = (v.get("id"), v.get("name"));
                (id.is_some() || name.is_some()).then(|| (id.cloned(), name.cloned()))
            };
            if a.iter().chain(b).all(|v| key(v).is_some()) {
                let mut out = a;
                for vb in b {
                    let k = key(vb);
                    match out.iter_mut().find(|va| key(va) == k) {
                        Some(va) => *va = merge_json(std::mem::take(va), vb),
                        None => out.push(vb.clone()),
                    }
                }
                Value::Array(out)
            } else {
                Value::Array(
                    a.into_iter()
                        .zip(b.iter().map(Some).chain(std::iter::repeat(None)))
                        .map(|(va, vb)| match vb {
                            Some(vb) => merge_json(va, vb),
                            None => va,
                        })
                        .collect(),
                )
            }
        }
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
                "qos": qos_json(&n.qos),
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
        "rules": {
            "replaced": s.rules.replaced,
            "tx": rules_json(&s.rules.tx),
            "rx": rules_json(&s.rules.rx),
        },
        "vnic_qos": s
            .vnic_qos
            .iter()
            .map(|c| json!({
                "id": c.class.0,
                "green": c.stats.green_count,
                "yellow": c.stats.yellow_count,
                "red": c.stats.red_count,
                "drop_red": c.stats.drop_red_count,
            }))
            .collect::<Vec<_>>(),
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
                "tx_vlan_tagged": t.engine.tx_vlan_tagged_count,
                "rx_vlan_popped": t.engine.rx_vlan_popped_count,
                "tx_fragmented": t.engine.tx_fragmented_count,
                "tx_fragments": t.engine.tx_fragments_count,
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

/// One rule table's counters: per rule, by index (`id`), its name and what it applied to.
/// Zero again after every replacement of the rules (`rules.replaced` counts them).
fn rules_json(t: &braid_io::dataplane::RuleTableSnapshot) -> serde_json::Value {
    t.hits
        .iter()
        .enumerate()
        .map(|(i, h)| {
            json!({
                "id": i,
                "name": t.names.get(i).map_or("", String::as_str),
                "packets": h.packets_count,
                "bytes": h.bytes_count,
            })
        })
        .collect()
}

/// Per QoS class (`id`: its index in `[qos]` classes) of one NIC's scheduler: packets and
/// bytes enqueued and dequeued, drops by reason, the colours its packets came with (the
/// vNIC's meters colour them), and the queue's depth now.
fn qos_json(classes: &[braid_io::dataplane::QosClassSnapshot]) -> serde_json::Value {
    classes
        .iter()
        .map(|c| {
            let st = &c.stats;
            json!({
                "id": c.class.0,
                "enqueued_packets": st.enqueued_packets_count,
                "enqueued_bytes": st.enqueued_bytes_count,
                "dequeued_packets": st.dequeued_packets_count,
                "dequeued_bytes": st.dequeued_bytes_count,
                "drops": {
                    "queue_full": st.drop_queue_full_count,
                    "oversize": st.drop_oversize_count,
                    "meter_red": st.drop_red_count,
                    "class_removed": st.drop_reconfig_count,
                },
                "green": st.green_count,
                "yellow": st.yellow_count,
                "red": st.red_count,
                "queued_packets": c.queued_packets,
                "queued_bytes": c.queued_bytes,
            })
        })
        .collect()
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
    use std::cell::RefCell;

    use braid_core::engine::Engine;

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

    /// Several workers' rule and QoS counters add up per rule and per class; ids and names
    /// stay, and the count of rule replacements (every worker takes each) is not summed.
    #[test]
    fn merged_rule_and_qos_counters_add_up_per_rule_and_class() {
        let worker = |packets: u64, queued: u64| {
            json!({
                "rules": {"replaced": 2, "tx": [
                    {"id": 0, "name": "mark", "packets": packets, "bytes": packets * 100},
                    {"id": 1, "name": "shed", "packets": 1, "bytes": 60},
                ], "rx": []},
                "nics": [{"id": 0, "qos": [
                    {"id": 1, "enqueued_packets": packets, "queued_packets": queued,
                     "drops": {"queue_full": 1}},
                ]}],
            })
        };
        let m = merge_json(worker(3, 1), &worker(5, 0));
        assert_eq!(m["rules"]["replaced"], 2);
        assert_eq!(
            m["rules"]["tx"][0],
            json!({"id": 0, "name": "mark", "packets": 8, "bytes": 800})
        );
        assert_eq!(m["rules"]["tx"][1]["packets"], 2);
        let q = &m["nics"][0]["qos"][0];
        assert_eq!(
            (q["id"].as_u64(), q["enqueued_packets"].as_u64()),
            (Some(1), Some(8))
        );
        assert_eq!(q["queued_packets"], 1);
        assert_eq!(q["drops"]["queue_full"], 2);
    }

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

[[tunnels]]
name = "t0"
kind = "gre"
nic = "link0"
local = "10.77.0.1"
remote = "10.77.0.2"
key = 1

[[classes]]
name = "tunnelled"
protocol = "udp"
dst_ports = "6000"
policy = "pin"
tunnel = "t0"

[[rules]]
name = "mark"
protocol = "udp"
dst_ports = "5000"
set_dscp = 10
"#;

    /// A worker's engine in the tests of [`apply_policies`].
    type Worker = RefCell<braid_core::engine::Engine>;

    /// Two workers' engines on `plan`, driven as the daemon drives them (no sockets: the
    /// port plans are recorded as (worker, tunnels in `to`, tunnels in `from`)).
    struct Workers {
        engines: [Worker; 2],
        port_calls: RefCell<Vec<(usize, usize, usize)>>,
    }

    impl Workers {
        fn new(plan: &Plan) -> Self {
            let engine = || {
                let cfg = plan.engine_config(&[1500], &[1_000_000_000]);
                Worker::new(Engine::new(cfg, braid_core::Instant::from_millis(1)).unwrap())
            };
            Self {
                engines: [engine(), engine()],
                port_calls: RefCell::new(Vec::new()),
            }
        }

        fn ports(&self, k: usize, to: &Plan, from: &Plan) -> Result<Vec<TunnelPortPlan>> {
            self.port_calls
                .borrow_mut()
                .push((k, to.tunnels.len(), from.tunnels.len()));
            Ok(Vec::new())
        }

        /// `true` if every engine runs `plan`'s policies.
        fn on(&self, plan: &Plan) -> bool {
            self.engines.iter().all(|w| {
                let w = w.borrow();
                let c = w.config();
                let names = |t: &[braid_core::engine::TunnelSpec]| -> Vec<String> {
                    t.iter().map(|t| t.name.clone()).collect()
                };
                c.tx_rules == plan.rules.tx
                    && c.rx_rules == plan.rules.rx
                    && c.qos == plan.qos
                    && names(&c.tunnels) == names(&plan.tunnels)
            })
        }
    }

    fn real(w: &Worker, cmd: Command) -> Option<Result<(), CommandError>> {
        Some(
            w.borrow_mut()
                .apply(braid_core::Instant::from_millis(2), cmd),
        )
    }

    /// A new configuration's `[[tunnels]]`, `[qos]` and `[[rules]]` reach every worker
    /// together (a rule naming a tunnel and a QoS class the same file adds); if one worker
    /// refuses, every worker is back on the previous policies; other sections cannot change;
    /// an unchanged file sends nothing; a port that cannot be opened changes nothing.
    #[test]
    fn policies_are_replaced_on_every_worker_or_on_none() {
        let previous = Config::parse(BASE).unwrap();
        // A tunnel in front of t0 (the class follows t0 by name), a QoS class, a rule into
        // the new tunnel in the new class, an rx rule; the marking changed.
        let new_text = BASE.replacen("set_dscp = 10", "set_dscp = 20", 1).replacen(
            "[[tunnels]]",
            "[[tunnels]]\nname = \"t1\"\nkind = \"gre\"\nnic = \"link0\"\n\
                 local = \"10.77.0.1\"\nremote = \"10.77.0.9\"\n\n[[tunnels]]",
            1,
        ) + "\n[[rules]]\nname = \"to-t1\"\nprotocol = \"udp\"\ndst_ports = \"7000\"\n\
               tunnel = \"t1\"\nqos = \"gold\"\n\n\
               [[rules]]\nname = \"un-nat\"\ndirection = \"rx\"\n\
               src = \"192.0.2.7/32\"\nset_src = \"10.99.0.2\"\n\n[qos]\n\
               [[qos.classes]]\nname = \"feed\"\nstrict = true\n[[qos.classes]]\n\
               name = \"bulk\"\n[[qos.classes]]\nname = \"gold\"\nweight = 4\n";
        let new = Config::parse(&new_text).unwrap();
        assert_eq!((new.tunnels.len(), new.qos.classes.len()), (2, 3));
        assert_eq!(new.classes[0].tunnel, Some(1), "t0 moved");
        let w = Workers::new(&previous);
        let ports = |k: usize, to: &Plan, from: &Plan| w.ports(k, to, from);
        let apply = |e: &Worker, cmd, p: Vec<TunnelPortPlan>| {
            assert!(p.is_empty());
            real(e, cmd)
        };
        assert!(w.on(&previous));
        // Worker 1 refuses: worker 0 is put back, with the ports of the previous tunnels.
        let refusing = |e: &Worker, cmd, p| {
            if std::ptr::eq(e, &w.engines[1]) {
                return Some(Err(CommandError::InvalidValue("tx")));
            }
            apply(e, cmd, p)
        };
        let err = apply_policies(&w.engines, refusing, ports, &new, &previous, &[1500]);
        assert_eq!(
            err.unwrap_err().to_string(),
            "worker 1 refused the policies: invalid value for tx"
        );
        assert!(w.on(&previous), "everything put back");
        assert_eq!(*w.port_calls.borrow(), [(0, 2, 1), (1, 2, 1), (0, 1, 2)]);
        // Both take them.
        apply_policies(&w.engines, apply, ports, &new, &previous, &[1500]).unwrap();
        assert!(w.on(&new));
        for e in &w.engines {
            let e = e.borrow();
            assert_eq!(
                e.config().classes[0].tunnel,
                Some(1),
                "the class follows t0"
            );
            assert_eq!(e.tx_rule_set().len(), 2);
            assert_eq!(e.rx_rule_set().len(), 1);
        }
        // Unchanged: nothing is sent.
        let never =
            |_: &Worker, _, _| -> Option<Result<(), CommandError>> { panic!("nothing to apply") };
        apply_policies(&w.engines, never, ports, &new, &new, &[1500]).unwrap();
        // A port that cannot be opened (for worker 1): no worker switches.
        let failing = |k: usize, _: &Plan, _: &Plan| -> Result<Vec<TunnelPortPlan>> {
            if k == 1 {
                bail!("tunnels[0] (t1): cannot open gre 10.77.0.1");
            }
            Ok(Vec::new())
        };
        let err = apply_policies(&w.engines, never, failing, &previous, &new, &[1500]);
        assert_eq!(
            err.unwrap_err().to_string(),
            "tunnels[0] (t1): cannot open gre 10.77.0.1"
        );
        assert!(w.on(&new));
        // And back.
        apply_policies(&w.engines, apply, ports, &previous, &new, &[1500]).unwrap();
        assert!(w.on(&previous));
        assert_eq!(w.engines[0].borrow().config().classes[0].tunnel, Some(0));
        // Sections the daemon does not replace at run time, named.
        for (from, to, section) in [
            ("capacity = \"1gbit\"", "capacity = \"2gbit\"", "nics"),
            ("dst_ports = \"6000\"", "dst_ports = \"6001\"", "classes"),
            // The class's tunnel is another one (by name).
            ("tunnel = \"t0\"", "tunnel = \"t9\"", "classes"),
            ("mtu = 1400", "mtu = 1300", "vnic"),
        ] {
            let mut text = BASE.replacen(from, to, 1);
            if section == "classes" && to.contains("t9") {
                text = text.replacen("name = \"t0\"", "name = \"t9\"", 1);
            }
            let other = Config::parse(&text).unwrap();
            let e = apply_policies(&w.engines, never, ports, &other, &previous, &[1500])
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("{section}: changed, and only")),
                "{e}"
            );
        }
        assert!(w.on(&previous));
    }

    /// SIGHUP's path takes the other policy sections too: `[policy]`, a class's `policy`,
    /// `[reorder]`, `[fragmentation]` and `[reassembly]` reach both engines' configuration
    /// (nothing else changed, so only they could have); a worker that refuses puts them
    /// back on the other; a `reassembly.max_fragments` above the engines' room is refused by
    /// them, naming the field, and nothing changes.
    #[test]
    fn the_tuning_sections_and_class_policies_change_at_run_time() {
        use braid_core::engine::ClassPolicy;
        let previous = Config::parse(BASE).unwrap();
        let tuned = |max_fragments: u16| {
            let text = BASE.replacen("policy = \"pin\"", "policy = \"duplicate\"", 1)
                + &format!(
                    "\n[policy]\ndefault = \"pin\"\n[reorder]\nmin_hold_ms = 3\nmax_hold_ms = 9\n\
                     [fragmentation]\nmax_split_links = 2\nloss_penalty_ms = 30\n\
                     [reassembly]\nmem_cap_bytes = 65536\ntimeout_ms = 40\n\
                     max_fragments = {max_fragments}\n"
                );
            Config::parse(&text).unwrap()
        };
        let new = tuned(32);
        let w = Workers::new(&previous);
        let ports = |k: usize, to: &Plan, from: &Plan| w.ports(k, to, from);
        let apply = |e: &Worker, cmd, _: Vec<TunnelPortPlan>| real(e, cmd);
        let tuned_on = |e: &Worker| {
            let e = e.borrow();
            let c = e.config();
            (
                c.default_policy,
                c.classes[0].policy,
                c.reorder.max_hold,
                c.scheduler.max_split_links,
                c.scheduler.loss_penalty,
                c.reassembly.mem_cap_bytes,
                c.reassembly.timeout,
                c.reassembly.max_fragments,
            )
        };
        let before = tuned_on(&w.engines[0]);
        let want = (
            ClassPolicy::Pin,
            ClassPolicy::Duplicate,
            Duration::from_millis(9),
            2,
            Duration::from_millis(30),
            65_536,
            Duration::from_millis(40),
            32,
        );
        assert_ne!(before, want);
        // Worker 1 refuses: worker 0 goes back.
        let refusing = |e: &Worker, cmd, p| {
            if std::ptr::eq(e, &w.engines[1]) {
                return Some(Err(CommandError::InvalidValue("tx")));
            }
            apply(e, cmd, p)
        };
        apply_policies(&w.engines, refusing, ports, &new, &previous, &[1500]).unwrap_err();
        assert!(w.engines.iter().all(|e| tuned_on(e) == before), "put back");
        apply_policies(&w.engines, apply, ports, &new, &previous, &[1500]).unwrap();
        assert!(w.engines.iter().all(|e| tuned_on(e) == want));
        // Above the room the reassemblers were built with (64): refused by the engines.
        let err = apply_policies(&w.engines, apply, ports, &tuned(65), &new, &[1500])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("reassembly.max_fragments") && err.contains("restart"),
            "{err}"
        );
        assert!(
            w.engines.iter().all(|e| tuned_on(e) == want),
            "nothing changed"
        );
    }

    /// The rollback command is built before any worker switches: if the policies in force
    /// cannot be built again (here: a rule set the engine refuses, as a changed engine
    /// could), nothing is applied, instead of a worker switching and the rollback failing
    /// half-way, which left it on the new set while the others stayed on the old one.
    #[test]
    fn the_rollback_is_built_before_any_worker_switches() {
        let base = Config::parse(BASE).unwrap();
        let w = Workers::new(&base);
        // What the workers run, as far as apply_policies knows, with a rule that shadows
        // the first: it cannot be built again.
        let mut in_force = base.clone();
        in_force.rules.tx.push(in_force.rules.tx[0].clone());
        assert!(
            policies_command(&in_force, &[1500]).is_err(),
            "cannot be built"
        );
        let new = Config::parse(&BASE.replacen("set_dscp = 10", "set_dscp = 20", 1)).unwrap();
        let calls = RefCell::new(0);
        let refusing = |e: &Worker, cmd, _: Vec<TunnelPortPlan>| {
            *calls.borrow_mut() += 1;
            if std::ptr::eq(e, &w.engines[1]) {
                return Some(Err(CommandError::InvalidValue("tx")));
            }
            real(e, cmd)
        };
        let ports = |k: usize, to: &Plan, from: &Plan| w.ports(k, to, from);
        let err =
            apply_policies(&w.engines, refusing, ports, &new, &in_force, &[1500]).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("the policies in force (to roll back to): "),
            "{err:#}"
        );
        assert_eq!(*calls.borrow(), 0, "no worker was sent anything");
        assert!(w.on(&base), "every worker on the policies in force");
        assert!(w.port_calls.borrow().is_empty(), "no port opened");
    }

    /// The MTU warning counts the 802.1Q tag a `push_vlan` rule puts in a VXLAN tunnel's
    /// inner Ethernet header: vnic.mtu + 50 fits a 1500-byte NIC, + 54 does not.
    #[test]
    fn a_push_vlan_rule_adds_its_tag_to_the_tunnels_overhead() {
        let vxlan = BASE
            .replacen("mtu = 1400", "mtu = 1450", 1)
            .replacen(
                "kind = \"gre\"",
                "kind = \"vxlan\"\nvni = 42\ninner_dst_mac = \"02:00:00:00:00:0b\"",
                1,
            )
            .replacen("key = 1\n", "", 1);
        let untagged = Config::parse(&vxlan).unwrap();
        assert_eq!(
            tunnel_fits(&untagged, &[1500]),
            [(50, 1500, TunnelFit::Fits)]
        );
        // A rule with its own tunnel action, and one whose flows' class gives the tunnel.
        for rule in ["tunnel = \"t0\"\npush_vlan = 100", "push_vlan = 100"] {
            let text = vxlan.replacen("set_dscp = 10", rule, 1).replacen(
                "dst_ports = \"5000\"",
                "dst_ports = \"6000\"",
                1,
            );
            let tagged = Config::parse(&text).unwrap();
            assert_eq!(
                tunnel_fits(&tagged, &[1500]),
                [(54, 1500, TunnelFit::TooBig)],
                "{rule}"
            );
        }
        // GRE carries no tag; with df = false it fragments.
        let gre = Config::parse(&BASE.replacen("mtu = 1400", "mtu = 1480", 1)).unwrap();
        assert_eq!(
            tunnel_fits(&gre, &[1500]),
            [(28, 1500, TunnelFit::Fragments)]
        );
    }

    /// For a moment after a reload the workers may be on different rule tables: the
    /// merged counters follow each rule by id and name, never adding one table's rule to
    /// another table's rule at the same place.
    #[test]
    fn merged_rule_counters_follow_the_rule_not_its_place() {
        let old = json!({"rules": {"replaced": 1, "tx": [
            {"id": 0, "name": "mark", "packets": 3, "bytes": 300},
            {"id": 1, "name": "shed", "packets": 1, "bytes": 60},
        ]}});
        // This worker has taken the new table already: "mark" is gone.
        let new = json!({"rules": {"replaced": 2, "tx": [
            {"id": 0, "name": "shed", "packets": 5, "bytes": 500},
        ]}});
        let m = merge_json(old, &new);
        assert_eq!(m["rules"]["replaced"], 2);
        assert_eq!(
            m["rules"]["tx"],
            json!([
                {"id": 0, "name": "mark", "packets": 3, "bytes": 300},
                {"id": 1, "name": "shed", "packets": 1, "bytes": 60},
                {"id": 0, "name": "shed", "packets": 5, "bytes": 500},
            ])
        );
        // Tunnels too; and an entry only the second worker has is kept.
        let a = json!({"tunnels": [{"id": 0, "name": "t0", "tx_packets": 1}]});
        let b = json!({"tunnels": [
            {"id": 0, "name": "t9", "tx_packets": 7},
            {"id": 1, "name": "t0", "tx_packets": 2},
        ]});
        assert_eq!(
            merge_json(a, &b)["tunnels"],
            json!([
                {"id": 0, "name": "t0", "tx_packets": 1},
                {"id": 0, "name": "t9", "tx_packets": 7},
                {"id": 1, "name": "t0", "tx_packets": 2},
            ])
        );
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
