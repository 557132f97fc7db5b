//! `braid ctl`: the command-line client of the REST API (docs/api.md, "CLI"): NICs, flows,
//! policies and statistics of a running `braid run`, as tables for people or as the API's
//! JSON (`--json`) for scripts.
//!
//! What this module owns: the commands and their options (clap), what each sends, and how
//! its answer is shown. It speaks only HTTP to the daemon, and reads answers with the API's
//! own schema types (braid-control's `schema`), so the CLI cannot drift from the server; the
//! daemon validates every change (the CLI checks only what it must turn into a request: a
//! rate's units, a file's syntax). Files: `client.rs` the HTTP side and errors, `render.rs`
//! the tables, `policy.rs` policy files and their TOML, `json.rs` the layout of `--json`.
//!
//! Output goes through [`Out`], which treats a closed pipe (`braid ctl flows | head`) as the
//! end of the output, not an error, and never panics.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use braid_control::schema::{
    AdminState, Flow, FlowMove, FlowPage, Nic, NicUpdate, PolicySectionName, Stats,
};
use clap::{Args, Subcommand, ValueEnum};

mod client;
mod json;
mod policy;
mod render;

use client::{Client, Endpoint, Method, parse, path_segment};

/// `braid ctl --help`'s examples.
pub(crate) const EXAMPLES: &str = "Examples:
  braid ctl nics
  braid ctl --config /etc/braid/braid.toml flows --direction tx --limit 20
  braid ctl policy get > policies.toml && braid ctl policy apply policies.toml
  braid ctl stats --watch";

/// Most flows `braid ctl flows` fetches (pages of up to 1000 each).
const MAX_FLOWS: u32 = 1_000_000;

/// Flows per API page (the API's maximum).
const MAX_PAGE: u32 = 1000;

/// `braid ctl`'s options and command.
#[derive(Debug, Args)]
pub(crate) struct CtlArgs {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: CtlCommand,
}

/// Options of every `braid ctl` command (they may come before or after the command).
#[derive(Debug, Args)]
struct GlobalOpts {
    /// The API's URL [default: the --config file's [api] listen, else http://127.0.0.1:7780].
    #[arg(long, global = true, env = "BRAID_API", value_name = "URL")]
    api: Option<String>,
    /// The bearer token's file (its first line is the token) [default: the --config file's
    /// [api] token_file, else the first of /etc/braid/api.token and /var/lib/braid/api.token
    /// that exists].
    #[arg(long, global = true, env = "BRAID_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The daemon's config file (`braid run --config`): its [api] section gives the URL and
    /// the token file.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the API's JSON (pretty) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a request after this long: `10s`, `500ms`, `2` (seconds).
    #[arg(long, global = true, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// The physical NICs: state, capacity, RTT, loss, counters, flows; change one.
    ///
    /// Without a subcommand, a table of every NIC (counters since the daemon started; `braid
    /// ctl stats` shows rates).
    #[command(
        after_help = "Examples:\n  braid ctl nics\n  braid ctl nics show link0\n  braid ctl nics set link0 --capacity 150mbit\n  braid ctl nics set link1 --admin down"
    )]
    Nics {
        #[command(subcommand)]
        action: Option<NicsAction>,
    },
    /// The live flow table, filtered and paged; show or move one flow.
    ///
    /// Without a subcommand, a table of the flows that match every filter given, in flow id
    /// order, fetched page by page up to --limit.
    #[command(
        after_help = "Examples:\n  braid ctl flows --direction tx --port 6000\n  braid ctl flows --nic link0 --limit 20\n  braid ctl flows move 2989204674 --nic link2 --pin"
    )]
    #[command(args_conflicts_with_subcommands = true)]
    Flows {
        #[command(flatten)]
        filter: FlowFilter,
        #[command(subcommand)]
        action: Option<FlowsAction>,
    },
    /// The policies in force (rules, QoS, tunnels, default policy, reorder, fragmentation,
    /// reassembly): read, replace, reset.
    ///
    /// The policy document has the config file's schema: `policy get` prints TOML that can
    /// be pasted into the config file, and `policy apply` takes it back (or JSON). Changes
    /// are validated and applied by the daemon live and atomically; an error names the field.
    #[command(
        after_help = "Examples:\n  braid ctl policy get > policies.toml\n  $EDITOR policies.toml && braid ctl policy apply policies.toml\n  braid ctl policy get rules\n  braid ctl policy set rules rules.toml\n  braid ctl policy delete qos"
    )]
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Statistics: per-NIC rates and link measurements, reorder and reassembly, busiest
    /// flows, drops by reason.
    ///
    /// Rates are over the daemon's last measurement interval (one second). With --watch the
    /// table is redrawn every SECS seconds until Ctrl-C (or --count refreshes); if the daemon
    /// stops answering, braid ctl stops with an error. With --json --watch, each refresh is
    /// one line of JSON.
    #[command(
        after_help = "Examples:\n  braid ctl stats\n  braid ctl stats --watch\n  braid ctl stats --watch 5 --count 12 --json > stats.jsonl"
    )]
    Stats {
        /// Redraw every SECS seconds (1 to 3600; default 1) until Ctrl-C.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1",
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        watch: Option<u64>,
        /// With --watch: stop after this many refreshes.
        #[arg(long, requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum NicsAction {
    /// One NIC.
    #[command(after_help = "Example:\n  braid ctl nics show link0")]
    Show {
        /// The NIC's name.
        name: String,
    },
    /// Change a NIC's capacity and/or administrative state (one change: both or neither).
    ///
    /// `--admin down` drains the NIC's flows to the others first; the daemon refuses to take
    /// down the last NIC in use. Changes last until the daemon stops.
    #[command(
        after_help = "Examples:\n  braid ctl nics set link0 --capacity 150mbit\n  braid ctl nics set link0 --capacity 1G --admin up"
    )]
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true).args(["capacity", "admin"]))]
    Set {
        /// The NIC's name.
        name: String,
        /// New capacity: `100mbit`, `2.5gbit`, `100M` (M = Mbit/s; k, G, T too) or bit/s;
        /// 1kbit to 10tbit.
        #[arg(long, value_name = "RATE", value_parser = parse_capacity)]
        capacity: Option<u64>,
        /// `up` or `down` (drain the NIC, then take it out of use).
        #[arg(long, value_enum)]
        admin: Option<AdminArg>,
    },
}

/// `--admin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AdminArg {
    /// In use.
    Up,
    /// Drained and out of use.
    Down,
}

/// The filters of `GET /v1/flows` (all must match) and the number of flows to show.
#[derive(Debug, Args)]
struct FlowFilter {
    /// `tx` (vNIC → NICs) or `rx` (NICs → vNIC) only.
    #[arg(long, value_enum)]
    direction: Option<DirectionArg>,
    /// Flows that use this NIC.
    #[arg(long, value_name = "NAME")]
    nic: Option<String>,
    /// Flows of this flow class.
    #[arg(long, value_name = "NAME")]
    class: Option<String>,
    /// `udp`, `tcp` or a protocol number.
    #[arg(long)]
    protocol: Option<String>,
    /// Flows with this source or destination address.
    #[arg(long, value_name = "IP")]
    address: Option<String>,
    /// Flows with this source or destination port.
    #[arg(long)]
    port: Option<u16>,
    /// Show at most this many flows (fetched in pages of up to 1000).
    #[arg(long, default_value_t = 100, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_FLOWS)))]
    limit: u32,
}

/// `--direction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DirectionArg {
    /// vNIC → NICs.
    Tx,
    /// NICs → vNIC.
    Rx,
}

#[derive(Debug, Subcommand)]
enum FlowsAction {
    /// One flow.
    #[command(after_help = "Example:\n  braid ctl flows show 2989204674")]
    Show {
        /// The flow's id (the ID column of `braid ctl flows`).
        id: u64,
    },
    /// Move a TX flow to one NIC, through the flow controller's admission.
    ///
    /// A NIC without room, or down, refuses it and the flow stays where it was. Without
    /// --pin the flow controller may rebalance it later; with --pin it stays on the NIC
    /// (until that NIC fails).
    #[command(after_help = "Example:\n  braid ctl flows move 2989204674 --nic link2 --pin")]
    Move {
        /// The flow's id.
        id: u64,
        /// The NIC to move it to.
        #[arg(long, value_name = "NAME")]
        nic: String,
        /// Hold it there: no rebalancing moves it.
        #[arg(long)]
        pin: bool,
    },
}

/// A policy section by its name in the config file and the API (`rules`, `qos`, ...): the
/// names braid-control's schema lists, so a new section needs no change here.
fn section_parser() -> impl clap::builder::TypedValueParser<Value = PolicySectionName> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(PolicySectionName::ALL.map(PolicySectionName::as_str))
        .try_map(|name: String| {
            PolicySectionName::ALL
                .into_iter()
                .find(|s| s.as_str() == name)
                .ok_or("not a policy section")
        })
}

#[derive(Debug, Subcommand)]
enum PolicyAction {
    /// Print the policies in force (or one section) as TOML, or the API's JSON with --json.
    ///
    /// The TOML is the config file's schema: paste it into the config file, or edit it and
    /// give it to `policy apply`. Empty lists and the default QoS are left out (a missing
    /// section is its default).
    #[command(
        after_help = "Examples:\n  braid ctl policy get > policies.toml\n  braid ctl policy get reorder"
    )]
    Get {
        /// Only this section.
        #[arg(value_parser = section_parser())]
        section: Option<PolicySectionName>,
    },
    /// Replace one section from a file; the other sections stay.
    ///
    /// A TOML file holds the section as `policy get SECTION` prints it (`[[rules]]` entries,
    /// a `[reorder]` table) and nothing else; a JSON file (`.json`, or content starting with
    /// `{`/`[` that is not TOML) is the section's body as `policy get SECTION --json` prints
    /// it. FILE `-` reads standard input.
    #[command(after_help = "Example:\n  braid ctl policy set rules rules.toml")]
    Set {
        /// The section.
        #[arg(value_parser = section_parser())]
        section: PolicySectionName,
        /// The file (`-`: standard input).
        file: PathBuf,
    },
    /// Replace the whole policy document from a file, atomically: a section left out goes
    /// back to its default.
    ///
    /// FILE is TOML (the config file's [[rules]], [qos], [[tunnels]], [policy], [reorder])
    /// or JSON (the API's document), by its extension (.toml, .json) or else its content;
    /// `-` reads standard input. The daemon checks it as it checks its config file and
    /// names the field at fault; a refusal leaves every section in force. Prints the
    /// sections that changed.
    #[command(
        after_help = "Example:\n  braid ctl policy get > p.toml && $EDITOR p.toml && braid ctl policy apply p.toml"
    )]
    Apply {
        /// The file (`-`: standard input).
        file: PathBuf,
    },
    /// Put one section back to its default (no rules, no tunnels, the default QoS classes,
    /// `stripe`, holds of 5-25 ms, ...; docs/config.md gives each default).
    #[command(after_help = "Example:\n  braid ctl policy delete qos")]
    Delete {
        /// The section.
        #[arg(value_parser = section_parser())]
        section: PolicySectionName,
    },
}

/// `--timeout`: `10s`, `500ms`, `2` (seconds); more than 0, at most an hour.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1.0)
    };
    let secs = num
        .trim()
        .parse::<f64>()
        .ok()
        .map(|n| n * scale)
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
        .ok_or_else(|| format!("{text:?} is not a duration like 10s, 500ms or 2, up to 3600s"))?;
    Ok(Duration::from_secs_f64(secs))
}

/// `--capacity`: the config file's rates (`100mbit`, `2.5gbit`, bit/s), and the short `100M`
/// (`k`, `M`, `G`, `T` for kbit, Mbit, Gbit, Tbit), parsed by the config's own parser.
fn parse_capacity(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("auto") {
        return Err("`auto` is set in the config file only; the API takes a rate".to_owned());
    }
    // `100M` → `100mbit`: one unit letter right after the number (`150mbit` stays).
    let mut chars = t.chars().rev();
    let long = match (chars.next(), chars.next()) {
        (Some(c), Some(before))
            if matches!(c.to_ascii_lowercase(), 'k' | 'm' | 'g' | 't')
                && (before.is_ascii_digit() || before == '.') =>
        {
            format!("{}{}bit", &t[..t.len() - 1], c.to_ascii_lowercase())
        }
        _ => t.to_owned(),
    };
    crate::config::parse_rate(&long).map_err(|_| {
        format!("{text:?} is not a rate like 100mbit, 2.5gbit or 100M, from 1kbit to 10tbit")
    })
}

/// Standard output for results: a closed pipe ends the output quietly.
#[derive(Debug)]
struct Out {
    closed: bool,
}

impl Out {
    fn print(&mut self, text: &str) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(e).context("write to standard output"),
        }
    }

    /// A JSON answer, unchanged but for its layout: pretty, or on one line.
    fn json(&mut self, body: &str, pretty: bool) -> Result<()> {
        json::check(body).context("the API's answer is not JSON")?;
        let mut text = json::layout(body, pretty);
        text.push('\n');
        self.print(&text)
    }
}

/// Run a `braid ctl` command.
///
/// # Errors
/// Whatever stopped it, as a message for the operator (`client::CtlError` and the file
/// errors): the API's error with its field, a refused connection, a bad token.
pub(crate) fn run(args: CtlArgs) -> Result<()> {
    let g = &args.global;
    let endpoint = Endpoint::resolve(
        g.api.as_deref(),
        g.token_file.as_deref(),
        g.config.as_deref(),
    )?;
    let client = Client::new(&endpoint, g.timeout)?;
    let mut out = Out { closed: false };
    let json = g.json;
    match args.command {
        CtlCommand::Nics { action: None } => {
            let body = client.get("/v1/nics", &[])?;
            if json {
                return out.json(&body, true);
            }
            let nics: Vec<Nic> = parse(&url(&client, "/v1/nics"), &body)?;
            out.print(&render::nics_table(&nics))
        }
        CtlCommand::Nics {
            action: Some(NicsAction::Show { name }),
        } => {
            let path = format!("/v1/nics/{}", path_segment(&name));
            let body = client.get(&path, &[])?;
            show_nic(&client, &mut out, json, &path, &body)
        }
        CtlCommand::Nics {
            action:
                Some(NicsAction::Set {
                    name,
                    capacity,
                    admin,
                }),
        } => {
            let update = NicUpdate {
                capacity_bps: capacity,
                admin: admin.map(|a| match a {
                    AdminArg::Up => AdminState::Up,
                    AdminArg::Down => AdminState::Down,
                }),
            };
            let path = format!("/v1/nics/{}", path_segment(&name));
            let body = client.send(Method::Patch, &path, Some(&without_nulls(&update)?))?;
            show_nic(&client, &mut out, json, &path, &body)
        }
        CtlCommand::Flows {
            filter,
            action: None,
        } => list_flows(&client, &mut out, json, &filter),
        CtlCommand::Flows {
            action: Some(FlowsAction::Show { id }),
            ..
        } => {
            let path = format!("/v1/flows/{id}");
            let body = client.get(&path, &[])?;
            show_flow(&client, &mut out, json, &path, &body)
        }
        CtlCommand::Flows {
            action: Some(FlowsAction::Move { id, nic, pin }),
            ..
        } => {
            let path = format!("/v1/flows/{id}");
            let request = serde_json::to_value(FlowMove { nic, pin })?;
            let body = client.send(Method::Post, &path, Some(&request))?;
            show_flow(&client, &mut out, json, &path, &body)
        }
        CtlCommand::Policy { action } => run_policy(&client, &mut out, json, action),
        CtlCommand::Stats { watch: None, .. } => {
            let body = client.get("/v1/stats", &[])?;
            if json {
                return out.json(&body, true);
            }
            let stats: Stats = parse(&url(&client, "/v1/stats"), &body)?;
            out.print(&render::stats_text(&stats))
        }
        CtlCommand::Stats {
            watch: Some(secs),
            count,
        } => watch_stats(&client, &mut out, json, Duration::from_secs(secs), count),
    }
}

/// `value` as a JSON object without its `null` fields: a field left out of a `PATCH` keeps
/// its value, and the API refuses `null` (it is not a value).
fn without_nulls(value: &impl serde::Serialize) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(value).context("encode the request")?;
    if let serde_json::Value::Object(map) = &mut v {
        map.retain(|_, field| !field.is_null());
    }
    Ok(v)
}

fn url(client: &Client, path: &str) -> String {
    format!("{}{path}", client.base())
}

fn show_nic(client: &Client, out: &mut Out, json: bool, path: &str, body: &str) -> Result<()> {
    if json {
        return out.json(body, true);
    }
    let nic: Nic = parse(&url(client, path), body)?;
    out.print(&render::nics_table(std::slice::from_ref(&nic)))
}

fn show_flow(client: &Client, out: &mut Out, json: bool, path: &str, body: &str) -> Result<()> {
    if json {
        return out.json(body, true);
    }
    let flow: Flow = parse(&url(client, path), body)?;
    out.print(&render::flows_table(std::slice::from_ref(&flow)))
}

/// The query of one page: the filters, the page's size and the cursor.
fn flow_query(filter: &FlowFilter, page: u32, cursor: Option<&str>) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(d) = filter.direction {
        q.push((
            "direction",
            if d == DirectionArg::Tx { "tx" } else { "rx" }.to_owned(),
        ));
    }
    for (key, value) in [
        ("nic", &filter.nic),
        ("class", &filter.class),
        ("protocol", &filter.protocol),
        ("address", &filter.address),
    ] {
        if let Some(v) = value {
            q.push((key, v.clone()));
        }
    }
    if let Some(p) = filter.port {
        q.push(("port", p.to_string()));
    }
    q.push(("limit", page.to_string()));
    if let Some(c) = cursor {
        q.push(("cursor", c.to_owned()));
    }
    q
}

/// `braid ctl flows`: pages until `--limit` flows or the last page. `--json` prints one
/// page object (the API's `FlowPage`) holding every flow fetched, unchanged, and the cursor
/// to go on from (`null`: there are no more).
fn list_flows(client: &Client, out: &mut Out, json: bool, filter: &FlowFilter) -> Result<()> {
    /// A page with its flows as the API wrote them.
    #[derive(serde::Deserialize)]
    struct RawPage {
        flows: Vec<Box<serde_json::value::RawValue>>,
    }
    let page_url = url(client, "/v1/flows");
    let mut flows: Vec<Flow> = Vec::new();
    let mut raw: Vec<Box<serde_json::value::RawValue>> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let taken = u32::try_from(flows.len()).unwrap_or(u32::MAX);
        let remaining = filter.limit.saturating_sub(taken);
        let query = flow_query(filter, remaining.min(MAX_PAGE), cursor.as_deref());
        let body = client.get("/v1/flows", &query)?;
        let page: FlowPage = parse(&page_url, &body)?;
        if json {
            raw.extend(parse::<RawPage>(&page_url, &body)?.flows);
        }
        let got = page.flows.len();
        flows.extend(page.flows);
        cursor = page.next_cursor;
        // An empty page with a cursor would loop forever: stop there too.
        if cursor.is_none() || got == 0 || flows.len() >= filter.limit as usize {
            break;
        }
    }
    if json {
        // One page holding every flow fetched, each as the API wrote it, and the cursor to
        // go on from.
        let list: Vec<&str> = raw.iter().map(|f| f.get()).collect();
        let cursor = serde_json::to_string(&cursor).context("encode the cursor")?;
        let page = format!(
            "{{\"flows\":[{}],\"next_cursor\":{cursor}}}",
            list.join(",")
        );
        return out.json(&page, true);
    }
    if flows.is_empty() {
        return out.print("no flows match\n");
    }
    out.print(&render::flows_table(&flows))?;
    if cursor.is_some() {
        eprintln!(
            "(the first {} flows; more match: raise --limit or add filters)",
            flows.len()
        );
    }
    Ok(())
}

fn run_policy(client: &Client, out: &mut Out, json: bool, action: PolicyAction) -> Result<()> {
    match action {
        PolicyAction::Get { section: None } => {
            let body = client.get("/v1/policies", &[])?;
            if json {
                return out.json(&body, true);
            }
            let doc = policy::document(&url(client, "/v1/policies"), &body)?;
            out.print(&policy::document_toml(&doc).context("format the policies as TOML")?)
        }
        PolicyAction::Get {
            section: Some(section),
        } => {
            let path = format!("/v1/policies/{}", section.as_str());
            let body = client.get(&path, &[])?;
            if json {
                return out.json(&body, true);
            }
            out.print(&policy::section_toml(&url(client, &path), section, &body)?)
        }
        PolicyAction::Set { section, file } => {
            let name = section;
            let content = policy::read_file(&file)?;
            let request = policy::section_body(&file, content, name)?;
            let path = format!("/v1/policies/{}", name.as_str());
            let before: serde_json::Value = serde_json::from_str(&client.get(&path, &[])?)
                .context("the API's answer is not JSON")?;
            let body = client.send(Method::Put, &path, Some(&request))?;
            if json {
                return out.json(&body, true);
            }
            let after: serde_json::Value =
                serde_json::from_str(&body).context("the API's answer is not JSON")?;
            let what = if before == after {
                "unchanged"
            } else {
                "changed"
            };
            out.print(&format!("applied: {} {what}\n", name.as_str()))
        }
        PolicyAction::Apply { file } => {
            let content = policy::read_file(&file)?;
            let doc_url = url(client, "/v1/policies");
            let before = policy::document(&doc_url, &client.get("/v1/policies", &[])?)?;
            let body = client.send(Method::Put, "/v1/policies", Some(&content.value))?;
            if json {
                return out.json(&body, true);
            }
            let after = policy::document(&doc_url, &body)?;
            let changed: Vec<&str> = before
                .changed_sections(&after)
                .into_iter()
                .map(PolicySectionName::as_str)
                .collect();
            if changed.is_empty() {
                out.print("applied: no section changed\n")
            } else {
                out.print(&format!("applied: changed {}\n", changed.join(", ")))
            }
        }
        PolicyAction::Delete { section } => {
            let name = section.as_str();
            let body = client.send(Method::Delete, &format!("/v1/policies/{name}"), None)?;
            if json {
                return out.json(&body, true);
            }
            out.print(&format!("deleted: {name} is back to its default\n"))
        }
    }
}

/// `stats --watch`: a refresh every `every` until SIGINT/SIGTERM (exit 0), `count`
/// refreshes, or an error (the daemon went away: exit non-zero with that error). A second
/// Ctrl-C while a request is in flight ends the process at once.
fn watch_stats(
    client: &Client,
    out: &mut Out,
    json: bool,
    every: Duration,
    count: Option<u64>,
) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The first signal sets `stop`; a second one, with `stop` set, exits (130).
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&stop)))
            .context("install the signal handlers")?;
    }
    let tty = std::io::stdout().is_terminal() && !json;
    let stats_url = url(client, "/v1/stats");
    let mut refreshes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let body = match client.get("/v1/stats", &[]) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("braid ctl stats --watch: stopped after {refreshes} refreshes");
                return Err(e.into());
            }
        };
        if stop.load(Ordering::Relaxed) {
            break;
        }
        refreshes += 1;
        if json {
            out.json(&body, false)?;
        } else {
            let stats: Stats = parse(&stats_url, &body)?;
            let mut text = String::new();
            if tty {
                // Home the cursor and clear the screen: the table redraws in place.
                text.push_str("\x1b[H\x1b[2J");
            } else if refreshes > 1 {
                text.push('\n');
            }
            text.push_str(&format!(
                "braid ctl stats: {} at {} UTC, every {} s (Ctrl-C stops)\n\n",
                client.base(),
                utc_time_of_day(SystemTime::now()),
                every.as_secs()
            ));
            text.push_str(&render::stats_text(&stats));
            out.print(&text)?;
        }
        if out.closed || count.is_some_and(|c| refreshes >= c) {
            break;
        }
        // Sleep in short steps so Ctrl-C is seen within 100 ms.
        let mut slept = Duration::ZERO;
        while slept < every && !stop.load(Ordering::Relaxed) {
            let step = (every - slept).min(Duration::from_millis(100));
            std::thread::sleep(step);
            slept += step;
        }
    }
    Ok(())
}

/// `HH:MM:SS` of `t` in UTC.
fn utc_time_of_day(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `braid ctl ...` as main.rs mounts it.
    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Top {
        Ctl(CtlArgs),
    }

    fn parse_args(args: &[&str]) -> Result<CtlArgs, clap::Error> {
        let argv = ["braid", "ctl"].iter().chain(args).copied();
        Wrap::try_parse_from(argv).map(|w| match w.command {
            Top::Ctl(c) => c,
        })
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let a = parse_args(&[
            "--api",
            "http://h:1",
            "nics",
            "--json",
            "--timeout",
            "500ms",
        ])
        .expect("parse");
        assert_eq!(a.global.api.as_deref(), Some("http://h:1"));
        assert!(a.global.json);
        assert_eq!(a.global.timeout, Duration::from_millis(500));
        assert!(matches!(a.command, CtlCommand::Nics { action: None }));
        let a = parse_args(&["stats"]).expect("parse");
        assert_eq!(a.global.timeout, Duration::from_secs(10));
        assert!(!a.global.json);
    }

    #[test]
    fn nics_set_needs_a_change_and_parses_rates() {
        let a = parse_args(&[
            "nics",
            "set",
            "link0",
            "--capacity",
            "100M",
            "--admin",
            "down",
        ])
        .expect("parse");
        let CtlCommand::Nics {
            action:
                Some(NicsAction::Set {
                    name,
                    capacity,
                    admin,
                }),
        } = a.command
        else {
            panic!("{:?}", a.command)
        };
        assert_eq!(name, "link0");
        assert_eq!(capacity, Some(100_000_000));
        assert_eq!(admin, Some(AdminArg::Down));
        let e = parse_args(&["nics", "set", "link0"]).expect_err("nothing to change");
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let e = parse_args(&["nics", "set", "a", "--capacity", "fast"]).expect_err("bad rate");
        assert!(e.to_string().contains("is not a rate like 100mbit"), "{e}");
        let e = parse_args(&["nics", "set", "a", "--admin", "sideways"]).expect_err("bad admin");
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn capacity_takes_config_rates_and_short_units() {
        assert_eq!(parse_capacity("100M"), Ok(100_000_000));
        assert_eq!(parse_capacity("2.5G"), Ok(2_500_000_000));
        assert_eq!(parse_capacity("800k"), Ok(800_000));
        assert_eq!(parse_capacity("1t"), Ok(1_000_000_000_000));
        assert_eq!(parse_capacity("150mbit"), Ok(150_000_000));
        assert_eq!(parse_capacity("1tbit"), Ok(1_000_000_000_000));
        assert_eq!(parse_capacity("2.5Gbit"), Ok(2_500_000_000));
        assert_eq!(parse_capacity("1000000"), Ok(1_000_000));
        assert!(
            parse_capacity("auto")
                .expect_err("auto")
                .contains("config file only")
        );
        assert!(parse_capacity("999").is_err(), "below 1kbit");
        assert!(parse_capacity("11T").is_err(), "above 10tbit");
        assert!(parse_capacity("M").is_err());
        assert!(parse_capacity("").is_err());
    }

    #[test]
    fn timeouts_parse_with_units_and_bounds() {
        assert_eq!(parse_timeout("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "nan", "inf", "3601", "5m", ""] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flows_filters_become_the_query_and_subcommands_exclude_them() {
        let a = parse_args(&[
            "flows",
            "--direction",
            "tx",
            "--port",
            "6000",
            "--nic",
            "a",
            "--limit",
            "2500",
        ])
        .expect("parse");
        let CtlCommand::Flows {
            filter,
            action: None,
        } = a.command
        else {
            panic!("{:?}", a.command)
        };
        assert_eq!(filter.limit, 2500);
        let q = flow_query(&filter, 1000, Some("c1"));
        let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            q,
            [
                ("direction", "tx"),
                ("nic", "a"),
                ("port", "6000"),
                ("limit", "1000"),
                ("cursor", "c1")
            ]
        );
        assert!(parse_args(&["flows", "--limit", "0"]).is_err());
        assert!(parse_args(&["flows", "--limit", "1000001"]).is_err());
        let a = parse_args(&["flows", "move", "42", "--nic", "b", "--pin"]).expect("move");
        assert!(matches!(
            a.command,
            CtlCommand::Flows {
                action: Some(FlowsAction::Move { id: 42, ref nic, pin: true }),
                ..
            } if nic == "b"
        ));
        assert!(
            parse_args(&["flows", "move", "42"]).is_err(),
            "--nic is needed"
        );
        assert!(parse_args(&["flows", "--nic", "a", "move", "42", "--nic", "b"]).is_err());
    }

    #[test]
    fn policy_and_stats_arguments() {
        let a = parse_args(&["policy", "set", "rules", "r.toml"]).expect("set");
        assert!(matches!(
            a.command,
            CtlCommand::Policy {
                action: PolicyAction::Set {
                    section: PolicySectionName::Rules,
                    ..
                }
            }
        ));
        assert!(
            parse_args(&["policy", "set", "vnic", "r.toml"]).is_err(),
            "not a section"
        );
        assert!(parse_args(&["policy", "get"]).is_ok());
        let a = parse_args(&["stats", "--watch"]).expect("watch");
        assert!(matches!(
            a.command,
            CtlCommand::Stats {
                watch: Some(1),
                count: None
            }
        ));
        let a = parse_args(&["stats", "--watch", "5", "--count", "2"]).expect("watch 5");
        assert!(matches!(
            a.command,
            CtlCommand::Stats {
                watch: Some(5),
                count: Some(2)
            }
        ));
        assert!(
            parse_args(&["stats", "--count", "2"]).is_err(),
            "--count needs --watch"
        );
        assert!(parse_args(&["stats", "--watch", "0"]).is_err());
    }

    #[test]
    fn a_nic_update_sends_only_what_changes() {
        let update = NicUpdate {
            capacity_bps: None,
            admin: Some(AdminState::Down),
        };
        assert_eq!(
            without_nulls(&update).expect("json"),
            serde_json::json!({"admin": "down"})
        );
    }

    #[test]
    fn time_of_day_is_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3600 * 13 + 60 * 7 + 9);
        assert_eq!(utc_time_of_day(t), "13:07:09");
    }
}
