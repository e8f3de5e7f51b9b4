use super::*;

fn problems(text: &str) -> Vec<String> {
    match FileConfig::parse(text).unwrap().validate() {
        Ok(_) => Vec::new(),
        Err(errors) => errors.problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn an_empty_file_gives_the_embedded_defaults() {
    let config = FileConfig::parse("").unwrap().validate().unwrap();
    assert_eq!(config.hub.bind, SocketAddr::from(([127, 0, 0, 1], 8000)));
    assert_eq!(config.public_origin.as_str(), "http://127.0.0.1:8000");
    assert!(!config.https);
    assert!(
        config
            .database_url
            .starts_with("sqlite://gantry-data/gantry.sqlite")
    );
    assert!(config.local.enabled);
    assert_eq!(config.local.signup, Signup::Closed);
    assert!(config.name_policy.case_fold);
    assert_eq!(config.session_lifetime, Duration::from_secs(14 * 86_400));
}

#[test]
fn an_unspecified_bind_address_defaults_to_localhost() {
    let config = FileConfig::parse("[hub]\nbind = \"0.0.0.0:9000\"\n")
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(config.public_origin.as_str(), "http://localhost:9000");
}

#[test]
fn https_public_urls_turn_on_secure_cookies() {
    let config = FileConfig::parse("[hub]\npublic_url = \"https://hub.example.org/\"\n")
        .unwrap()
        .validate()
        .unwrap();
    assert!(config.https);
    assert_eq!(config.public_origin.as_str(), "https://hub.example.org");
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    for (text, key) in [
        ("[hub]\nbnid = \"1.2.3.4:5\"\n", "bnid"),
        ("[auth.local]\nsignups = \"open\"\n", "signups"),
        ("[proxy]\ntimeout = 3\n", "timeout"),
        ("[hubb]\n", "hubb"),
    ] {
        let error = FileConfig::parse(text).unwrap_err().to_string();
        assert!(error.contains(key), "{text:?}: {error}");
    }
}

#[test]
fn wrong_types_and_values_are_refused() {
    assert!(FileConfig::parse("[hub]\nsession_days = \"ten\"\n").is_err());
    assert!(FileConfig::parse("[auth.local]\nsignup = \"sometimes\"\n").is_err());
    assert!(FileConfig::parse("[hub]\nbind = \"nowhere\"\n").is_err());
}

#[test]
fn every_problem_is_reported_with_key_and_fix() {
    let found = problems(
        "[hub]\npublic_url = \"ftp://x/y\"\nsession_days = 0\n\
         [proxy]\nheader_timeout_secs = 0\ntrusted_downstream = [\"10.0.0.0/8\", \"not-an-ip\"]\ntls_cert = \"c.pem\"\n\
         [auth.limits]\naccount_burst = 0\n",
    );
    for key in [
        "hub.public_url:",
        "hub.session_days:",
        "proxy.header_timeout_secs:",
        "proxy.trusted_downstream[1]:",
        "proxy.tls_cert:",
        "auth.limits.account_burst:",
    ] {
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(key) && p.contains("(fix: ")),
            "{key} not in {found:#?}"
        );
    }
    assert_eq!(found.len(), 6, "{found:#?}");
}

#[test]
fn a_config_with_no_way_to_log_in_is_refused() {
    let found = problems("[auth.local]\nenabled = false\n");
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("auth: no way to log in")),
        "{found:#?}"
    );
}

#[test]
fn oidc_providers_are_checked_and_completed() {
    let text = "[hub]\npublic_url = \"https://hub.example.org\"\n\
                [auth.oidc.lab]\nissuer_url = \"https://id.example.org\"\nclient_id = \"gantry\"\n\
                client_secret = \"s\"\nallowed_groups = [\"a\"]\nuid_claim = \"uid\"\n";
    let config = FileConfig::parse(text).unwrap().validate().unwrap();
    let lab = &config.oidc[0];
    assert_eq!(lab.id, "lab");
    assert_eq!(lab.display_name, "lab");
    assert_eq!(
        lab.config.redirect_url,
        "https://hub.example.org/hub/oidc/lab/callback"
    );
    assert_eq!(lab.config.uid_claim.as_deref(), Some("uid"));
    assert!(lab.config.name_policy.case_fold);

    let found = problems(
        "[auth.oidc.Bad_Id]\nissuer_url = \"https://id.example.org\"\nclient_id = \"x\"\n\
         [auth.oidc.two]\nissuer_url = \"https://id.example.org\"\nclient_id = \"x\"\n\
         client_secret = \"a\"\nclient_secret_file = \"/nonexistent\"\n\
         [auth.oidc.three]\nissuer_url = \"https://id.example.org\"\nclient_id = \"x\"\n\
         client_secret_file = \"/nonexistent/secret\"\n",
    );
    assert!(
        found.iter().any(|p| p.starts_with("auth.oidc.Bad_Id:")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("auth.oidc.two.client_secret:")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("auth.oidc.three.client_secret_file:")),
        "{found:#?}"
    );
}

#[test]
fn client_secret_files_are_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "t0p-secret\n").unwrap();
    let text = format!(
        "[auth.oidc.lab]\nissuer_url = \"https://id.example.org\"\nclient_id = \"x\"\nallow_all = true\n\
         client_secret_file = \"{}\"\n",
        path.display()
    );
    let config = FileConfig::parse(&text).unwrap().validate().unwrap();
    assert_eq!(
        config.oidc[0].config.client_secret.as_deref(),
        Some("t0p-secret")
    );
}

#[test]
fn spawner_tables_pass_through() {
    let config = FileConfig::parse("[docker]\ninstance = \"lab\"\n").unwrap();
    assert_eq!(config.spawner.docker.instance, "lab");
}

#[test]
fn the_embedded_configuration_is_valid_and_has_one_default_profile() {
    let file = FileConfig::embedded().unwrap();
    let spawner = file.spawner.validate().unwrap();
    assert_eq!(
        spawner
            .profiles
            .keys()
            .map(|id| id.as_str())
            .collect::<Vec<_>>(),
        ["default"]
    );
    let profile = spawner.profiles.values().next().unwrap();
    assert_eq!(profile.image, EMBEDDED_IMAGE);
    let hub = file.validate().unwrap();
    assert_eq!(hub.hub.bind, SocketAddr::from(([127, 0, 0, 1], 8000)));
    assert!(hub.local.enabled);
}

#[test]
fn port_zero_needs_a_public_url() {
    let found = problems("[hub]\nbind = \"127.0.0.1:0\"\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("hub.bind: port 0"), "{found:?}");
    assert!(problems("[hub]\nbind = \"127.0.0.1:0\"\npublic_url = \"http://h:80\"\n").is_empty());
}

#[test]
fn servers_api_url_is_checked_and_completed() {
    let url = |value: &str| {
        FileConfig::parse(&format!("[hub]\nservers_api_url = \"{value}\"\n"))
            .unwrap()
            .validate()
            .map(|c| c.hub.servers_api_url)
            .map_err(|e| e.problems[0].to_string())
    };
    for (given, completed) in [
        ("http://gantry.lab:8081", "http://gantry.lab:8081/hub/api"),
        ("http://gantry.lab:8081/", "http://gantry.lab:8081/hub/api"),
        (
            "https://hub.example.org/hub/api/",
            "https://hub.example.org/hub/api",
        ),
        (
            "http://10.0.0.5/gantry/hub/api",
            "http://10.0.0.5/gantry/hub/api",
        ),
    ] {
        assert_eq!(url(given), Ok(Some(completed.to_owned())), "{given}");
    }
    for bad in [
        "gantry.lab:8081",
        "ftp://gantry.lab/",
        "http://gantry.lab/api",
        "http://u:p@h/",
    ] {
        let problem = url(bad).unwrap_err();
        assert!(problem.starts_with("hub.servers_api_url: "), "{problem}");
        assert!(problem.contains("(fix: "), "{problem}");
    }
    // Docker keeps its default: no URL needed, the gateway's is used.
    let config = FileConfig::parse("").unwrap().validate().unwrap();
    assert_eq!(config.hub.servers_api_url, None);
    assert_eq!(config.hub.servers_api_bind, None);
}

#[test]
fn mesos_needs_a_servers_api_url() {
    let mesos = "[mesos]\nmasters = [\"http://m:5050\"]\n";
    let found = problems(mesos);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("hub.servers_api_url: is required with [mesos]"),
        "{found:?}"
    );
    assert!(found[0].contains("(fix: set it to"), "{found:?}");
    let config = FileConfig::parse(&format!(
        "[hub]\nservers_api_url = \"http://10.1.2.3:8081\"\n\
         servers_api_bind = \"10.1.2.3:8081\"\n{mesos}"
    ))
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(
        config.hub.servers_api_url.as_deref(),
        Some("http://10.1.2.3:8081/hub/api")
    );
    assert_eq!(
        config.hub.servers_api_bind,
        Some(SocketAddr::from(([10, 1, 2, 3], 8081)))
    );
}

#[test]
fn resource_caps_have_defaults_and_refuse_zero() {
    let config = FileConfig::parse("").unwrap().validate().unwrap();
    assert_eq!(config.hub.request_body_timeout_secs, 30);
    assert_eq!(config.proxy.max_connections, 10_000);
    assert_eq!(config.login_caps, LoginCaps::default());
    assert_eq!(config.login_caps.hash_workers, None, "one per core");
    assert_eq!(config.login_caps.hash_queue, 64);
    assert_eq!(config.login_caps.oidc_in_flight, 10_000);
    assert_eq!(config.login_caps.oidc_in_flight_per_address, 100);

    let config = FileConfig::parse(
        "[hub]\nrequest_body_timeout_secs = 5\n[proxy]\nmax_connections = 7\n\
         [auth.limits]\npassword_hash_workers = 2\npassword_hash_queue = 0\n\
         oidc_logins_in_flight = 9\noidc_logins_in_flight_per_address = 3\n",
    )
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(config.hub.request_body_timeout_secs, 5);
    assert_eq!(config.proxy.max_connections, 7);
    assert_eq!(
        config.login_caps,
        LoginCaps {
            hash_workers: Some(2),
            hash_queue: 0,
            oidc_in_flight: 9,
            oidc_in_flight_per_address: 3,
        }
    );

    let found = problems(
        "[hub]\nrequest_body_timeout_secs = 0\n[proxy]\nmax_connections = 0\n\
         [auth.limits]\npassword_hash_workers = 0\noidc_logins_in_flight = 0\n\
         oidc_logins_in_flight_per_address = 0\n",
    );
    for key in [
        "hub.request_body_timeout_secs:",
        "proxy.max_connections:",
        "auth.limits.password_hash_workers:",
        "auth.limits.oidc_logins_in_flight:",
        "auth.limits.oidc_logins_in_flight_per_address:",
    ] {
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(key) && p.contains("(fix: ")),
            "{key} not in {found:#?}"
        );
    }
    assert_eq!(found.len(), 5, "{found:#?}");
    // A typo in the new keys is refused like any other.
    let error = FileConfig::parse("[auth.limits]\npassword_hash_queues = 1\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("password_hash_queues"), "{error}");
}

#[test]
fn the_unknown_names_budget_has_defaults_is_read_and_refuses_zero() {
    let config = FileConfig::parse("").unwrap().validate().unwrap();
    assert_eq!(config.limits.unknown_names_per_minute, 60);
    assert_eq!(config.limits.unknown_names_burst, 30);
    let config = FileConfig::parse(
        "[auth.limits]\nunknown_names_per_minute = 12\nunknown_names_burst = 4\n",
    )
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(
        (
            config.limits.unknown_names_per_minute,
            config.limits.unknown_names_burst
        ),
        (12, 4)
    );
    let found = problems("[auth.limits]\nunknown_names_per_minute = 0\nunknown_names_burst = 0\n");
    for key in [
        "auth.limits.unknown_names_per_minute:",
        "auth.limits.unknown_names_burst:",
    ] {
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(key) && p.contains("(fix: ")),
            "{key} not in {found:#?}"
        );
    }
    assert_eq!(found.len(), 2, "{found:#?}");
}

#[test]
fn allowed_origins_are_origins_and_the_host_counts_only_without_a_public_url() {
    let config = FileConfig::parse("").unwrap().validate().unwrap();
    assert!(config.gate_origins.allowed.is_empty());
    assert!(config.gate_origins.host_is_ours);
    assert_eq!(config.gate_origins.ours, config.public_origin);

    let config = FileConfig::parse(
        "[hub]\npublic_url = \"https://hub.example.org\"\n\
         allowed_origins = [\"https://Lab.example.org/\", \"http://10.0.0.1:8080\"]\n",
    )
    .unwrap()
    .validate()
    .unwrap();
    assert!(!config.gate_origins.host_is_ours);
    assert_eq!(
        config.gate_origins.allowed,
        [
            PublicOrigin::parse("https://lab.example.org").unwrap(),
            PublicOrigin::parse("http://10.0.0.1:8080").unwrap()
        ]
    );

    let found = problems("[hub]\nallowed_origins = [\"lab.example.org\", \"https://x/y\"]\n");
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found
            .iter()
            .all(|p| p.starts_with("hub.allowed_origins:") && p.contains("(fix: ")),
        "{found:#?}"
    );
}
