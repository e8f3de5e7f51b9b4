//! The gate of `gantry up` on the real Docker engine: no spelling of a user's server path
//! reaches the server without the owner's credentials; gantry's cookies never reach it and it
//! cannot set them; callers come from memory, yet logout, revocation, deletion and demotion
//! act on the very next request, and another gantry process on the same database honours a
//! revocation within the documented bound.

use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context, ensure};
use gantry_integration_tests::{DockerCleanup, TestGantry, ensure_busybox_image, poll_until};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) const PASSWORD: &str = "correct horse battery";

/// The bound the callers cache documents (`hub::callers::STALE_AFTER`), with room for a
/// loaded CI machine to schedule the refresh: a correctness bound, not a benchmark.
const CROSS_PROCESS_BOUND: Duration = Duration::from_secs(5 + 5);

/// A gantry whose one profile runs busybox httpd serving "hello <user>", and `echo.sh`, a
/// CGI script that prints the `Cookie` header it received and tries to set gantry's session
/// cookie.
fn gantry_with_echo(instance: &str, image: &str) -> anyhow::Result<TestGantry> {
    let script = "d=/www/user/$JUPYTERHUB_USER && mkdir -p $d && \
                  echo hello $JUPYTERHUB_USER > $d/index.html && \
                  ln -s /bin/busybox /www/sh && echo '*.sh:/www/sh' > /www/httpd.conf && \
                  printf '%s\\n' 'echo Content-Type: text/plain' \
                  'echo Set-Cookie: gantry-session=planted\\\\; Path=/' \
                  'echo Set-Cookie: __Host-Gantry-Session=planted\\\\; Path=/\\\\; Secure' \
                  'echo Set-Cookie: nb=ok\\\\; Path=/' 'echo' 'echo cookie=$HTTP_COOKIE' \
                  > $d/echo.sh && chmod +x $d/echo.sh && \
                  exec /bin/busybox httpd -f -p 8888 -h /www -c /www/httpd.conf";
    TestGantry::new(&format!(
        "[docker]\ninstance = \"{instance}\"\nnetwork = \"{instance}\"\n\
         [profiles.tiny]\ndisplay_name = \"Tiny\"\ndescription = \"busybox httpd\"\n\
         image = \"{image}\"\ncmd = [\"/bin/busybox\", \"sh\", \"-c\", \"{script}\"]\n"
    ))
}

/// Starts `user`'s default server on the tiny profile with `client`'s session and waits
/// until the owner reaches it.
/// POSTs `body` as JSON with `client`'s session and CSRF token.
async fn post_json(
    gantry: &TestGantry,
    client: &Client,
    xsrf: &str,
    path: &str,
    body: Value,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{}{path}", gantry.url()))
        .header("origin", gantry.url())
        .header("x-xsrftoken", xsrf)
        .json(&body)
        .send()
        .await
}

pub(crate) async fn start_server(
    gantry: &TestGantry,
    client: &Client,
    xsrf: &str,
    user: &str,
    path: &str,
) -> anyhow::Result<()> {
    let body = json!({"profile": "tiny"});
    let started = post_json(
        gantry,
        client,
        xsrf,
        &format!("/hub/api/users/{path}/server"),
        body,
    )
    .await?;
    ensure!(
        started.status() == 202,
        "start {user}: {}",
        started.status()
    );
    let url = format!("{}/user/{path}/", gantry.url());
    poll_until(
        &format!("{user}'s server"),
        Instant::now() + Duration::from_secs(120),
        || async {
            let page = client.get(&url).send().await?;
            Ok((page.status() == 200).then_some(()))
        },
    )
    .await
    .with_context(|| gantry.log_text())
}

pub(crate) async fn token_of(
    gantry: &TestGantry,
    client: &Client,
    xsrf: &str,
    user: &str,
) -> anyhow::Result<(String, String)> {
    let body = json!({"note": "gate test"});
    let created = post_json(
        gantry,
        client,
        xsrf,
        &format!("/hub/api/users/{user}/tokens"),
        body,
    )
    .await?;
    ensure!(
        created.status() == 201,
        "token for {user}: {}",
        created.status()
    );
    let created: Value = created.json().await?;
    Ok((
        created["token"].as_str().context("token")?.to_owned(),
        match &created["id"] {
            Value::String(id) => id.clone(),
            other => other.to_string(),
        },
    ))
}

/// Sends `request` on a new connection and returns the whole answer (the server closes).
async fn raw(gantry: &TestGantry, request: String) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gantry.port())).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Spellings of alice's server path that decode onto her route.
const SPELLINGS: [&str; 10] = [
    "/user/alice/",
    "/user/alice",
    "/%75ser/alice/",
    "/u%73er/alice/",
    "/us%65r/alice/",
    "/%75%73%65%72/alice/",
    "/%75%73%65%72/alice/index.html",
    "/user/%61lice/",
    "/user/%61%6C%69%63%65/",
    "/user/%61%6c%69%63%65/index.html",
];

#[tokio::test]
async fn no_spelling_of_a_server_path_reaches_it_without_the_owners_credentials()
-> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-gate-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    let mut gantry = gantry_with_echo(&instance, image)?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.add_user("bob", PASSWORD, false)?;
    gantry.add_user("zoë", PASSWORD, false)?;
    gantry.start().await?;
    let (alice, alice_xsrf) = gantry.login("alice", PASSWORD).await?;
    start_server(&gantry, &alice, &alice_xsrf, "alice", "alice").await?;
    let (bob, bob_xsrf) = gantry.login("bob", PASSWORD).await?;
    let (bob_token, _) = token_of(&gantry, &bob, &bob_xsrf, "bob").await?;
    let anonymous = gantry_integration_tests::browser_client()?;

    for path in SPELLINGS {
        let url = format!("{}{path}", gantry.url());
        let page = anonymous.get(&url).send().await?;
        assert_eq!(page.status(), 303, "{path} anonymous");
        let location = page.headers()["location"].to_str()?.to_owned();
        assert!(
            location.starts_with("/hub/login?next="),
            "{path}: {location}"
        );
        let page = bob.get(&url).send().await?;
        assert_eq!(page.status(), 404, "{path} as bob");
        assert!(!page.text().await?.contains("hello alice"));
        let page = Client::new()
            .get(&url)
            .header("authorization", format!("token {bob_token}"))
            .send()
            .await?;
        assert_eq!(page.status(), 404, "{path} with bob's token");
        // The owner's own escaped spelling works (httpd redirects the bare folder path).
        let page = alice.get(&url).send().await?;
        if path.ends_with("alice") {
            assert_eq!(page.status(), 302, "{path} as alice");
        } else {
            assert_eq!(page.status(), 200, "{path} as alice");
            assert_eq!(page.text().await?.trim(), "hello alice", "{path}");
        }
    }

    // Absolute-form targets and WebSocket upgrades, anonymously: never the server's answer.
    let port = gantry.port();
    for path in ["/%75ser/alice/", "/user/alice/"] {
        let absolute = raw(
            &gantry,
            format!(
                "GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
        .await?;
        assert!(absolute.starts_with("HTTP/1.1 303"), "{path}: {absolute}");
        let upgrade = raw(
            &gantry,
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            ),
        )
        .await?;
        assert!(!upgrade.starts_with("HTTP/1.1 101"), "{path}: {upgrade}");
        assert!(!upgrade.contains("hello alice"), "{path}: {upgrade}");
    }
    // Paths the data plane refuses as ambiguous never reach anyone's server either.
    // Sent raw: a client library would normalise them first.
    for path in [
        "/user/bob/%2e%2e/alice/",
        "/user%2Falice/",
        "/user/alice%2F/",
    ] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        let answer = raw(&gantry, request).await?;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }

    // A non-ASCII name: its escaped path routes and gates on the decoded name.
    let (zoe, zoe_xsrf) = gantry.login("zoë", PASSWORD).await?;
    start_server(&gantry, &zoe, &zoe_xsrf, "zoë", "zo%C3%AB").await?;
    let page = zoe
        .get(format!("{}/user/zo%c3%ab/index.html", gantry.url()))
        .send()
        .await?;
    assert_eq!(page.status(), 200);
    assert_eq!(page.text().await?.trim(), "hello zoë");
    let page = alice
        .get(format!("{}/user/zo%C3%AB/", gantry.url()))
        .send()
        .await?;
    assert_eq!(page.status(), 404, "alice may not reach zoë's server");

    // gantry's cookies never reach the server, and the server cannot set them.
    let echo = alice
        .get(format!("{}/%75ser/alice/echo.sh", gantry.url()))
        .send()
        .await?;
    assert_eq!(echo.status(), 200);
    let set: Vec<String> = echo
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        set,
        ["nb=ok; Path=/"],
        "only the server's own cookie is set"
    );
    let body = echo.text().await?;
    assert!(body.contains("cookie="), "{body}");
    assert!(
        !body.contains("gantry-"),
        "the server saw gantry's cookies: {body}"
    );
    Ok(())
}

async fn whoami(gantry: &TestGantry, credential: &Credential) -> anyhow::Result<StatusCode> {
    let request = Client::new().get(format!("{}/hub/api/user", gantry.url()));
    let request = match credential {
        Credential::Cookie(session) => {
            request.header("cookie", format!("gantry-session={session}"))
        }
        Credential::Token(token) => request.header("authorization", format!("token {token}")),
    };
    Ok(request.send().await?.status())
}

enum Credential {
    Cookie(String),
    Token(String),
}

/// Logs `user` in and returns the client, its CSRF token and the session cookie's value.
pub(crate) async fn session_of(
    gantry: &TestGantry,
    user: &str,
) -> anyhow::Result<(Client, String, String)> {
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let client = Client::builder()
        .cookie_provider(std::sync::Arc::clone(&jar))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let xsrf = gantry.login_with(&client, user, PASSWORD).await?;
    let url: reqwest::Url = gantry.url().parse()?;
    let cookies = reqwest::cookie::CookieStore::cookies(&*jar, &url).context("no cookies")?;
    let session = cookies
        .to_str()?
        .split("; ")
        .find_map(|pair| pair.strip_prefix("gantry-session="))
        .context("no session cookie")?
        .to_owned();
    Ok((client, xsrf, session))
}

#[tokio::test]
async fn logout_revocation_deletion_and_demotion_act_on_the_next_request() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new("")?;
    gantry.add_user("root", PASSWORD, true)?;
    gantry.add_user("ops", PASSWORD, true)?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let (root, root_xsrf, _) = session_of(&gantry, "root").await?;
    let (alice, alice_xsrf, alice_session) = session_of(&gantry, "alice").await?;
    let (token, token_id) = token_of(&gantry, &alice, &alice_xsrf, "alice").await?;
    let session = Credential::Cookie(alice_session);
    let token = Credential::Token(token);
    // Cached now.
    assert_eq!(whoami(&gantry, &session).await?, 200);
    assert_eq!(whoami(&gantry, &token).await?, 200);

    // Revoking the token: the very next request with it is refused.
    let revoked = alice
        .delete(format!(
            "{}/hub/api/users/alice/tokens/{token_id}",
            gantry.url()
        ))
        .header("origin", gantry.url())
        .header("x-xsrftoken", &alice_xsrf)
        .send()
        .await?;
    assert_eq!(revoked.status(), 204);
    assert_eq!(whoami(&gantry, &token).await?, 403);

    // Logout: the very next request with the session is refused.
    let logout = alice
        .post(format!("{}/hub/logout", gantry.url()))
        .header("origin", gantry.url())
        .form(&[("_xsrf", alice_xsrf.as_str())])
        .send()
        .await?;
    assert_eq!(logout.status(), 303);
    assert_eq!(whoami(&gantry, &session).await?, 403);

    // Demotion: ops's admin-only request passes, then is refused right after.
    let (ops, _, ops_session) = session_of(&gantry, "ops").await?;
    let ops_session = Credential::Cookie(ops_session);
    let users = format!("{}/hub/api/users", gantry.url());
    assert_eq!(ops.get(&users).send().await?.status(), 200);
    let demoted = root
        .patch(format!("{}/hub/api/users/ops", gantry.url()))
        .header("origin", gantry.url())
        .header("x-xsrftoken", &root_xsrf)
        .json(&json!({"admin": false}))
        .send()
        .await?;
    assert_eq!(demoted.status(), 200);
    assert_eq!(ops.get(&users).send().await?.status(), 403);
    assert_eq!(whoami(&gantry, &ops_session).await?, 200);

    // Deletion: the deleted user's session is refused on the next request.
    let deleted = root
        .delete(format!("{}/hub/api/users/ops", gantry.url()))
        .header("origin", gantry.url())
        .header("x-xsrftoken", &root_xsrf)
        .send()
        .await?;
    assert_eq!(deleted.status(), 204);
    assert_eq!(whoami(&gantry, &ops_session).await?, 403);
    Ok(())
}

/// Polls `credential` on `gantry` until it is refused; returns how long that took.
async fn refused_within(
    gantry: &TestGantry,
    credential: &Credential,
    bound: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    poll_until(
        "the revocation to reach the other process",
        started + bound,
        || async { Ok((whoami(gantry, credential).await? == 403).then_some(())) },
    )
    .await?;
    Ok(started.elapsed())
}

/// Two gantry processes on one database: `database_url` for both (None: the first's SQLite).
async fn two_processes(database_url: Option<String>) -> anyhow::Result<(TestGantry, TestGantry)> {
    let mut first = TestGantry::new(
        &database_url
            .as_ref()
            .map(|url| format!("database_url = \"{url}\"\n"))
            .unwrap_or_default(),
    )?;
    first.add_user("alice", PASSWORD, false)?;
    first.start().await?;
    let url = database_url.unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            first.data_dir().join("gantry.sqlite").display()
        )
    });
    let mut second = TestGantry::new(&format!("database_url = \"{url}\"\n"))?;
    second.start().await?;
    Ok((first, second))
}

async fn another_process_honours_revocations(database_url: Option<String>) -> anyhow::Result<()> {
    let (first, second) = two_processes(database_url).await?;
    let (alice, alice_xsrf, session) = session_of(&first, "alice").await?;
    let (token, _) = token_of(&first, &alice, &alice_xsrf, "alice").await?;
    let session = Credential::Cookie(session);
    let token = Credential::Token(token);
    // The second process caches both.
    assert_eq!(whoami(&second, &session).await?, 200);
    assert_eq!(whoami(&second, &token).await?, 200);
    // The first process revokes everything of alice's; the second honours it in the bound.
    let revoked = alice
        .post(format!("{}/hub/api/users/alice/logout", first.url()))
        .header("origin", first.url())
        .header("x-xsrftoken", &alice_xsrf)
        .send()
        .await?;
    assert_eq!(revoked.status(), 200);
    let took = refused_within(&second, &session, CROSS_PROCESS_BOUND).await?;
    eprintln!("the second process refused the revoked session after {took:?}");
    refused_within(&second, &token, CROSS_PROCESS_BOUND).await?;

    // The `gantry user revoke` command is another process too.
    let (_, _, session) = session_of(&first, "alice").await?;
    let session = Credential::Cookie(session);
    assert_eq!(whoami(&first, &session).await?, 200);
    let (code, out, err) = first.command(&["user", "revoke", "alice"], "")?;
    ensure!(code == 0, "gantry user revoke: {out}{err}");
    let took = refused_within(&first, &session, CROSS_PROCESS_BOUND).await?;
    eprintln!("gantry up refused the session revoked by the CLI after {took:?}");
    Ok(())
}

#[tokio::test]
async fn a_second_process_on_the_same_sqlite_database_honours_a_revocation_within_the_bound()
-> anyhow::Result<()> {
    another_process_honours_revocations(None).await
}

#[tokio::test]
async fn a_second_process_on_the_same_postgresql_honours_a_revocation_within_the_bound()
-> anyhow::Result<()> {
    let Some(url) = fresh_postgres_schema()? else {
        ensure!(
            std::env::var_os("CI").is_none(),
            "GANTRY_TEST_POSTGRES_URL is not set under CI (.ci/postgres.sh provides it)"
        );
        eprintln!("skipped: GANTRY_TEST_POSTGRES_URL is not set");
        return Ok(());
    };
    another_process_honours_revocations(Some(url)).await
}

/// A URL of a fresh schema on `GANTRY_TEST_POSTGRES_URL`'s database (made with `psql`), or
/// `None` when the variable is not set.
fn fresh_postgres_schema() -> anyhow::Result<Option<String>> {
    let Ok(url) = std::env::var("GANTRY_TEST_POSTGRES_URL") else {
        return Ok(None);
    };
    let schema = format!("gantry_gate_{}", std::process::id());
    let status = std::process::Command::new("psql")
        .arg(&url)
        .args([
            "-q",
            "-c",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
        ])
        .status()
        .context("cannot run psql")?;
    ensure!(
        status.success(),
        "psql could not create the schema {schema}"
    );
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(Some(format!(
        "{url}{separator}options[search_path]={schema}"
    )))
}

/// A server on `addr` that answers a plain request with 200 and echoes WebSocket messages:
/// the notebook servers of the tunnel test relay their port 8888 to it.
async fn ws_echo_server(listener: tokio::net::TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            // Peek at the head without consuming it: tungstenite reads it again.
            let mut head = vec![0u8; 4096];
            let mut seen = 0;
            for _ in 0..50 {
                seen = stream.peek(&mut head).await.unwrap_or(0);
                if head[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let text = String::from_utf8_lossy(&head[..seen]).to_ascii_lowercase();
            if !text.contains("upgrade: websocket") {
                let mut stream = stream;
                let mut drain = vec![0u8; seen];
                let _ = stream.read_exact(&mut drain).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
                return;
            }
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            use futures_util::{SinkExt, StreamExt};
            while let Some(Ok(message)) = ws.next().await {
                if message.is_close() || ws.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `path` through gantry with one credential header.
async fn open_socket(
    gantry: &TestGantry,
    path: &str,
    header: (&'static str, String),
) -> anyhow::Result<Socket> {
    open_socket_with(gantry, path, &[header])
        .await
        .with_context(|| format!("WebSocket to {path}"))
}

/// Opens a WebSocket to `path` through gantry with `headers`; a refused handshake is the
/// error (`tungstenite::Error::Http` carries the response).
pub(crate) async fn open_socket_with(
    gantry: &TestGantry,
    path: &str,
    headers: &[(&'static str, String)],
) -> anyhow::Result<Socket, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut request = format!("ws://127.0.0.1:{}{path}", gantry.port()).into_client_request()?;
    for (name, value) in headers {
        let value = HeaderValue::from_str(value)
            .map_err(|e| tokio_tungstenite::tungstenite::Error::HttpFormat(e.into()))?;
        request.headers_mut().append(*name, value);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

/// Whether the socket still echoes.
pub(crate) async fn echoes(socket: &mut Socket) -> bool {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    if socket.send(Message::text("ping")).await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(10), socket.next()).await,
        Ok(Some(Ok(message))) if message == Message::text("ping")
    )
}

/// Waits (up to `bound`) for the socket to be closed by gantry.
async fn closed_within(socket: &mut Socket, bound: Duration) -> bool {
    use futures_util::StreamExt;
    tokio::time::timeout(bound, async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(message)) if message.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A started gantry (extra `[hub]` keys `hub_keys`, accounts `users` as (name, admin), all
/// with [`PASSWORD`]) whose one profile, `tiny`, relays the server's port 8888 to a WebSocket
/// echo server ([`ws_echo_server`]) the test runs on the network's gateway (the host address
/// the server's JUPYTERHUB_API_URL names).
pub(crate) async fn relay_gantry(
    instance: &str,
    hub_keys: &str,
    users: &[(&str, bool)],
) -> anyhow::Result<TestGantry> {
    let image = ensure_busybox_image()?;
    let echo_port = gantry_integration_tests::free_port()?;
    let script = format!(
        "gw=$(echo $JUPYTERHUB_API_URL | cut -d/ -f3 | cut -d: -f1) && \
         exec /bin/busybox nc -ll -p 8888 -e /bin/busybox nc $gw {echo_port}"
    );
    let mut gantry = TestGantry::new(&format!(
        "{hub_keys}\n[docker]\ninstance = \"{instance}\"\nnetwork = \"{instance}\"\n\
         [profiles.tiny]\ndisplay_name = \"Tiny\"\ndescription = \"a relay\"\n\
         image = \"{image}\"\ncmd = [\"/bin/busybox\", \"sh\", \"-c\", \"{script}\"]\n"
    ))?;
    for (name, admin) in users {
        gantry.add_user(name, PASSWORD, *admin)?;
    }
    gantry.start().await?;
    let gateway = std::process::Command::new("docker")
        .args([
            "network",
            "inspect",
            instance,
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
        ])
        .output()
        .context("docker network inspect")?;
    let gateway = String::from_utf8(gateway.stdout)?.trim().to_owned();
    ensure!(!gateway.is_empty(), "no gateway for the network {instance}");
    let listener = tokio::net::TcpListener::bind((gateway.as_str(), echo_port)).await?;
    tokio::spawn(ws_echo_server(listener));
    Ok(gantry)
}

#[tokio::test]
async fn each_tunnel_ends_with_the_credential_that_opened_it() -> anyhow::Result<()> {
    let instance = format!("gt-tunnel-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    let gantry = relay_gantry(
        &instance,
        "",
        &[("root", true), ("ops", true), ("bob", false)],
    )
    .await?;

    let (bob, bob_xsrf, bob_session) = session_of(&gantry, "bob").await?;
    start_server(&gantry, &bob, &bob_xsrf, "bob", "bob").await?;
    let (root, root_xsrf, root_session) = session_of(&gantry, "root").await?;
    let (_, ops_xsrf, ops_session) = session_of(&gantry, "ops").await?;
    let (bob_token, bob_token_id) = token_of(&gantry, &bob, &bob_xsrf, "bob").await?;
    let cookie = |session: &str| ("cookie", format!("gantry-session={session}"));

    // Bob's own sockets, by session and by token, and the admins' sockets into his server.
    let mut by_bob = open_socket(&gantry, "/%75ser/bob/ws", cookie(&bob_session)).await?;
    let mut by_token = open_socket(
        &gantry,
        "/user/bob/ws",
        ("authorization", format!("token {bob_token}")),
    )
    .await?;
    let mut by_root = open_socket(&gantry, "/user/bob/ws", cookie(&root_session)).await?;
    let mut by_ops = open_socket(&gantry, "/user/bob/ws", cookie(&ops_session)).await?;
    for socket in [&mut by_bob, &mut by_token, &mut by_root, &mut by_ops] {
        assert!(echoes(socket).await);
    }

    // The admin root logs out: root's socket into bob's server closes, nobody else's.
    let logout = root
        .post(format!("{}/hub/logout", gantry.url()))
        .header("origin", gantry.url())
        .form(&[("_xsrf", root_xsrf.as_str())])
        .send()
        .await?;
    assert_eq!(logout.status(), 303);
    assert!(
        closed_within(&mut by_root, Duration::from_secs(10)).await,
        "root's socket"
    );
    assert!(echoes(&mut by_bob).await && echoes(&mut by_token).await && echoes(&mut by_ops).await);

    // ops loses admin rights (root logs in again to do it): ops's socket into bob's closes.
    let (root, root_xsrf, _) = session_of(&gantry, "root").await?;
    let demoted = root
        .patch(format!("{}/hub/api/users/ops", gantry.url()))
        .header("origin", gantry.url())
        .header("x-xsrftoken", &root_xsrf)
        .json(&json!({"admin": false}))
        .send()
        .await?;
    assert_eq!(demoted.status(), 200);
    assert!(
        closed_within(&mut by_ops, Duration::from_secs(10)).await,
        "ops's socket"
    );
    let _ = ops_xsrf;

    // Bob revokes his token: the socket it opened closes; his session's stays.
    let revoked = bob
        .delete(format!(
            "{}/hub/api/users/bob/tokens/{bob_token_id}",
            gantry.url()
        ))
        .header("origin", gantry.url())
        .header("x-xsrftoken", &bob_xsrf)
        .send()
        .await?;
    assert_eq!(revoked.status(), 204);
    assert!(
        closed_within(&mut by_token, Duration::from_secs(10)).await,
        "the token's socket"
    );
    assert!(echoes(&mut by_bob).await);

    // `gantry user revoke bob`, another process: bob's socket closes within the bound.
    let (code, out, err) = gantry.command(&["user", "revoke", "bob"], "")?;
    ensure!(code == 0, "gantry user revoke: {out}{err}");
    assert!(
        closed_within(&mut by_bob, CROSS_PROCESS_BOUND).await,
        "bob's socket"
    );
    Ok(())
}
