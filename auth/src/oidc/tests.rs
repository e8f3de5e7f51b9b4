//! Config validation, callback parsing and claim mapping, without a provider.

use super::*;
use serde_json::json;

fn config() -> OidcConfig {
    let mut c = OidcConfig::new(
        "https://id.example.org",
        "gantry",
        Some("s3cret".to_owned()),
        "https://hub.example.org/hub/oauth_callback",
    );
    c.allowed_groups = vec!["staff".to_owned()];
    c.admin_groups = vec!["ops".to_owned()];
    c
}

fn claims(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("test claims are objects"),
    }
}

#[test]
fn validate_accepts_defaults_and_refuses_bad_fields() {
    assert!(config().validate().is_ok());
    type Breaker = fn(&mut OidcConfig);
    let cases: [(&str, Breaker); 7] = [
        ("issuer_url", |c| {
            c.issuer_url = "http://id.example.org".into()
        }),
        ("issuer_url", |c| {
            c.issuer_url = "https://id.example.org/?a=b".into()
        }),
        ("redirect_url", |c| c.redirect_url = "not a url".into()),
        ("client_id", |c| c.client_id.clear()),
        ("client_secret", |c| c.client_secret = Some(String::new())),
        ("allowed_groups", |c| {
            c.allowed_groups.clear();
            c.admin_groups.clear();
        }),
        ("scopes", |c| c.scopes = vec!["a b".into()]),
    ];
    for (field, break_it) in cases {
        let mut c = config();
        break_it(&mut c);
        let err = c.validate().err().map(|e| e.field);
        assert_eq!(err, Some(field), "{field}");
    }
    let mut c = config();
    c.issuer_url = "http://127.0.0.1:9400".into();
    assert!(c.validate().is_ok(), "http on loopback is allowed");
}

#[test]
fn unknown_config_keys_are_refused() {
    let parsed: Result<OidcConfig, _> = serde_json::from_value(json!({
        "issuer_url": "https://id.example.org",
        "client_id": "gantry",
        "redirect_url": "https://hub.example.org/cb",
        "whitelist": ["alice"],
    }));
    assert!(parsed.is_err());
}

#[test]
fn callback_params_refuse_duplicates() {
    let p = CallbackParams::from_query("code=c&state=s&iss=https%3A%2F%2Fid&x=1").ok();
    assert_eq!(
        p.as_ref().and_then(|p| p.iss.as_deref()),
        Some("https://id")
    );
    assert!(matches!(
        CallbackParams::from_query("state=a&state=b"),
        Err(OidcError::DuplicateParameter("state"))
    ));
}

#[test]
fn email_username_requires_verified_email() {
    let mut c = config();
    c.username_claim = "email".into();
    for verified in [json!(false), json!("true"), Value::Null] {
        let mut cl = json!({"sub": "1", "email": "a@x.org", "groups": ["staff"]});
        if !verified.is_null() {
            cl["email_verified"] = verified;
        }
        let r = map_claims(&c, &claims(cl), String::new());
        assert!(matches!(r, Err(OidcError::EmailNotVerified)), "{r:?}");
    }
    let ok = json!({"sub": "1", "email": "A@x.org", "email_verified": true, "groups": ["staff"]});
    let id = map_claims(&c, &claims(ok), String::new()).ok();
    assert_eq!(
        id.map(|i| i.username.to_string()),
        Some("a@x.org".to_owned())
    );
}

#[test]
fn groups_decide_access_and_admin() {
    let c = config();
    let map = |groups: Value| {
        map_claims(
            &c,
            &claims(json!({"sub": "1", "preferred_username": "bob", "groups": groups})),
            String::new(),
        )
    };
    assert!(matches!(
        map(json!(["other"])),
        Err(OidcError::NotInAllowedGroups { .. })
    ));
    assert!(matches!(
        map(Value::Null),
        Err(OidcError::NotInAllowedGroups { .. })
    ));
    assert!(matches!(
        map(json!([1])),
        Err(OidcError::InvalidClaim { .. })
    ));
    assert_eq!(map(json!(["staff"])).ok().map(|i| i.admin), Some(false));
    assert_eq!(map(json!("ops")).ok().map(|i| i.admin), Some(true));
    let mut open = config();
    open.allowed_groups.clear();
    open.allow_all = true;
    let id = map_claims(
        &open,
        &claims(json!({"sub": "1", "preferred_username": "bob"})),
        String::new(),
    );
    assert!(id.is_ok());
}

#[test]
fn numeric_ids() {
    let mut c = config();
    c.uid_claim = Some("uid".into());
    c.gid_claim = Some("gid".into());
    let map = |uid: Value| {
        map_claims(
            &c,
            &claims(
                json!({"sub": "1", "preferred_username": "bob", "groups": ["staff"], "uid": uid, "gid": "100"}),
            ),
            String::new(),
        )
    };
    let id = map(json!(1234)).ok();
    assert_eq!(id.map(|i| (i.uid, i.gid)), Some((Some(1234), Some(100))));
    assert_eq!(map(json!("1234")).ok().and_then(|i| i.uid), Some(1234));
    for bad in [
        json!(0),
        json!(-1),
        json!(4_294_967_296_u64),
        json!("12a"),
        json!(1.5),
        json!(true),
    ] {
        assert!(
            matches!(map(bad.clone()), Err(OidcError::InvalidClaim { .. })),
            "{bad}"
        );
    }
    assert!(matches!(map(Value::Null), Err(OidcError::MissingClaim(_))));
}

#[test]
fn statuses_by_fault() {
    assert_eq!(OidcError::StateMismatch.status(), 400);
    assert_eq!(
        OidcError::IssuerMismatch { found: "x".into() }.status(),
        400
    );
    assert_eq!(OidcError::EmailNotVerified.status(), 403);
    assert_eq!(OidcError::IdToken(IdTokenError::Unsigned).status(), 403);
    assert_eq!(OidcError::MissingIdToken.status(), 502);
}

#[test]
fn pkce_s256_matches_rfc_7636_appendix_b() {
    assert_eq!(
        super::pkce_challenge_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}
