//! OpenID Connect login over HTTP: the redirect to the provider and the callback.
//!
//! A login in flight is kept here, in memory, keyed by its `state`, together with a hash of
//! the random value in the browser's OpenID cookie: the callback must come back to the same
//! browser that started the login (a login CSRF defence on top of `state`), and the PKCE
//! verifier and nonce never leave the server. Logins in flight do not survive a restart;
//! the user starts again. How many are kept, and why a flood cannot push out anyone else's,
//! is in [`pending`].

mod pending;

use std::time::Instant;

use gantry_auth::{CallbackParams, OidcError, Secret, SecretHash, UnixIds, safe_next};
use http::{Request, Response};
use hyper::body::Incoming;

use super::request::Form;
use super::response::{self, HubError};
use super::{Hub, cookies};
use crate::errors::ResponseBody;

pub(super) use pending::{PendingLimits, PendingLogins};

impl Hub {
    /// `GET /hub/oidc/<id>/login`: sends the browser to the provider.
    pub(super) fn oidc_begin(
        &self,
        request: &Request<Incoming>,
        id: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let provider = self
            .providers
            .iter()
            .find(|p| p.id == id)
            .ok_or(HubError::NotFound)?;
        let next = safe_next(
            Form::query(request.uri()).get("next").unwrap_or(""),
            &self.home,
        );
        let (url, login) = provider.provider.begin_login()?;
        // The browser's OpenID cookie, kept when it has one: its logins are one per provider,
        // a new one replacing its own previous one (never another browser's).
        let browser = match self.cookies.get(request.headers(), cookies::OIDC) {
            Some(value) if gantry_auth::secret::well_formed(&value) => value,
            _ => Secret::generate()
                .map_err(|e| HubError::Internal(e.to_string()))?
                .expose()
                .to_owned(),
        };
        let address = super::CLIENT
            .try_with(|client| *client)
            .unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
        self.pending.insert(
            &provider.id,
            login,
            next,
            SecretHash::of(&browser),
            address,
            Instant::now(),
        )?;
        // Set again each time, so the cookie lives as long as the newest login.
        let set = self
            .cookies
            .set(cookies::OIDC, &browser, Some(cookies::FLOW_MAX_AGE_SECS));
        Ok(Self::with_cookies(response::redirect(url.as_str()), &[set]))
    }

    /// `GET /hub/oidc/<id>/callback`: finishes the login, finds the account the identity
    /// may log into (`Hub::account_for_login`) and starts a session. Every failure is a 4xx
    /// (or 502 for the provider's faults) and starts no session.
    pub(super) async fn oidc_callback(
        &self,
        request: &Request<Incoming>,
        id: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let provider = self
            .providers
            .iter()
            .find(|p| p.id == id)
            .ok_or(HubError::NotFound)?;
        let params = CallbackParams::from_query(request.uri().query().unwrap_or(""))?;
        let browser = self.cookies.get(request.headers(), cookies::OIDC);
        let pending = params
            .state
            .as_deref()
            .and_then(|state| self.pending.take(state, browser.as_deref()))
            .filter(|p| p.provider == provider.id);
        let Some(pending) = pending else {
            // No login in flight for this state from this browser: an unknown or replayed
            // state, another browser's callback, or one that expired. Without the pending
            // login there is no PKCE verifier or nonce to finish with.
            return Err(HubError::Oidc(OidcError::StateMismatch));
        };
        let identity = provider
            .provider
            .finish_login(&pending.login, &params)
            .await?;
        // Matched on (issuer, subject), never on the name alone: see `identities.rs`.
        let user = self.account_for_login(provider, &identity).await?;
        if !user.approved {
            return Err(HubError::Forbidden);
        }
        // The provider's groups are the truth about admin rights on every login, except for
        // the `GANTRY_ADMIN_USER` account (reached only through a linked identity): it stays
        // an admin, or its `GANTRY_ADMIN_TOKEN` would stop working.
        if user.admin != identity.admin && !self.is_reserved_admin(&user.name) {
            self.store.set_admin(user.id, identity.admin).await?;
            self.credentials_changed(user.id).await;
        }
        if identity.uid.is_some() || identity.gid.is_some() {
            let ids = UnixIds {
                uid: identity.uid,
                gid: identity.gid,
            };
            self.store.set_unix_ids(user.id, ids).await?;
        }
        // So are its groups (which decide the profiles offered); an admin's additions stay.
        self.store
            .set_provider_groups(user.id, &identity.groups)
            .await?;
        let user = self
            .store
            .user(user.id)
            .await?
            .ok_or_else(|| HubError::Internal("user vanished during login".into()))?;
        tracing::info!(user = %user.name.as_str(), provider = %provider.id, "OpenID Connect login");
        let max_age = i64::try_from(self.config.session_lifetime.as_secs()).unwrap_or(i64::MAX);
        let cookies = vec![
            self.cookies.clear(cookies::OIDC),
            self.cookies.set(cookies::IDP, &provider.id, Some(max_age)),
        ];
        self.start_session(request.headers(), &user, pending.next.as_str(), cookies)
            .await
    }
}
