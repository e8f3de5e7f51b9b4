//! The token page, `/hub/token`: create (note, expiry, scopes), list and revoke the caller's
//! own API tokens. A new token's secret is shown once, on the page that created it.

use gantry_auth::CsrfToken;
use gantry_auth::store::{ApiToken, TokenId};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::pages::{self, TokenPage, TokenRow};
use super::response::{self, HubError};
use super::{Caller, Hub};
use crate::errors::ResponseBody;

fn when(ts: Option<jiff::Timestamp>, none: &str) -> String {
    ts.map_or_else(
        || none.to_owned(),
        |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

impl Hub {
    async fn render_token_page(
        &self,
        status: StatusCode,
        session: &gantry_auth::store::Session,
        secret: &str,
        message: Option<String>,
        new_token: Option<String>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let tokens = self
            .store
            .tokens_of(session.user.id, jiff::Timestamp::now())
            .await?;
        let rows = tokens
            .iter()
            .map(|t: &ApiToken| TokenRow {
                id: t.id.get(),
                note: t.note.clone(),
                scopes: t.scopes.to_string(),
                created: when(Some(t.created), ""),
                expires: when(t.expires, "never"),
                last_used: when(t.last_used, "never"),
            })
            .collect();
        let page = TokenPage {
            message,
            new_token,
            xsrf: CsrfToken::for_session(secret).as_str().to_owned(),
            admin: session.user.admin,
            tokens: rows,
        };
        Ok(response::html(status, pages::render(&page)))
    }

    /// `GET /hub/token`.
    pub(super) async fn token_page(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        match self.caller(request.headers()).await? {
            Some(Caller::Session { session, secret }) => {
                self.render_token_page(StatusCode::OK, &session, &secret, None, None)
                    .await
            }
            _ => Ok(response::redirect("/hub/login?next=%2Fhub%2Ftoken")),
        }
    }

    /// The session caller of a token-page form, after the CSRF check.
    async fn token_form(
        &self,
        request: Request<Incoming>,
    ) -> Result<
        (
            std::sync::Arc<gantry_auth::store::Session>,
            String,
            Caller,
            super::request::Form,
        ),
        HubError,
    > {
        let (caller, form) = self.caller_form(request).await?;
        match &caller {
            Caller::Session { session, secret } => {
                Ok((session.clone(), secret.clone(), caller, form))
            }
            Caller::Token(_) => Err(HubError::Forbidden),
        }
    }

    /// `POST /hub/token` (form: note, expires_in, scopes).
    pub(super) async fn token_create(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (session, secret, caller, form) = self.token_form(request).await?;
        let expires_in = match form.get("expires_in").unwrap_or("0").parse::<u64>() {
            Ok(secs) => Some(secs),
            Err(_) => {
                return Err(HubError::BadRequest(
                    "expires_in must be a number of seconds".into(),
                ));
            }
        };
        let scopes = form.get("scopes").unwrap_or("self").trim();
        let scopes = if scopes.is_empty() { "self" } else { scopes };
        let note = form.get("note").unwrap_or("").to_owned();
        match self
            .mint_token(&caller, &session.user, scopes, note, expires_in)
            .await
        {
            Ok((token, _)) => {
                self.render_token_page(
                    StatusCode::CREATED,
                    &session,
                    &secret,
                    None,
                    Some(token.expose().to_owned()),
                )
                .await
            }
            Err(HubError::BadRequest(message)) => {
                self.render_token_page(
                    StatusCode::BAD_REQUEST,
                    &session,
                    &secret,
                    Some(message),
                    None,
                )
                .await
            }
            Err(HubError::Forbidden) => {
                self.render_token_page(
                    StatusCode::FORBIDDEN,
                    &session,
                    &secret,
                    Some("You may not grant those scopes.".to_owned()),
                    None,
                )
                .await
            }
            Err(other) => Err(other),
        }
    }

    /// `POST /hub/token/revoke` (form: id): revokes one of the caller's tokens.
    pub(super) async fn token_revoke(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (session, _, _, form) = self.token_form(request).await?;
        let id = form
            .get("id")
            .and_then(|id| id.parse::<i64>().ok())
            .ok_or(HubError::NotFound)?;
        // Scoped to the owner: another user's token id revokes nothing.
        let revoked = self
            .store
            .revoke_token(session.user.id, TokenId::new(id))
            .await?;
        self.credentials_changed(session.user.id).await;
        if !revoked {
            return Err(HubError::NotFound);
        }
        Ok(response::redirect("/hub/token"))
    }
}
