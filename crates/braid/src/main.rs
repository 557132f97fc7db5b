//! The braid binary: command-line entry points.
//!
//! `braid demo` runs two braid engines against each other over simulated links (braid-sim)
//! and prints a report. The daemon (`braid run`), the testbed and the control CLI (`braid
//! ctl`, the `ctl` module) come with the Linux data path and the control plane.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant as WallClock;

mod api;
mod config;
mod ctl;
mod run;
mod testbed;
mod traffic;

use anyhow::{Context, Result};
use braid_sim::scenario::{Progress, Scenario, run};
use clap::{Parser, Subcommand};

/// braid: one virtual NIC woven out of several physical NICs.
///
/// braid assigns flows to NICs by capacity and live load, and stripes, splits or duplicates
/// their packets across the NICs; the far side reassembles, re-orders and de-duplicates them.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run two braid engines over simulated links and print a report (no root needed).
    ///
    /// The default scenario: three unequal links (100, 200 and 300 Mbit/s, with different
    /// delays), a duplicated, latency-critical market-data-like flow on the two fastest links,
    /// a striped bulk flow over all three, a flow of 9000-byte packets split across the
    /// 1500-byte links, and the 300 Mbit/s link failing half way. The simulation runs on a
    /// virtual clock, much faster than real time, and is deterministic for a given seed.
    ///
    /// The report gives utilisation per link, goodput per flow, reorder holds and gaps,
    /// latency percentiles, link failure detection times, and drops by reason.
    Demo {
        /// A scenario file (TOML) with other links and flows. `--print-scenario` shows the
        /// default one, which is a good starting point.
        #[arg(long, value_name = "FILE")]
        scenario: Option<PathBuf>,
        /// Print the default scenario as TOML and exit.
        #[arg(long)]
        print_scenario: bool,
        /// Override the scenario's random seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Don't show progress while running.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run the daemon: create the vNIC, open the NICs, and carry traffic until SIGINT or
    /// SIGTERM (needs root, or CAP_NET_ADMIN and CAP_NET_RAW).
    ///
    /// The config file (TOML) describes the vNIC (name, addresses, MTU, queues, RSS), the
    /// peer (role and pre-shared key file), the NICs (device, UDP addresses, capacity) and
    /// the flow classes; docs/config.md explains every field. Logs go to stderr; set
    /// RUST_LOG=debug for more. On exit every socket is closed and the vNIC is removed.
    ///
    /// SIGHUP reloads the policies: braid reads the file again and, if only the tunnels,
    /// QoS and rules sections changed, replaces them on every worker as one set, between two
    /// batches of packets (tunnels that stay keep their state; the sockets a new tunnel needs
    /// are opened first). An invalid file, or a change to another section (which needs a
    /// restart), is refused with an error in the log naming the field or section, and the
    /// policies in force stay. See "Reloading" in docs/config.md.
    ///
    /// With an [api] section it serves the REST API (docs/api.md) on 127.0.0.1:7780 by
    /// default, and keeps the policies set through it in a policies file that the next start
    /// reads.
    Run {
        /// The config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Build two hosts (namespaces `<name>-a`, `<name>-b`) joined by veth links, and run
    /// braid in each (root).
    Testbed(testbed::TestbedArgs),
    /// Generate and check test traffic: byte-exact TCP streams, sequenced UDP datagrams.
    Traffic(traffic::TrafficArgs),
    /// Control a running daemon through its REST API: NICs, flows, policies, statistics.
    ///
    /// Tables for people, or the API's JSON with --json. The daemon must serve the API (an
    /// [api] section in its config; docs/api.md, "CLI"). The API's URL and token file come
    /// from --api and --token-file (or BRAID_API and BRAID_TOKEN_FILE), else from the [api]
    /// section of the daemon's config file given with --config, else http://127.0.0.1:7780
    /// and the first of /etc/braid/api.token and /var/lib/braid/api.token that exists.
    #[command(after_help = ctl::EXAMPLES)]
    Ctl(ctl::CtlArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_command(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain, one cause a line, and no backtrace: these are errors for the
            // user to fix (a file that does not exist, a field out of range).
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run_command(command: Command) -> Result<()> {
    match command {
        Command::Demo {
            scenario,
            print_scenario,
            seed,
            quiet,
        } => demo(scenario, print_scenario, seed, quiet),
        Command::Run { config } => {
            init_logging();
            run::run(&config)
        }
        Command::Testbed(args) => testbed::run(args),
        Command::Traffic(args) => traffic::run(args),
        Command::Ctl(args) => ctl::run(args),
    }
}

/// Logs to stderr, `info` unless RUST_LOG says otherwise.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn demo(file: Option<PathBuf>, print: bool, seed: Option<u64>, quiet: bool) -> Result<()> {
    if print {
        print!("{}", Scenario::DEFAULT_TOML);
        return Ok(());
    }
    let mut scenario = match &file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read scenario file {}", path.display()))?;
            Scenario::from_toml(&text)
                .with_context(|| format!("scenario file {}", path.display()))?
        }
        None => Scenario::default_scenario(),
    };
    if let Some(seed) = seed {
        scenario.seed = seed;
    }
    let started = WallClock::now();
    let tty = std::io::stderr().is_terminal();
    let mut stderr = std::io::stderr();
    let report = run(&scenario, |p: &Progress| {
        if quiet {
            return;
        }
        let line = format!(
            "  t = {:>6.0} ms of {:.0} ms simulated | delivered {:>8} packets | {}",
            p.sim_time.as_secs_f64() * 1e3,
            p.duration.as_secs_f64() * 1e3,
            p.delivered_packets,
            p.note
        );
        let _ = if tty {
            write!(stderr, "\r{line:<110}")
        } else {
            writeln!(stderr, "{line}")
        };
    })
    .context("run scenario")?;
    if !quiet && tty {
        let _ = writeln!(stderr);
    }
    print!("{report}");
    println!(
        "simulated {:.2} s in {:.2} s of wall time ({:.1}x real time)",
        report.duration.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        report.duration.as_secs_f64() / started.elapsed().as_secs_f64().max(1e-9)
    );
    Ok(())
}
