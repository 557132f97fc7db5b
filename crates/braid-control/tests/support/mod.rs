//! The harness of the API tests: an [`Api`] is the router over a fresh [`fake::FakeDaemon`],
//! with a real token file (0600) and audit log in a directory of its own, and helpers to
//! send requests through `tower::ServiceExt::oneshot` as a given client.

#![allow(dead_code, unreachable_pub)]

pub mod fake;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use braid_control::{ApiState, ControlConfig, router};
use fake::FakeDaemon;
use tower::ServiceExt;

/// The token the tests' token file holds.
pub const TOKEN: &str = "test-token-0123456789abcdef0123456789abcdef";

/// The default client's address.
pub const CLIENT: &str = "127.0.0.1:40000";

/// One API under test.
pub struct Api {
    pub router: Router,
    pub fake: Arc<FakeDaemon>,
    pub dir: PathBuf,
    pub config: ControlConfig,
}

/// A response, body read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// The error object of an error response, checking its shape: exactly `code`,
    /// `message` and optionally `field`, all strings.
    pub fn error(&self) -> serde_json::Value {
        let v = self.json();
        let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["error"], "error shape: {v}");
        let e = v["error"].clone();
        let obj = e.as_object().expect("error object");
        assert!(obj["code"].is_string() && obj["message"].is_string(), "{v}");
        assert!(
            obj.keys()
                .all(|k| ["code", "message", "field"].contains(&k.as_str())),
            "{v}"
        );
        assert_eq!(
            self.headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
        );
        e
    }

    /// The error's code, checking the status too.
    pub fn code(&self, status: u16) -> String {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        self.error()["code"].as_str().expect("code").to_owned()
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Api {
    /// An API over a fake daemon with `flows` flows.
    pub fn new(flows: u64) -> Self {
        Self::with(flows, |_| {})
    }

    /// The same, with the config adjusted first.
    pub fn with(flows: u64, adjust: impl FnOnce(&mut ControlConfig)) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("braid-control-api-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let token_file = dir.join("api.token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let mut config = ControlConfig::new(token_file, dir.join("audit.jsonl"));
        adjust(&mut config);
        let fake = Arc::new(FakeDaemon::new(flows));
        let state = ApiState::open(&config, fake.clone()).expect("api state");
        Self {
            router: router(state),
            fake,
            dir,
            config,
        }
    }

    /// Send `req` as `client`.
    pub async fn send_as(&self, client: &str, mut req: Request<Body>) -> Resp {
        let addr: SocketAddr = client.parse().expect("client address");
        req.extensions_mut().insert(ConnectInfo(addr));
        let response = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .expect("body");
        Resp {
            status,
            headers,
            text: String::from_utf8(bytes.to_vec()).expect("UTF-8 body"),
        }
    }

    /// `method path` with the token and, if given, a JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        self.send_as(CLIENT, request(method, path, Some(TOKEN), body))
            .await
    }

    /// `GET path` with the token, expecting 200 and JSON.
    pub async fn get(&self, path: &str) -> serde_json::Value {
        let r = self.call("GET", path, None).await;
        assert_eq!(r.status, StatusCode::OK, "GET {path}: {}", r.text);
        r.json()
    }

    /// The audit log's lines as JSON.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.config.audit_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
            .collect()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A request; `token` becomes `Authorization: Bearer`, `body` a JSON body.
pub fn request(method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    match body {
        Some(body) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned())),
        None => b.body(Body::empty()),
    }
    .expect("request")
}
