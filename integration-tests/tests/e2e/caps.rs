//! Resource caps of `gantry up` (issue 11, item 5): a request body that stalls is cut off at
//! its deadline, the listener serves at most `proxy.max_connections` connections, password
//! hashing past its queue is refused with 503, and a flood of OpenID logins is refused
//! instead of pushing out a real user's login.

use std::time::Duration;

use anyhow::{Context, ensure};
use gantry_integration_tests::{OidcMock, TestGantry, browser_client, xsrf_field};
use reqwest::{Client, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSWORD: &str = "correct horse battery";
const ADMIN_TOKEN: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

/// Reads one HTTP/1.1 response with a `content-length` body from `stream`; returns its
/// status line's code.
async fn read_response(stream: &mut TcpStream) -> anyhow::Result<u16> {
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(
            stream.read(&mut byte).await? == 1,
            "the connection closed inside a response head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head)?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .context("no content-length")?;
    let mut body = vec![0_u8; length];
    stream.read_exact(&mut body).await?;
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not a response: {head}"))
}

const HEALTH: &[u8] = b"GET /hub/health HTTP/1.1\r\nhost: gantry\r\n\r\n";

async fn health(stream: &mut TcpStream) -> anyhow::Result<u16> {
    stream.write_all(HEALTH).await?;
    read_response(stream).await
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_off_at_the_deadline() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new("request_body_timeout_secs = 1\n")?;
    gantry.set_env("GANTRY_ADMIN_TOKEN", ADMIN_TOKEN);
    gantry.start().await?;
    // Half a login form, then silence: before, the hub waited for the rest forever.
    let mut stream = TcpStream::connect(("127.0.0.1", gantry.port())).await?;
    let head = "POST /hub/login HTTP/1.1\r\nhost: gantry\r\n\
                content-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\n";
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(b"username=alice&pass").await?;
    let mut answer = Vec::new();
    // The deadline is 1 s; 30 s only bounds a failing test.
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .context("the stalled request was neither answered nor closed")??;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        answer.contains("did not arrive within 1 seconds"),
        "{answer}"
    );
    // read_to_end returned: the connection is closed, the half body never read.

    // The same over the JSON API, past the credential check.
    let mut stream = TcpStream::connect(("127.0.0.1", gantry.port())).await?;
    let head = format!(
        "POST /hub/api/users HTTP/1.1\r\nhost: gantry\r\nauthorization: token {ADMIN_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: 50\r\n\r\n{{\"usernames\": ["
    );
    stream.write_all(head.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .context("the stalled API request was neither answered nor closed")??;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("\"status\":408"), "{answer}");
    Ok(())
}

/// With `max_connections = 2`, a third connection is not served while two are open (both
/// are served several times after the third sent its request), and is served once one
/// closes: it waited in the listen backlog, it was not refused.
#[tokio::test]
async fn past_max_connections_a_connection_waits_for_one_to_close() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new("[proxy]\nmax_connections = 2\n")?;
    gantry.start().await?;
    let addr = ("127.0.0.1", gantry.port());
    let mut first = TcpStream::connect(addr).await?;
    let mut second = TcpStream::connect(addr).await?;
    // Both served: they hold the two places (the start-up check's connection is gone).
    assert_eq!(health(&mut first).await?, 200);
    assert_eq!(health(&mut second).await?, 200);

    let mut third = TcpStream::connect(addr).await?;
    third.write_all(HEALTH).await?;
    for _ in 0..5 {
        assert_eq!(health(&mut first).await?, 200);
        assert_eq!(health(&mut second).await?, 200);
    }
    let mut byte = [0_u8; 1];
    let pending = third.try_read(&mut byte);
    assert!(
        matches!(&pending, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the third connection was served past the cap: {pending:?}"
    );

    drop(first);
    let served = tokio::time::timeout(Duration::from_secs(30), read_response(&mut third))
        .await
        .context("the waiting connection was not served after another closed")??;
    assert_eq!(served, 200);
    Ok(())
}

/// The login form's token for `client` (which keeps cookies).
async fn login_form(client: &Client, gantry: &TestGantry) -> anyhow::Result<String> {
    let page = client
        .get(format!("{}/hub/login", gantry.url()))
        .send()
        .await?;
    ensure!(page.status() == 200, "login page: {}", page.status());
    xsrf_field(&page.text().await?)
}

async fn post_login(
    client: &Client,
    gantry: &TestGantry,
    xsrf: &str,
    user: &str,
    password: &str,
) -> anyhow::Result<Response> {
    Ok(client
        .post(format!("{}/hub/login", gantry.url()))
        .header("origin", gantry.url())
        .form(&[("_xsrf", xsrf), ("username", user), ("password", password)])
        .send()
        .await?)
}

async fn metrics(gantry: &TestGantry) -> anyhow::Result<String> {
    let response = reqwest::Client::new()
        .get(format!("{}/hub/metrics", gantry.url()))
        .header("authorization", format!("token {ADMIN_TOKEN}"))
        .send()
        .await?;
    ensure!(response.status() == 200, "metrics: {}", response.status());
    Ok(response.text().await?)
}

/// With one hashing worker and no queue, logins that arrive while a hash runs are answered
/// 503 with `Retry-After: 1` at once; the others are checked as usual.
///
/// Not deterministic in the strict sense: it needs two of the sixteen logins to overlap, and
/// each holds the worker for a whole argon2id hash (19 MiB, two passes; tens of milliseconds
/// even optimised) while they are sent together. The limiter's own tests
/// (`proxy/src/hub/hashing/tests.rs`) hold the worker deterministically.
#[tokio::test]
async fn logins_past_the_hashing_queue_get_503_at_once() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new(
        "[auth.limits]\npassword_hash_workers = 1\npassword_hash_queue = 0\n\
         address_burst = 100\naddress_per_minute = 100\n\
         unknown_names_burst = 100\nunknown_names_per_minute = 100\n",
    )?;
    gantry.set_env("GANTRY_ADMIN_TOKEN", ADMIN_TOKEN);
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let client = browser_client()?;
    let xsrf = login_form(&client, &gantry).await?;
    let attempts = (0..16).map(|i| {
        let (client, gantry, xsrf) = (&client, &gantry, &xsrf);
        async move { post_login(client, gantry, xsrf, &format!("user{i}"), "wrong").await }
    });
    let mut refused = 0;
    let mut checked = 0;
    for response in futures_util::future::join_all(attempts).await {
        let response = response?;
        match response.status().as_u16() {
            403 => checked += 1,
            503 => {
                assert_eq!(response.headers()["retry-after"], "1");
                let page = response.text().await?;
                assert!(page.contains("try again in a second"), "{page}");
                refused += 1;
            }
            other => panic!("login answered {other}"),
        }
    }
    assert!(checked >= 1, "no login was checked");
    assert!(
        refused >= 1,
        "no login was refused: the 16 never overlapped"
    );
    let text = metrics(&gantry).await?;
    assert!(
        text.contains(&format!(
            "gantry_hub_capped_total{{cap=\"password_hashing\"}} {refused}"
        )),
        "{text}"
    );
    assert!(text.contains("gantry_password_hashes_running 0"), "{text}");
    // Once the burst is over, logins are checked again.
    let response = post_login(&client, &gantry, &xsrf, "alice", PASSWORD).await?;
    assert_eq!(response.status(), 303);
    Ok(())
}

/// A browser-like client whose connections come from `address` (any 127.0.0.0/8 address
/// works on Linux loopback), so the hub sees as many clients as addresses.
fn client_from(address: std::net::IpAddr) -> anyhow::Result<Client> {
    Ok(Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .local_address(address)
        .build()?)
}

/// Eight addresses post wrong passwords together: each for bob (a real account) once and
/// for two made-up names, so no address passes its own limit (`address_burst = 3`). Bob's
/// account limit answers 429 after its burst of 3; the made-up names, a new account key each,
/// pass every keyed limit and are held by the budget all addresses share
/// (`unknown_names_burst = 4`): four are checked (403), the other twelve get 503 with
/// `Retry-After` before any hashing. Nothing is answered 500, and alice, from her own
/// address, logs in afterwards. Before the shared budget, all sixteen were checked.
#[tokio::test]
async fn a_flood_of_wrong_passwords_is_limited_for_known_and_unknown_names() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new(
        "[auth.limits]\naddress_burst = 3\naddress_per_minute = 1\n\
         account_burst = 3\naccount_per_minute = 1\n\
         unknown_names_burst = 4\nunknown_names_per_minute = 1\n",
    )?;
    gantry.set_env("GANTRY_ADMIN_TOKEN", ADMIN_TOKEN);
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.add_user("bob", PASSWORD, false)?;
    gantry.start().await?;
    let gantry = &gantry;
    let flooders = (2..10_u8).map(|i| async move {
        let client = client_from(std::net::IpAddr::from([127, 0, 0, i]))?;
        let xsrf = login_form(&client, gantry).await?;
        let names = ["bob".to_owned(), format!("ghost{i}a"), format!("ghost{i}b")];
        let attempts = names.iter().map(|name| {
            let (client, xsrf) = (&client, &xsrf);
            async move {
                let response = post_login(client, gantry, xsrf, name, "wrong password").await?;
                let status = response.status().as_u16();
                let retry = response.headers().get("retry-after").cloned();
                let page = response.text().await?;
                anyhow::Ok((name.starts_with("bob"), status, retry, page))
            }
        });
        futures_util::future::try_join_all(attempts).await
    });
    let answers: Vec<_> = futures_util::future::try_join_all(flooders)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let count = |known: bool, status: u16| {
        answers
            .iter()
            .filter(|(k, s, _, _)| *k == known && *s == status)
            .count()
    };
    for (known, status, retry, page) in &answers {
        assert!(
            matches!(status, 403 | 429 | 503),
            "known={known} answered {status}: {page}"
        );
        if *status != 403 {
            let secs: u64 = retry
                .as_ref()
                .context("a refusal without Retry-After")?
                .to_str()?
                .parse()?;
            assert!(secs >= 1, "Retry-After: {secs}");
        }
    }
    assert_eq!((count(true, 403), count(true, 429)), (3, 5), "{answers:#?}");
    assert_eq!(count(true, 503), 0);
    assert_eq!(
        (count(false, 403), count(false, 503)),
        (4, 12),
        "unknown names: four checked, the rest refused by the shared budget"
    );
    let refused = answers.iter().find(|(k, s, _, _)| !k && *s == 503);
    assert!(
        refused.is_some_and(|(_, _, _, page)| page.contains("Too many logins are being checked")),
        "{refused:?}"
    );
    let text = metrics(gantry).await?;
    assert!(
        text.contains("gantry_hub_capped_total{cap=\"unknown_names\"} 12"),
        "{text}"
    );
    assert!(text.contains("gantry_password_hashes_running 0"), "{text}");

    // Every address has spent its burst: a fourth attempt from one is refused by its own
    // limit, whatever the name.
    let client = client_from(std::net::IpAddr::from([127, 0, 0, 2]))?;
    let xsrf = login_form(&client, gantry).await?;
    let again = post_login(&client, gantry, &xsrf, "alice", PASSWORD).await?;
    assert_eq!(again.status(), 429);
    // Alice, from her own address, is not held back by any of it.
    let alice = browser_client()?;
    let xsrf = login_form(&alice, gantry).await?;
    let response = post_login(&alice, gantry, &xsrf, "alice", PASSWORD).await?;
    assert_eq!(response.status(), 303, "{}", gantry.log_text());
    Ok(())
}

/// The provider's mock with one user who may log in, and gantry's config for it with tight
/// caps; the load balancer at 127.0.0.1 is trusted, so `X-Forwarded-For` names the client.
async fn oidc_gantry(
    mock: &OidcMock,
    in_flight: usize,
    per_address: usize,
) -> anyhow::Result<TestGantry> {
    mock.set_user(
        "alice-sub",
        &json!({"preferred_username": "alice", "groups": ["staff"]}),
    )
    .await?;
    let mut gantry = TestGantry::new(&format!(
        "[proxy]\ntrusted_downstream = [\"127.0.0.1\"]\n\
         [auth.limits]\noidc_logins_in_flight = {in_flight}\n\
         oidc_logins_in_flight_per_address = {per_address}\n\
         [auth.oidc.mock]\nissuer_url = \"{}\"\nclient_id = \"gantry\"\n\
         client_secret = \"s3cret\"\nallowed_groups = [\"staff\"]\n",
        mock.issuer()
    ))?;
    gantry.start().await?;
    Ok(gantry)
}

/// `GET /hub/oidc/mock/login` from `address`, in `client`.
async fn begin(client: &Client, gantry: &TestGantry, address: &str) -> anyhow::Result<Response> {
    Ok(client
        .get(format!("{}/hub/oidc/mock/login", gantry.url()))
        .header("x-forwarded-for", address)
        .send()
        .await?)
}

fn location(response: &Response) -> anyhow::Result<String> {
    Ok(response
        .headers()
        .get("location")
        .context("no Location")?
        .to_str()?
        .to_owned())
}

fn retry_after(response: &Response) -> anyhow::Result<u64> {
    Ok(response
        .headers()
        .get("retry-after")
        .context("no Retry-After")?
        .to_str()?
        .parse()?)
}

#[tokio::test]
async fn a_flood_of_openid_logins_is_refused_and_pushes_out_no_real_login() -> anyhow::Result<()> {
    let mock = OidcMock::start(&[])?;
    let gantry = oidc_gantry(&mock, 4, 2).await?;
    // Alice starts a login in her browser.
    let alice = browser_client()?;
    let first = begin(&alice, &gantry, "192.0.2.10").await?;
    assert_eq!(first.status(), 303);
    let first_authorize = location(&first)?;

    // A client without cookies starts login after login from one address: two, then 429.
    let bot = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    for _ in 0..2 {
        assert_eq!(begin(&bot, &gantry, "198.51.100.1").await?.status(), 303);
    }
    let refused = begin(&bot, &gantry, "198.51.100.1").await?;
    assert_eq!(refused.status(), 429);
    assert!((1..=900).contains(&retry_after(&refused)?));
    // From other addresses it fills the provider's book (4), then every new login gets 503.
    assert_eq!(begin(&bot, &gantry, "198.51.100.2").await?.status(), 303);
    for i in 3..10 {
        let refused = begin(&bot, &gantry, &format!("198.51.100.{i}")).await?;
        assert_eq!(refused.status(), 503);
        assert!((1..=900).contains(&retry_after(&refused)?));
    }

    // Alice's login survived the flood. Starting again replaces her own login (the book is
    // full, yet she is not refused).
    let second = begin(&alice, &gantry, "192.0.2.10").await?;
    assert_eq!(second.status(), 303, "{}", gantry.log_text());
    // Her first login is gone: its callback, in her own browser, is refused.
    let stale = mock.authorize(&first_authorize, "alice-sub").await?;
    assert_eq!(alice.get(&stale).send().await?.status(), 400);
    // The new one finishes.
    let callback = mock.authorize(&location(&second)?, "alice-sub").await?;
    let finished = alice.get(&callback).send().await?;
    assert_eq!(finished.status(), 303, "{}", gantry.log_text());
    let me: Value = alice
        .get(format!("{}/hub/api/user", gantry.url()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(me["name"], "alice");
    Ok(())
}

/// Alice's login started before the flood finishes after it, and one address cannot fill
/// the book.
#[tokio::test]
async fn a_login_started_before_a_flood_finishes_after_it() -> anyhow::Result<()> {
    let mock = OidcMock::start(&[])?;
    let gantry = oidc_gantry(&mock, 3, 100).await?;
    let alice = browser_client()?;
    let started = begin(&alice, &gantry, "192.0.2.10").await?;
    assert_eq!(started.status(), 303);
    let bot = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut refused = 0;
    for i in 0..50 {
        match begin(&bot, &gantry, &format!("198.51.100.{i}"))
            .await?
            .status()
            .as_u16()
        {
            303 => {}
            503 => refused += 1,
            other => panic!("begin answered {other}"),
        }
    }
    assert_eq!(refused, 48, "two places were left besides Alice's");
    let callback = mock.authorize(&location(&started)?, "alice-sub").await?;
    let finished = alice.get(&callback).send().await?;
    assert_eq!(finished.status(), 303, "{}", gantry.log_text());
    Ok(())
}
