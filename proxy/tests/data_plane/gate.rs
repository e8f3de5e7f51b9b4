//! Owned routes: the data plane asks its gate about every request that lands on one, on the
//! route that matched, whatever spelling of the path reached it; gantry's own cookies never
//! cross to an upstream in either direction.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gantry_proxy::gate::{AdmissionFuture, RouteOwner, UnroutedFuture};
use gantry_proxy::metrics::Metrics;
use gantry_proxy::private_cookies::PrivateCookies;
use gantry_proxy::server::{ConnInfo, ServeSettings, serve};
use gantry_proxy::{
    Admission, Gate, Lease, Proxy, ProxyConfig, Route, RouteChange, RoutePrefix, RouteTable, Target,
};
use http::{Request, Response};
use hyper::body::Incoming;
use proptest::prelude::*;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// A gate that admits a request when its `x-test-user` header names the route's owner, and
/// records every check it made.
#[derive(Debug, Default)]
struct RecordingGate {
    checked: Mutex<Vec<String>>,
    leases: Mutex<Vec<Arc<Lease>>>,
}

impl Gate for RecordingGate {
    fn admit<'a>(
        &'a self,
        request: &'a Request<Incoming>,
        _conn: &'a ConnInfo,
        owner: &'a RouteOwner,
        upgrade: bool,
    ) -> AdmissionFuture<'a> {
        Box::pin(async move {
            self.checked.lock().unwrap().push(owner.user.to_string());
            // Bytes, not text: the non-ASCII owner test sends its name raw.
            let caller = request.headers().get("x-test-user").map(|v| v.as_bytes());
            if caller != Some(owner.user.as_bytes()) {
                let mut refused = Response::new(gantry_proxy::errors::full_body("refused"));
                *refused.status_mut() = http::StatusCode::FORBIDDEN;
                return Admission::Refuse(refused);
            }
            let lease = upgrade.then(|| {
                let lease = Arc::new(Lease::new());
                self.leases.lock().unwrap().push(Arc::clone(&lease));
                lease
            });
            Admission::Pass(lease)
        })
    }

    fn unrouted<'a>(
        &'a self,
        _request: &'a Request<Incoming>,
        _conn: &'a ConnInfo,
        path: &'a str,
    ) -> UnroutedFuture<'a> {
        let user_path = path.starts_with("/user/");
        Box::pin(async move {
            user_path.then(|| {
                let mut response = Response::new(gantry_proxy::errors::full_body("the gate's 404"));
                *response.status_mut() = http::StatusCode::NOT_FOUND;
                response
            })
        })
    }
}

struct GatedProxy {
    addr: SocketAddr,
    table: Arc<RouteTable>,
    gate: Arc<RecordingGate>,
    metrics: Metrics,
}

impl GatedProxy {
    async fn start() -> Self {
        Self::start_with_tls(None).await
    }

    async fn start_with_tls(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let table = Arc::new(RouteTable::new(false));
        let gate = Arc::new(RecordingGate::default());
        let metrics = Metrics::new();
        let config = ProxyConfig {
            tls: tls.is_some(),
            ..ProxyConfig::default()
        };
        let settings = ServeSettings {
            max_header_bytes: config.max_header_bytes,
            header_timeout: config.header_timeout,
            shutdown_grace: config.shutdown_grace,
            max_connections: config.max_connections,
            tls,
        };
        let proxy = Proxy::new(Arc::clone(&table), config, metrics.clone())
            .with_gate(Arc::clone(&gate) as Arc<dyn Gate>)
            .with_private_cookies(PrivateCookies::new("gantry-"));
        tokio::spawn(serve(
            listener,
            Arc::new(proxy),
            settings,
            std::future::pending(),
        ));
        Self {
            addr,
            table,
            gate,
            metrics,
        }
    }

    fn owned(&self, prefix: &str, target: &str, user: &str) {
        let owner = RouteOwner {
            user: user.into(),
            server: "".into(),
        };
        self.table.apply(RouteChange::Upsert(Route::owned(
            RoutePrefix::parse(prefix, false).unwrap(),
            Target::parse(target).unwrap(),
            owner,
        )));
    }

    fn open(&self, prefix: &str, target: &str) {
        self.table.apply(RouteChange::Upsert(Route::new(
            RoutePrefix::parse(prefix, false).unwrap(),
            Target::parse(target).unwrap(),
            None,
        )));
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn checks(&self) -> Vec<String> {
        self.gate.checked.lock().unwrap().clone()
    }
}

/// Every spelling that decodes onto alice's route, in origin form.
const SPELLINGS: [&str; 10] = [
    "/user/alice/api",
    "/%75ser/alice/api",
    "/u%73er/alice/api",
    "/us%65r/alice/api",
    "/%75%73%65%72/alice/api",
    "/user/%61lice/api",
    "/user/%61%6C%69%63%65/api",
    "/user/%61%6c%69%63%65/api",
    "/user/alice",
    "/user/alice/",
];

#[tokio::test]
async fn every_spelling_of_an_owned_route_passes_the_gate_first() {
    let backend = EchoBackend::start().await;
    let proxy = GatedProxy::start().await;
    proxy.owned("/user/alice", &backend.url(), "alice");
    for path in SPELLINGS {
        let (status, _) = get(&proxy.url(path)).await;
        assert_eq!(status, 403, "{path} without credentials");
        let (status, _) = get_with(&proxy.url(path), &[("x-test-user", "bob")]).await;
        assert_eq!(status, 403, "{path} as bob");
    }
    assert_eq!(backend.hits(), 0, "nothing reached alice's server");
    assert_eq!(proxy.checks().len(), 2 * SPELLINGS.len());
    assert!(proxy.checks().iter().all(|owner| owner == "alice"));
    for path in SPELLINGS {
        let (status, _) = get_with(&proxy.url(path), &[("x-test-user", "alice")]).await;
        assert_eq!(status, 200, "{path} as alice");
    }
    assert_eq!(backend.hits(), SPELLINGS.len());
    assert_eq!(
        proxy.metrics.gate_refusals.get(),
        2 * SPELLINGS.len() as u64
    );
}

#[tokio::test]
async fn http2_over_tls_is_gated_on_the_route_that_matched() {
    use http_body_util::BodyExt;
    let backend = EchoBackend::start().await;
    let tls = crate::tls::self_signed();
    let proxy = GatedProxy::start_with_tls(Some(tls.acceptor)).await;
    proxy.owned("/user/alice", &backend.url(), "alice");
    let stream = crate::tls::connect(proxy.addr, &tls.cert, b"h2").await;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut send = |path: &str, user: Option<&str>| {
        let mut request = Request::get(format!("https://localhost{path}"));
        if let Some(user) = user {
            request = request.header("x-test-user", user);
        }
        sender.send_request(
            request
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
    };
    for path in ["/%75ser/alice/api", "/user/%61lice/api", "/user/alice/api"] {
        let response = send(path, None).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 403, "{path}");
        let response = send(path, Some("bob")).await.unwrap();
        assert_eq!(response.status(), 403, "{path} as bob");
    }
    assert_eq!(backend.hits(), 0);
    let response = send("/%75ser/alice/api", Some("alice")).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("/%75ser/alice/api"));
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn absolute_form_targets_are_gated_like_origin_form() {
    let backend = EchoBackend::start().await;
    let proxy = GatedProxy::start().await;
    proxy.owned("/user/alice", &backend.url(), "alice");
    for path in ["/%75ser/alice/api", "/user/alice/api"] {
        let request = format!(
            "GET http://{}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            proxy.addr, proxy.addr
        );
        let answer = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(status_of(&answer), 403, "{path}: {answer}");
    }
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn non_ascii_names_route_and_gate_on_their_decoded_form() {
    let backend = EchoBackend::start().await;
    let proxy = GatedProxy::start().await;
    proxy.owned("/user/秀樹", &backend.url(), "秀樹");
    let escaped = "/user/%E7%A7%80%E6%A8%B9/api";
    assert_eq!(get(&proxy.url(escaped)).await.0, 403);
    let lower = "/user/%e7%a7%80%e6%a8%b9/api";
    // The owner header is not ASCII: sent raw, as no client library would.
    let request = format!(
        "GET {lower} HTTP/1.1\r\nHost: x\r\nx-test-user: 秀樹\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn an_unrouted_user_path_gets_the_gates_answer_and_other_paths_the_404() {
    let proxy = GatedProxy::start().await;
    let (status, body) = get(&proxy.url("/%75ser/nobody/api")).await;
    assert_eq!((status, body.as_str()), (404, "the gate's 404"));
    let (status, body) = get(&proxy.url("/elsewhere")).await;
    assert_eq!(status, 404);
    assert_ne!(body, "the gate's 404");
    assert!(proxy.checks().is_empty(), "no route, no owner to check");
}

#[tokio::test]
async fn our_cookies_never_reach_an_upstream_on_owned_or_open_routes() {
    let backend = EchoBackend::start().await;
    let proxy = GatedProxy::start().await;
    proxy.owned("/user/alice", &backend.url(), "alice");
    proxy.open("/public", &backend.url());
    let cookie = "gantry-session=s3cret; _xsrf=nb; __Host-gantry-login=l";
    for (path, extra) in [
        ("/user/alice/api", Some(("x-test-user", "alice"))),
        ("/public/x", None),
    ] {
        let mut headers = vec![("cookie", cookie)];
        headers.extend(extra);
        let (status, body) = get_with(&proxy.url(path), &headers).await;
        assert_eq!(status, 200, "{path}");
        let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(echoed["headers"]["cookie"], "_xsrf=nb", "{path}");
        assert!(!body.contains("s3cret"), "{path}: {body}");
    }
}

#[tokio::test]
async fn an_upstream_cannot_set_our_cookies() {
    let backend = serve_backend(|_request: Request<Incoming>| async {
        Response::builder()
            .header("set-cookie", "gantry-session=planted; Path=/")
            .header(
                "set-cookie",
                "__Host-Gantry-Session=planted; Path=/; Secure",
            )
            .header("set-cookie", "_xsrf=ok; Path=/user/alice")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"hi")))
            .unwrap()
    })
    .await;
    let proxy = GatedProxy::start().await;
    proxy.open("/public", &format!("http://{backend}"));
    let response = client()
        .request(
            Request::get(proxy.url("/public/x"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let set: Vec<&str> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set, ["_xsrf=ok; Path=/user/alice"]);
    assert_eq!(proxy.metrics.blocked_set_cookies.get(), 2);
}

#[tokio::test]
async fn a_tunnel_closes_when_the_lease_of_its_credential_ends() {
    let backend = ws_echo_backend().await;
    let proxy = GatedProxy::start().await;
    proxy.owned("/user/alice", &format!("http://{backend}"), "alice");
    let request = http::Request::get(format!("ws://{}/%75ser/alice/ws", proxy.addr))
        .header("x-test-user", "alice")
        .header("host", proxy.addr.to_string())
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));
    let lease = proxy.gate.leases.lock().unwrap().pop().expect("a lease");
    lease.end();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(message)) if message.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the tunnel closed when its lease ended");
}

/// A path segment spelled any way: literal, each byte escaped, or a mix.
fn spelled(segment: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<(bool, bool)>(), segment.len()).prop_map(move |choices| {
        segment
            .bytes()
            .zip(choices)
            .map(|(byte, (escape, upper))| match (escape, upper) {
                (false, _) => (byte as char).to_string(),
                (true, true) => format!("%{byte:02X}"),
                (true, false) => format!("%{byte:02x}"),
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the request target, nothing reaches an owned route's upstream unless the
    /// gate checked that route's owner and admitted the request (this gate admits nobody
    /// without the owner header, and none is sent).
    #[test]
    fn no_request_reaches_an_owned_upstream_without_its_owners_check(
        user in spelled("user"),
        name in prop_oneof![spelled("alice"), spelled("bob"), Just("carol".to_owned())],
        tail in prop_oneof![
            Just(String::new()),
            Just("/".to_owned()),
            Just("/api/x".to_owned()),
            Just("/%2e%2e/bob".to_owned()),
            Just("/..%2Fbob".to_owned()),
            Just("//x".to_owned()),
        ],
        absolute in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let alice = EchoBackend::start().await;
            let bob = EchoBackend::start().await;
            let proxy = GatedProxy::start().await;
            proxy.owned("/user/alice", &alice.url(), "alice");
            proxy.owned("/user/bob", &bob.url(), "bob");
            let path = format!("/{user}/{name}{tail}");
            let target = if absolute { format!("http://{}{path}", proxy.addr) } else { path.clone() };
            let request = format!(
                "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                proxy.addr
            );
            let answer = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
            let status = status_of(&answer);
            prop_assert!(status == 400 || status == 403 || status == 404, "{target}: {answer}");
            prop_assert_eq!(alice.hits() + bob.hits(), 0, "{}", target);
            // A refusal by the gate names the owner of the route the path decoded onto.
            if status == 403 {
                let decoded = gantry_proxy::path::canonical_path(&path).unwrap();
                let owner = decoded.split('/').nth(2).unwrap().to_owned();
                prop_assert_eq!(proxy.checks(), vec![owner]);
            }
            Ok(())
        })?;
    }
}
