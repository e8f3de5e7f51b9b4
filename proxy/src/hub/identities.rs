//! Which account an OpenID Connect login reaches, and the admin API that links identities to
//! accounts.
//!
//! An account records the identities that may log into it as (provider id, issuer, subject)
//! (`gantry_auth::store::ProviderIdentity`). A login is matched on (issuer, subject), never on
//! the name, so that a name can be neither taken over nor lost:
//!
//! 1. An identity linked to an account logs into it, whatever name the provider shows now (a
//!    rename at the provider keeps the account, and the account keeps its gantry name).
//! 2. Otherwise the name decides, with no takeover: a new name makes an account with this
//!    identity; an account of that name with neither a local password nor any identity (an
//!    OpenID account from before identities were recorded, or one an admin created by name)
//!    is bound to this identity; any other account of that name refuses the login with a
//!    page saying that an admin can link it.
//! 3. The account named by `GANTRY_ADMIN_USER` is reached only through an identity an admin
//!    linked to it (rule 1), never by its name.
//!
//! Admins link and unlink identities with `POST|DELETE /hub/api/users/{name}/identities` or
//! `gantry user link|unlink`; each change is logged with who made it.

use gantry_auth::store::{LinkedIdentity, NewUser, ProviderIdentity, User};
use gantry_auth::{OidcIdentity, StoreError, UserName};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::OidcEntry;
use super::request::read_json;
use super::response::{self, HubError};
use super::{Hub, Provider};
use crate::errors::ResponseBody;

/// Longest subject an admin may link, in characters (OpenID Connect Core caps `sub` at 255).
pub const MAX_SUBJECT_CHARS: usize = 255;

/// Why an identity cannot be linked as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    /// No `[auth.oidc.<id>]` table has this id.
    #[error(
        "no OpenID provider {id:?} is configured (configured: {known}); use the id of an [auth.oidc.<id>] table"
    )]
    UnknownProvider {
        /// The id asked for.
        id: String,
        /// The configured ids, comma-separated, or `none`.
        known: String,
    },
    /// The subject is empty, too long or holds control characters.
    #[error(
        "the subject must be the provider's `sub` claim for the user: 1 to {MAX_SUBJECT_CHARS} characters, no control characters"
    )]
    BadSubject,
}

/// The identity `subject` of the configured provider `provider` (its id), with the issuer
/// from its configuration: what an admin links. Checked against `providers` and the shape of
/// a `sub` claim.
///
/// # Errors
///
/// [`LinkError`] naming what is wrong and the fix.
pub fn identity_to_link(
    providers: &[OidcEntry],
    provider: &str,
    subject: &str,
) -> Result<ProviderIdentity, LinkError> {
    let entry = providers
        .iter()
        .find(|entry| entry.id == provider)
        .ok_or_else(|| {
            let known: Vec<&str> = providers.iter().map(|entry| entry.id.as_str()).collect();
            LinkError::UnknownProvider {
                id: provider.chars().take(64).collect(),
                known: if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                },
            }
        })?;
    let length = subject.chars().count();
    if length == 0 || length > MAX_SUBJECT_CHARS || subject.chars().any(char::is_control) {
        return Err(LinkError::BadSubject);
    }
    Ok(ProviderIdentity {
        provider: entry.id.clone(),
        issuer: entry.config.issuer_url.clone(),
        subject: subject.to_owned(),
    })
}

/// The body of `POST|DELETE /hub/api/users/{name}/identities`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityRequest {
    /// The provider's id, from `[auth.oidc.<id>]`.
    provider: String,
    /// The user's `sub` at that provider.
    subject: String,
}

fn identity_model(linked: &LinkedIdentity) -> Value {
    json!({
        "provider": linked.identity.provider,
        "issuer": linked.identity.issuer,
        "subject": linked.identity.subject,
        "created": super::api::iso(linked.created),
    })
}

impl Hub {
    /// Whether `name` is the account named by `GANTRY_ADMIN_USER`, which no OpenID login
    /// reaches by its name.
    pub(super) fn is_reserved_admin(&self, name: &UserName) -> bool {
        self.reserved_admin.as_ref() == Some(name)
    }

    /// The account the OpenID login `identity` through `provider` reaches, by the rules in
    /// this module's documentation: the linked account, else a new one, else an unclaimed
    /// one of its name. Any other account of its name refuses it (403 with the reason).
    pub(super) async fn account_for_login(
        &self,
        provider: &Provider,
        identity: &OidcIdentity,
    ) -> Result<User, HubError> {
        let key = ProviderIdentity {
            provider: provider.id.clone(),
            issuer: provider.provider.issuer().to_owned(),
            subject: identity.subject.clone(),
        };
        let name = &identity.username;
        // A parallel login of the same identity or name can change the answer between the
        // look-ups and the write; the write then fails and the next round sees why.
        for _ in 0..3 {
            if let Some(user) = self
                .store
                .user_by_identity(&key.issuer, &key.subject)
                .await?
            {
                if user.name != *name {
                    tracing::info!(user = %user.name.as_str(), claimed = %name.as_str(), provider = %key.provider, "OpenID login by a known identity under another name: the account keeps its name");
                }
                return Ok(user);
            }
            if self.is_reserved_admin(name) {
                tracing::warn!(user = %name.as_str(), provider = %key.provider, subject = %key.subject, "OpenID login refused: the name is GANTRY_ADMIN_USER's and this identity is not linked to it");
                return Err(HubError::LoginRefused(format!(
                    "The name {} is reserved for the gantry administrator account, which an OpenID login reaches only when an administrator has linked it. To link this login, an administrator runs: gantry user link {} --provider {} --subject {}",
                    name.as_str(),
                    name.as_str(),
                    key.provider,
                    key.subject
                )));
            }
            let Some(user) = self.store.user_by_name(name).await? else {
                let new = NewUser {
                    name: name.clone(),
                    password_hash: None,
                    admin: identity.admin,
                    approved: true,
                };
                match self
                    .store
                    .create_user_with_identity(&new, &key, Timestamp::now())
                    .await
                {
                    Ok(user) => {
                        tracing::info!(user = %user.name.as_str(), provider = %key.provider, subject = %key.subject, "account created for an OpenID identity");
                        return Ok(user);
                    }
                    Err(StoreError::UserExists { .. } | StoreError::IdentityTaken { .. }) => {
                        continue;
                    }
                    Err(other) => return Err(other.into()),
                }
            };
            match self
                .store
                .bind_identity_if_unclaimed(user.id, &key, Timestamp::now())
                .await
            {
                Ok(true) => {
                    tracing::info!(user = %user.name.as_str(), provider = %key.provider, subject = %key.subject, "OpenID identity bound to the account of its name, which had none");
                    return Ok(user);
                }
                Ok(false) => {
                    tracing::warn!(user = %name.as_str(), provider = %key.provider, subject = %key.subject, "OpenID login refused: the name belongs to an account with a local password or another identity");
                    return Err(HubError::LoginRefused(format!(
                        "The name {} is taken by another gantry account, so this {} login cannot use it. If that account is yours, ask an administrator to link this login to it: gantry user link {} --provider {} --subject {}",
                        name.as_str(),
                        provider.display_name,
                        name.as_str(),
                        key.provider,
                        key.subject
                    )));
                }
                Err(StoreError::IdentityTaken { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Err(HubError::Internal(format!(
            "the account for the OpenID login of {} kept changing under parallel logins",
            name.as_str()
        )))
    }

    /// `GET /hub/api/users/{name}/identities` (admins): the OpenID identities that may log
    /// into the account, oldest first.
    pub(super) async fn list_identities(
        &self,
        request: &Request<Incoming>,
        name: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        self.admin_for_read(request.headers()).await?;
        let user = self.existing_user(name).await?;
        let linked = self.store.identities_of(user.id).await?;
        Ok(response::json(
            StatusCode::OK,
            &Value::Array(linked.iter().map(identity_model).collect()),
        ))
    }

    /// `POST /hub/api/users/{name}/identities` (admins), `{"provider": id, "subject": sub}`:
    /// that provider's user `sub` may log into the account from now on. 201 with the identity,
    /// 200 if it was linked already, 400 for an unknown provider or a malformed subject, 409
    /// naming the account it is linked to.
    pub(super) async fn link_identity(
        &self,
        request: Request<Incoming>,
        name: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (parts, body) = request.into_parts();
        let caller = self.admin_for_change(&parts).await?;
        let user = self.existing_user(name).await?;
        let body: IdentityRequest = read_json(&parts.headers, body).await?;
        let identity = identity_to_link(&self.config.oidc, &body.provider, &body.subject)
            .map_err(|error| HubError::BadRequest(error.to_string()))?;
        let now = Timestamp::now();
        let created = match self.store.link_identity(user.id, &identity, now).await {
            Ok(created) => created,
            Err(StoreError::IdentityTaken { .. }) => {
                let owner = self
                    .store
                    .user_by_identity(&identity.issuer, &identity.subject)
                    .await?
                    .map_or_else(
                        || "another account".to_owned(),
                        |u| u.name.as_str().to_owned(),
                    );
                return Ok(super::api::conflict(&format!(
                    "the identity {:?} of provider {} is linked to {owner}: unlink it there first",
                    identity.subject, identity.provider
                )));
            }
            Err(StoreError::NoSuchUser { .. }) => return Err(HubError::NotFound),
            Err(other) => return Err(other.into()),
        };
        if created {
            tracing::info!(user = %user.name.as_str(), provider = %identity.provider, subject = %identity.subject, by = %caller.user().name.as_str(), "OpenID identity linked");
        }
        let linked = self
            .store
            .identities_of(user.id)
            .await?
            .into_iter()
            .find(|l| {
                l.identity.issuer == identity.issuer && l.identity.subject == identity.subject
            })
            .ok_or(HubError::NotFound)?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(response::json(status, &identity_model(&linked)))
    }

    /// `DELETE /hub/api/users/{name}/identities` (admins), `{"provider": id, "subject": sub}`:
    /// that identity no longer logs into the account. 204; 404 if it was not linked to it.
    /// Sessions it started stay until they end (`POST /hub/api/users/{name}/logout` ends them).
    pub(super) async fn unlink_identity(
        &self,
        request: Request<Incoming>,
        name: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (parts, body) = request.into_parts();
        let caller = self.admin_for_change(&parts).await?;
        let user = self.existing_user(name).await?;
        let body: IdentityRequest = read_json(&parts.headers, body).await?;
        let identity = identity_to_link(&self.config.oidc, &body.provider, &body.subject)
            .map_err(|error| HubError::BadRequest(error.to_string()))?;
        if !self
            .store
            .unlink_identity(user.id, &identity.issuer, &identity.subject)
            .await?
        {
            return Err(HubError::NotFound);
        }
        tracing::info!(user = %user.name.as_str(), provider = %identity.provider, subject = %identity.subject, by = %caller.user().name.as_str(), "OpenID identity unlinked");
        let mut response = Response::new(super::body(""));
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use gantry_auth::OidcConfig;

    use super::*;

    fn entry(id: &str, issuer: &str) -> OidcEntry {
        OidcEntry {
            id: id.to_owned(),
            display_name: id.to_owned(),
            config: OidcConfig::new(
                issuer,
                "gantry",
                None,
                "https://hub.example.org/hub/oidc/x/callback",
            ),
        }
    }

    #[test]
    fn an_identity_to_link_names_a_configured_provider_and_a_sub_shaped_subject() {
        let providers = [
            entry("lab", "https://lab.example.org"),
            entry("uni", "https://uni.example.org/realms/main"),
        ];
        assert_eq!(
            identity_to_link(&providers, "uni", "f81d4fae-7dec"),
            Ok(ProviderIdentity {
                provider: "uni".into(),
                issuer: "https://uni.example.org/realms/main".into(),
                subject: "f81d4fae-7dec".into(),
            })
        );
        let max = "s".repeat(MAX_SUBJECT_CHARS);
        assert!(identity_to_link(&providers, "lab", &max).is_ok());
        for bad in ["", "a\nb", "tab\there", "\u{7f}", &format!("{max}s")] {
            assert_eq!(
                identity_to_link(&providers, "lab", bad),
                Err(LinkError::BadSubject),
                "{bad:?}"
            );
        }
        let unknown = identity_to_link(&providers, "Lab", "x").unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "no OpenID provider \"Lab\" is configured (configured: lab, uni); use the id of an [auth.oidc.<id>] table"
        );
        assert!(
            identity_to_link(&[], "lab", "x")
                .unwrap_err()
                .to_string()
                .contains("(configured: none)")
        );
    }
}
