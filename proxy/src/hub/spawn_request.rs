//! What a start may ask for, checked the same way on every way in: the start API's JSON body
//! (JupyterHub's `user_options`) and the spawn form. A key nobody reads is refused, naming it,
//! rather than dropped: a client learns that `image` or `cmd` does nothing, and the day a key
//! is honoured it is honoured on purpose (DockerSpawner's `image` advisory,
//! GHSA-hfgr-h3vc-p6c2). Profiles declare no options of their own yet; the profile's id is
//! the one option.

use serde_json::Value;

#[cfg(test)]
mod tests;

/// The option that picks the profile.
const PROFILE: &str = "profile";

/// The fields the spawn form posts besides the options: the server's name and the CSRF token.
const FORM_FIELDS: [&str; 2] = ["server", gantry_auth::csrf::XSRF_FIELD];

/// Longest key quoted back in an error, in characters.
const MAX_QUOTED: usize = 64;

/// A start's options, checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct SpawnRequest {
    /// The profile's id; `None` for the default profile.
    pub(super) profile: Option<String>,
}

/// Why a start's options were refused (400).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum SpawnRequestError {
    /// The JSON body is not an object.
    #[error(
        "the body must be a JSON object of options, such as {{\"profile\": \"default\"}}, not {0}"
    )]
    NotAnObject(&'static str),
    /// A key no start reads.
    #[error("unknown option {0:?}: a start takes only \"profile\" (a profile id)")]
    UnknownKey(String),
    /// An option of the wrong type.
    #[error("option \"profile\" must be a profile id (a string), not {0}")]
    WrongType(&'static str),
}

impl SpawnRequest {
    /// The options of the start API's JSON body: an object whose only key may be `profile`,
    /// a string or `null`. An empty body reads as `{}`.
    pub(super) fn from_json(body: &Value) -> Result<Self, SpawnRequestError> {
        let Value::Object(options) = body else {
            return Err(SpawnRequestError::NotAnObject(kind(body)));
        };
        if let Some(key) = options.keys().find(|key| *key != PROFILE) {
            return Err(SpawnRequestError::UnknownKey(quoted(key)));
        }
        let profile = match options.get(PROFILE) {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id.clone()),
            Some(other) => return Err(SpawnRequestError::WrongType(kind(other))),
        };
        Ok(Self { profile })
    }

    /// The options of the spawn form, whose fields are `keys`, with `profile` its profile
    /// field: besides the server's name and the CSRF token, only `profile`.
    pub(super) fn from_form<'a>(
        mut keys: impl Iterator<Item = &'a str>,
        profile: Option<&str>,
    ) -> Result<Self, SpawnRequestError> {
        if let Some(key) = keys.find(|key| *key != PROFILE && !FORM_FIELDS.contains(key)) {
            return Err(SpawnRequestError::UnknownKey(quoted(key)));
        }
        Ok(Self {
            profile: profile.map(str::to_owned),
        })
    }
}

/// What kind of JSON value `value` is, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `key`, cut to [`MAX_QUOTED`] characters, for a message.
fn quoted(key: &str) -> String {
    key.chars().take(MAX_QUOTED).collect()
}
