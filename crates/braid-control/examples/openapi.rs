//! Print the API's OpenAPI document, or write it to `docs/openapi.json` (`--write`), which the
//! API tests compare with the code.
//!
//! ```sh
//! cargo run -p braid-control --example openapi              # print it
//! cargo run -p braid-control --example openapi -- --write   # update docs/openapi.json
//! ```
//!
//! `--write` refuses to change the document under an unchanged `info.version`: bump
//! `API_VERSION` (crates/braid-control/src/schema/mod.rs) first, or pass `--same-version`
//! for a change that does not alter the API's behaviour (descriptions, a fix before release).

use std::process::ExitCode;

fn main() -> ExitCode {
    let doc = match braid_control::openapi().to_pretty_json() {
        Ok(d) => d + "\n",
        Err(e) => {
            eprintln!("cannot serialise the OpenAPI document: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--write") {
        print!("{doc}");
        return ExitCode::SUCCESS;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    if old == doc {
        eprintln!("{path} is up to date");
        return ExitCode::SUCCESS;
    }
    let old_version = serde_json::from_str::<serde_json::Value>(&old)
        .ok()
        .and_then(|v| v["info"]["version"].as_str().map(str::to_owned));
    let version = braid_control::API_VERSION.to_string();
    if old_version.as_deref() == Some(version.as_str())
        && !args.iter().any(|a| a == "--same-version")
    {
        eprintln!(
            "the API document changed but API_VERSION is still {version}: bump it in \
             crates/braid-control/src/schema/mod.rs, or pass --same-version if the change \
             does not alter the API's behaviour"
        );
        return ExitCode::FAILURE;
    }
    if let Err(e) = std::fs::write(path, doc) {
        eprintln!("cannot write {path}: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("wrote {path} (API version {version})");
    ExitCode::SUCCESS
}
