//! Serve the REST API over the tests' fake daemon (two NICs, a vNIC, a flow table, a policy
//! document, all in memory): for trying the API with curl before the daemon integration, and
//! for the worked session in docs/api.md.
//!
//! ```sh
//! cargo run -p braid-control --example fake_daemon -- /tmp/braid-api   # 127.0.0.1:7780
//! TOKEN=$(cat /tmp/braid-api/api.token)
//! curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:7780/v1/nics
//! ```
//!
//! The directory gets a new token file (mode 0600) unless it has one, and the audit log
//! `audit.jsonl`. A second argument sets the listening address. Ctrl-C stops it.

#[path = "../tests/support/fake.rs"]
mod fake;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use braid_control::{ApiState, ControlConfig, auth, bind, router, serve};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: fake_daemon DIR [ADDRESS:PORT]");
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = ControlConfig::new(dir.join("api.token"), dir.join("audit.jsonl"));
    if let Some(listen) = args.next() {
        match listen.parse() {
            Ok(a) => config.listen = a,
            Err(e) => {
                eprintln!("{listen:?}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let result = runtime.block_on(async {
        std::fs::create_dir_all(&dir)?;
        if !config.token_file.exists() {
            auth::generate_token_file(&config.token_file)?;
        }
        let state = ApiState::open(&config, Arc::new(fake::FakeDaemon::new(250)))?;
        let listener = bind(&config).await?;
        eprintln!(
            "fake braid API on http://{} (token in {}, audit log {})",
            listener.local_addr()?,
            config.token_file.display(),
            config.audit_log.display()
        );
        serve(listener, router(state), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake_daemon: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}
