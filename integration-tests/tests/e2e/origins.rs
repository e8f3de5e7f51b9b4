//! The gate takes a session cookie for a WebSocket or a change to a user's server only from
//! the hub's own pages (or `hub.allowed_origins`): a browser attaches the cookie to requests
//! that pages of other origins of the same site make (another port, a sibling subdomain),
//! and the apps behind the gate need not check `Origin` themselves. Tokens are exempt.
//! Through `gantry up` on the real Docker engine, with the headers set by hand and in
//! headless Chromium, whose rules decide what a hostile page can send.

use anyhow::Context;
use gantry_integration_tests::DockerCleanup;
use gantry_integration_tests::browser::Browser;
use reqwest::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite;

use crate::gate::{
    PASSWORD, echoes, open_socket_with, relay_gantry, session_of, start_server, token_of,
};

/// The status a refused WebSocket handshake was answered with, or `None` if it opened.
fn refusal(result: &Result<crate::gate::Socket, tungstenite::Error>) -> Option<u16> {
    match result {
        Ok(_) => None,
        Err(tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
        Err(other) => panic!("the handshake failed otherwise: {other}"),
    }
}

#[tokio::test]
async fn cookie_sockets_and_changes_come_only_from_our_pages() -> anyhow::Result<()> {
    let instance = format!("gt-e2e-origin-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    let gantry = relay_gantry(
        &instance,
        "allowed_origins = [\"https://lab.example.org\"]",
        &[("bob", false)],
    )
    .await?;
    let (bob, xsrf, session) = session_of(&gantry, "bob").await?;
    start_server(&gantry, &bob, &xsrf, "bob", "bob").await?;
    let (token, _) = token_of(&gantry, &bob, &xsrf, "bob").await?;
    let cookie = || ("cookie", format!("gantry-session={session}"));
    let origin = |value: &str| ("origin", value.to_owned());
    let ours = gantry.url();
    let another_port = format!("http://127.0.0.1:{}", gantry.port() + 1);

    // Our pages, an allowed origin, a client that is no browser page, and a token from
    // anywhere open sockets.
    for headers in [
        vec![cookie(), origin(&ours)],
        vec![cookie(), origin("https://lab.example.org")],
        vec![cookie()],
        vec![cookie(), ("sec-fetch-site", "same-origin".to_owned())],
        vec![
            ("authorization", format!("token {token}")),
            origin("http://evil.example"),
        ],
    ] {
        let mut socket = open_socket_with(&gantry, "/user/bob/ws", &headers)
            .await
            .with_context(|| format!("{headers:?}"))?;
        assert!(echoes(&mut socket).await, "{headers:?}");
    }
    // Any other page's socket with the cookie is refused before it reaches the server.
    for headers in [
        vec![cookie(), origin("http://evil.example")],
        vec![cookie(), origin(&another_port)],
        vec![cookie(), origin("null")],
        vec![cookie(), ("sec-fetch-site", "cross-site".to_owned())],
        vec![cookie(), origin(&ours), origin("http://evil.example")],
    ] {
        let result = open_socket_with(&gantry, "/user/bob/ws", &headers).await;
        assert_eq!(refusal(&result), Some(403), "{headers:?}");
    }

    // Plain requests: reading from anywhere is the browser's same-origin policy's business;
    // a change with the cookie comes only from our pages.
    let client = Client::new();
    let send = |method: reqwest::Method, from: &str| {
        client
            .request(method, format!("{ours}/user/bob/api/contents"))
            .header("cookie", cookie().1)
            .header("origin", from)
            .send()
    };
    assert_eq!(
        send(reqwest::Method::GET, "http://evil.example")
            .await?
            .status(),
        200
    );
    assert_eq!(send(reqwest::Method::POST, &ours).await?.status(), 200);
    let refused = send(reqwest::Method::POST, "http://evil.example").await?;
    assert_eq!(refused.status(), 403);
    let page = refused.text().await?;
    assert!(page.contains("hub.allowed_origins"), "{page}");
    assert_eq!(
        send(reqwest::Method::DELETE, &another_port).await?.status(),
        403
    );
    let by_token = client
        .post(format!("{ours}/user/bob/api/contents"))
        .header("authorization", format!("token {token}"))
        .header("origin", "http://evil.example")
        .send()
        .await?;
    assert_eq!(by_token.status(), 200);
    Ok(())
}

/// Serves `page` as HTML to every request on a free loopback port; returns the port.
async fn serve_page(page: String) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(port)
}

/// What a page's script does: open a socket to `url`, send "ping", and write what came of it
/// into `#result`.
fn socket_script(url: &str) -> String {
    format!(
        "const out = document.getElementById('result');\
         const ws = new WebSocket('{url}');\
         ws.onopen = () => ws.send('ping');\
         ws.onmessage = (m) => {{ out.textContent = 'result: echo ' + m.data; }};\
         ws.onerror = () => {{ out.textContent = 'result: refused'; }};"
    )
}

/// In Chromium: bob logs in; a page on another port of the same host (same site, so his
/// `SameSite=Lax` cookie goes with its requests) cannot open a socket into his server, while
/// a page of gantry's own origin can.
#[tokio::test]
async fn a_page_on_another_port_cannot_open_a_socket_with_the_cookie() -> anyhow::Result<()> {
    let instance = format!("gt-e2e-origin-b-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    let gantry = relay_gantry(&instance, "", &[("bob", false)]).await?;
    let (bob, xsrf, _) = session_of(&gantry, "bob").await?;
    start_server(&gantry, &bob, &xsrf, "bob", "bob").await?;
    let base = gantry.url();
    let socket_url = format!("ws://127.0.0.1:{}/user/bob/ws", gantry.port());

    let browser = Browser::start().await?;
    browser.goto(&format!("{base}/hub/login")).await?;
    browser.fill("#username", "bob").await?;
    browser.fill("#password", PASSWORD).await?;
    browser
        .click("form[action='/hub/login'] button[type=submit]")
        .await?;
    browser.wait_for_text("h1", "Signed in as bob").await?;

    let hostile = format!(
        "<!doctype html><title>elsewhere</title><p id=result>waiting</p><script>{}</script>",
        socket_script(&socket_url)
    );
    let port = serve_page(hostile).await?;
    browser.goto(&format!("http://127.0.0.1:{port}/")).await?;
    let result = browser.wait_for_text("#result", "result:").await?;
    assert_eq!(result, "result: refused", "a page on port {port}");

    // The same script from a page of gantry's origin (bob's server's own answer) works.
    browser.goto(&format!("{base}/user/bob/")).await?;
    browser
        .execute(&format!(
            "document.body.innerHTML = '<p id=result>waiting</p>'; {}",
            socket_script(&socket_url)
        ))
        .await?;
    let result = browser.wait_for_text("#result", "result:").await?;
    assert_eq!(result, "result: echo ping", "a page of gantry's origin");
    browser.pass().await
}
