//! schemathesis (PyPI) against the API over the fake daemon, served for real on 127.0.0.1
//! port 0: every operation of `/v1/openapi.json`, every check (no 5xx, responses that match
//! their schemas, status codes, content types and headers the document declares, requests
//! the schema forbids refused with a 4xx, ones it allows accepted, authentication not
//! ignored, ...), all four phases (examples, coverage, fuzzing, stateful), a fixed seed and a
//! bounded number of cases (`tests/schemathesis.toml`). The test fails with schemathesis's
//! report if it finds anything, and if schemathesis is not installed (`.ci/run` installs it;
//! `BRAID_SCHEMATHESIS` points elsewhere).
//!
//! The failed-authentication limit is lifted for this server (a config value, not the
//! default): schemathesis sends hundreds of requests without the token or with a wrong one
//! on purpose, and must see each one's 401, not the 429 that the limit rightly gives after
//! ten. The limit itself is tested in `tests/api.rs`.

mod support;

#[path = "support/schemathesis.rs"]
mod schemathesis;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::schemathesis;
    use super::support::{Api, TOKEN};

    #[test]
    fn schemathesis_finds_no_server_error_and_no_schema_violation() {
        // Fail at once, before serving, if it is not installed.
        schemathesis::executable();
        let api = Api::with(40, |c| {
            c.listen = "127.0.0.1:0".parse().expect("addr");
            c.auth_failure_burst = u32::MAX;
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = api.router.clone();
        let config = api.config.clone();
        let server = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = braid_control::bind(&config).await.expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("the test waits for the address");
                braid_control::serve(listener, router, async move {
                    let _ = stopped.await;
                })
                .await
            })
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the server listens");

        let result = schemathesis::Run {
            url: format!("http://{addr}"),
            token: TOKEN,
            seed: 1,
            dir: &api.dir,
            nics: &["a", "b"],
            vnics: &["braid0"],
            // The fake's TX flows (even ids; support/fake.rs).
            flows: &[2, 4, 6, 8, 10, 12, 14, 16],
            wrapper: &[],
            timeout: Duration::from_secs(600),
        }
        .run();

        stop.send(()).expect("the server runs");
        server
            .join()
            .expect("the server thread")
            .expect("serves without error");
        match result {
            Ok(report) => println!("{report}"),
            Err(report) => panic!("{report}"),
        }
        // The run reached the daemon: changes went through (and were audited).
        assert!(
            *api.fake.applied.lock().expect("lock") > 0,
            "no policy change was applied"
        );
        assert!(!api.audit().is_empty(), "no change request was audited");
    }
}
