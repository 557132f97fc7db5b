//! Running schemathesis (PyPI) against a served API: where it is installed and at which
//! version, its command line (settings in `tests/schemathesis.toml`), a bounded wait, and the
//! check that it tested every operation of the document. Shared by the fake-daemon test
//! (`crates/braid-control/tests/schemathesis.rs`) and the real-daemon test
//! (`crates/braid/tests/schemathesis.rs`, which includes this file by path).
//!
//! It owns no assertion on the API: the callers fail with the report this returns.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The schemathesis release the runs are made with (`.ci/run` installs it): another release
/// generates other cases, so the result would not be the one docs/api.md reports.
pub const VERSION: &str = "4.32.5";

/// Where `.ci/run` installs it (a venv of Debian's python3).
pub const DEFAULT_PATH: &str = "/opt/braid-venv/bin/schemathesis";

/// The settings (`--config-file`): cases per operation, phases, checks, warnings.
const CONFIG: &str = include_str!("../schemathesis.toml");

/// The schemathesis executable: `$BRAID_SCHEMATHESIS`, or [`DEFAULT_PATH`]. (Options added
/// with `$BRAID_SCHEMATHESIS_ARGS` go to `schemathesis run`.)
///
/// # Panics
/// If it is not there or is not [`VERSION`], saying how to install it: the test must not
/// pass without having run.
pub fn executable() -> PathBuf {
    let path = std::env::var_os("BRAID_SCHEMATHESIS")
        .map_or_else(|| PathBuf::from(DEFAULT_PATH), PathBuf::from);
    let install = format!(
        "run `bash .ci/run` as root, or `/usr/bin/python3 -m venv /opt/braid-venv && \
         /opt/braid-venv/bin/pip install schemathesis=={VERSION}`, or point \
         BRAID_SCHEMATHESIS at a schemathesis {VERSION}"
    );
    let version = Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "schemathesis not installed ({}: {e}): {install}",
                path.display()
            )
        });
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.status.success() && text.trim_end().ends_with(&format!("version {VERSION}")),
        "{} is not schemathesis {VERSION} ({}{}): {install}",
        path.display(),
        text.trim(),
        String::from_utf8_lossy(&version.stderr).trim()
    );
    path
}

/// The operations (method and path) of the API's OpenAPI document.
pub fn operations() -> usize {
    let doc = serde_json::to_value(braid_control::openapi()).expect("the document is JSON");
    doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| {
            item.as_object().map_or(0, |methods| {
                methods
                    .keys()
                    .filter(|m| ["get", "put", "post", "delete", "patch"].contains(&m.as_str()))
                    .count()
            })
        })
        .sum()
}

/// One run.
pub struct Run<'a> {
    /// The API's base URL, `http://127.0.0.1:7780`; the document is `<url>/v1/openapi.json`.
    pub url: String,
    /// The bearer token.
    pub token: &'a str,
    /// Hypothesis's seed: the same seed, release and API give the same cases.
    pub seed: u64,
    /// A directory of the caller's for the config file and schemathesis's output.
    pub dir: &'a Path,
    /// The daemon's NIC names, vNIC names and some of its TX flows' ids: `[parameters]` in
    /// the config file draws names and ids in paths and bodies from them (dictionaries
    /// `nics`, `names` and `flows`), so that operations reach the daemon's logic.
    pub nics: &'a [&'a str],
    /// See `nics`.
    pub vnics: &'a [&'a str],
    /// See `nics`.
    pub flows: &'a [u64],
    /// A command to run schemathesis under (`ip netns exec NS`), or nothing.
    pub wrapper: &'a [&'a str],
    /// Schemathesis is killed (and the run failed) after this long.
    pub timeout: Duration,
}

impl Run<'_> {
    /// Run schemathesis: `Ok(report)` when it found nothing and tested every operation of
    /// the document, `Err(report)` otherwise (the report says what it found).
    pub fn run(&self) -> Result<String, String> {
        let exe = executable();
        let config = self.dir.join("schemathesis.toml");
        let quoted =
            |names: &[&str]| -> Vec<String> { names.iter().map(|n| format!("{n:?}")).collect() };
        let nics = quoted(self.nics);
        let names = [nics.clone(), quoted(self.vnics)].concat();
        let flows: Vec<String> = self.flows.iter().map(u64::to_string).collect();
        let text = format!(
            "{CONFIG}\n[dictionaries.nics]\nvalues = [{}]\n\n[dictionaries.names]\nvalues = \
             [{}]\n\n[dictionaries.flows]\nvalues = [{}]\n",
            nics.join(", "),
            names.join(", "),
            flows.join(", ")
        );
        std::fs::write(&config, text).expect("write schemathesis.toml");
        let out_path = self.dir.join("schemathesis.out");
        let out = std::fs::File::create(&out_path).expect("schemathesis output file");
        let (program, mut args) = match self.wrapper.split_first() {
            Some((p, rest)) => (
                PathBuf::from(p),
                rest.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            ),
            None => (exe.clone(), Vec::new()),
        };
        if !self.wrapper.is_empty() {
            args.push(exe.to_string_lossy().into_owned());
        }
        args.extend([
            "--config-file".to_owned(),
            config.to_string_lossy().into_owned(),
            "run".to_owned(),
            format!("{}/v1/openapi.json", self.url),
            "--header".to_owned(),
            format!("Authorization: Bearer {}", self.token),
            "--seed".to_owned(),
            self.seed.to_string(),
            // Every operation: schemathesis leaves out the one its document came from
            // (`GET /v1/openapi.json`) unless a filter selects it.
            "--include-path-regex".to_owned(),
            "^/".to_owned(),
            "--workers".to_owned(),
            "1".to_owned(),
            "--no-color".to_owned(),
            "--output-truncate".to_owned(),
            "false".to_owned(),
        ]);
        // More options for a look at a run (`--report har --report-dir /tmp/st`), never
        // needed for the verdict.
        if let Ok(extra) = std::env::var("BRAID_SCHEMATHESIS_ARGS") {
            args.extend(extra.split_whitespace().map(str::to_owned));
        }
        let mut child = Command::new(&program)
            .args(&args)
            .current_dir(self.dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("output file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for schemathesis") {
                break Some(status);
            }
            if started.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let report = std::fs::read_to_string(&out_path).unwrap_or_default();
        let Some(status) = status else {
            return Err(format!(
                "schemathesis did not finish within {:?}; its output so far:\n{report}",
                self.timeout
            ));
        };
        if !status.success() {
            return Err(format!("schemathesis failed ({status}):\n{report}"));
        }
        let want = operations();
        let tested = format!("Tested: {want}\n");
        let selected = format!("Selected: {want}/{want}\n");
        if !(report.contains(&tested) && report.contains(&selected)) {
            return Err(format!(
                "schemathesis passed but did not test the document's {want} operations:\n{report}"
            ));
        }
        Ok(report)
    }
}
