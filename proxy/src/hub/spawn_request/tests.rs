use serde_json::json;

use super::*;

#[test]
fn a_json_start_takes_an_object_with_a_profile_only() {
    assert_eq!(
        SpawnRequest::from_json(&json!({})),
        Ok(SpawnRequest::default())
    );
    assert_eq!(
        SpawnRequest::from_json(&json!({"profile": null})),
        Ok(SpawnRequest::default())
    );
    assert_eq!(
        SpawnRequest::from_json(&json!({"profile": "bench"})),
        Ok(SpawnRequest {
            profile: Some("bench".into())
        })
    );
    // The probes of issue 20: keys a spawner of another hub honours, and an array body.
    for key in [
        "image",
        "cmd",
        "privileged",
        "volumes",
        "env",
        "extra_host_config",
        "Profile",
    ] {
        let error = SpawnRequest::from_json(&json!({"profile": "bench", key: "x"})).unwrap_err();
        assert_eq!(error, SpawnRequestError::UnknownKey(key.into()));
        assert!(error.to_string().contains(&format!("{key:?}")), "{error}");
    }
    assert_eq!(
        SpawnRequest::from_json(&json!(["bench"])),
        Err(SpawnRequestError::NotAnObject("an array"))
    );
    assert_eq!(
        SpawnRequest::from_json(&json!("bench")),
        Err(SpawnRequestError::NotAnObject("a string"))
    );
    assert_eq!(
        SpawnRequest::from_json(&json!({"profile": ["bench"]})),
        Err(SpawnRequestError::WrongType("an array"))
    );
    assert_eq!(
        SpawnRequest::from_json(&json!({"profile": 1})),
        Err(SpawnRequestError::WrongType("a number"))
    );
    // A long key is quoted cut short.
    let long = "k".repeat(1000);
    let SpawnRequestError::UnknownKey(quoted) =
        SpawnRequest::from_json(&json!({ long: 1 })).unwrap_err()
    else {
        panic!("not an unknown key")
    };
    assert_eq!(quoted.len(), MAX_QUOTED);
}

#[test]
fn the_spawn_form_takes_its_own_fields_only() {
    assert_eq!(
        SpawnRequest::from_form(["_xsrf", "server", "profile"].into_iter(), Some("lab")),
        Ok(SpawnRequest {
            profile: Some("lab".into())
        })
    );
    assert_eq!(
        SpawnRequest::from_form(["_xsrf"].into_iter(), None),
        Ok(SpawnRequest::default())
    );
    assert_eq!(
        SpawnRequest::from_form(["_xsrf", "image"].into_iter(), None),
        Err(SpawnRequestError::UnknownKey("image".into()))
    );
}
