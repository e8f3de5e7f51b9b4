//! OpenID Connect login: discovery, the authorization-code flow with PKCE, and ID token checks.
//!
//! The flow, for one browser:
//!
//! 1. [`OidcProvider::discover`] reads the provider's metadata and signing keys from
//!    `<issuer>/.well-known/openid-configuration` once, at startup.
//! 2. [`OidcProvider::begin_login`] draws a fresh `state`, `nonce` and PKCE verifier (each a
//!    256-bit [`Secret`]) and returns the provider's authorization URL (PKCE method `S256`)
//!    with a [`PendingLogin`]. The caller keeps the pending login server-side, bound to the
//!    browser (for example under a short-lived, HttpOnly cookie), and redirects the browser.
//! 3. The provider sends the browser back to the redirect URL with `code`, `state` and maybe
//!    `iss`. [`OidcProvider::finish_login`] checks, in this order, and stops at the first
//!    failure: `state` equals the pending one (constant time); `iss`, when present, equals the
//!    issuer (RFC 9207 mix-up defence; when the provider advertises
//!    `authorization_response_iss_parameter_supported`, a missing `iss` is refused too); the
//!    provider reported no error; the code exchange with the PKCE verifier succeeds; the ID token
//!    passes [`OidcProvider::validate_id_token`]; then the claims are mapped ([`OidcIdentity`]).
//!
//! ID token validation (OIDC Core §3.1.3.7) is openidconnect's verifier: the signature with a
//! key from the provider's JWKS, `iss` exactly the issuer, `aud` containing the client id (and
//! no untrusted extra audience), `exp` in the future, and `nonce` equal to the pending one.
//! Algorithms are limited to the asymmetric ones the provider advertises: `none` and the
//! HMAC family (whose key would be the client secret) are refused. **Key rotation**: when the
//! signature does not verify with the cached JWKS (an unknown `kid`, or a known `kid` whose key
//! was replaced), the provider's metadata and JWKS are fetched again, once, and the token is
//! checked again against the new keys. ID tokens
//! come only from the token endpoint, over the connection gantry opened, so a stranger cannot
//! make gantry refetch at will.
//!
//! Claim mapping ([`OidcConfig`]): the user name comes from one claim (default
//! `preferred_username`) and is parsed as a [`UserName`]; with `email` as the user name claim,
//! `email_verified` must be `true` (CVE-2026-33175). The groups claim decides access: a user
//! must be a member of an allowed group or an admin group (membership as the provider asserts
//! it, not visibility), unless `allow_all` is set. Optional numeric UID/GID claims are read for
//! the spawner. Restrictions run before any allow rule, so nothing can short-circuit them.
//!
//! Each failure is an [`OidcError`] variant naming the failed check; [`OidcError::status`]
//! says whether it is the client's fault (400/403) or the provider's or ours (502/500).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreErrorResponseType, CoreGenderClaim, CoreGrantType, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AccessToken, AdditionalClaims, AdditionalProviderMetadata, AuthorizationCode,
    ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, DiscoveryError, EndSessionUrl,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpClientError, IdToken, IssuerUrl,
    JwsSigningAlgorithm, LogoutRequest, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadata, RedirectUrl, RequestTokenError,
    Scope, SignatureVerificationError, StandardErrorResponse, TokenResponse, UserInfoError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use url::Url;

use crate::names::{NameError, NamePolicy, UserName};
use crate::secret::{RandomnessError, Secret};

#[cfg(test)]
mod tests;

/// How to log users in with an OpenID Connect provider.
///
/// Unknown keys are refused when this is read from a config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL, exactly as the provider writes it in its metadata and tokens
    /// (`https://id.example.org/realms/main`). Must be `https`, or `http` on a loopback host.
    pub issuer_url: String,
    /// The client id registered at the provider for gantry.
    pub client_id: String,
    /// The client secret; `None` for a public client (PKCE alone). Default: `None`.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Gantry's callback URL, registered at the provider (`https://hub.example.org/hub/oauth_callback`).
    pub redirect_url: String,
    /// Scopes to ask for besides `openid` (always sent). Default: `profile`, `email`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The claim that holds the user name. Default: `preferred_username`. With `email`, the
    /// `email_verified` claim must be `true`.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// The claim that holds the user's groups (a list of strings, or one string).
    /// Default: `groups`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Members of any of these groups may log in. Default: none.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Members of any of these groups may log in and are admins. Default: none.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// Let every user the provider authenticates log in, whatever their groups. Default:
    /// `false`, so a config with no groups lets nobody in rather than everybody.
    #[serde(default)]
    pub allow_all: bool,
    /// The claim that holds the user's numeric UID (the spawner runs the user's container
    /// with it); a number or a string of digits, not 0. Default: none (no UID).
    #[serde(default)]
    pub uid_claim: Option<String>,
    /// The claim that holds the user's numeric primary GID; as [`OidcConfig::uid_claim`].
    /// Default: none.
    #[serde(default)]
    pub gid_claim: Option<String>,
    /// Also fetch the userinfo endpoint after the token exchange; its claims fill in what the
    /// ID token lacks (some providers put groups only there). Default: `false`.
    #[serde(default)]
    pub fetch_userinfo: bool,
    /// Timeout of each request to the provider, in seconds. Default: 10.
    #[serde(default = "default_http_timeout_secs")]
    pub http_timeout_secs: u64,
    /// How user names from the provider are normalised. Not read from config files.
    #[serde(skip)]
    pub name_policy: NamePolicy,
}

fn default_scopes() -> Vec<String> {
    vec!["profile".to_owned(), "email".to_owned()]
}

fn default_username_claim() -> String {
    "preferred_username".to_owned()
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

fn default_http_timeout_secs() -> u64 {
    10
}

impl OidcConfig {
    /// A config with the defaults for everything the provider does not dictate.
    pub fn new(
        issuer_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Option<String>,
        redirect_url: impl Into<String>,
    ) -> Self {
        Self {
            issuer_url: issuer_url.into(),
            client_id: client_id.into(),
            client_secret,
            redirect_url: redirect_url.into(),
            scopes: default_scopes(),
            username_claim: default_username_claim(),
            groups_claim: default_groups_claim(),
            allowed_groups: Vec::new(),
            admin_groups: Vec::new(),
            allow_all: false,
            uid_claim: None,
            gid_claim: None,
            fetch_userinfo: false,
            http_timeout_secs: default_http_timeout_secs(),
            name_policy: NamePolicy::default(),
        }
    }

    /// Checks the config.
    ///
    /// # Errors
    ///
    /// [`OidcConfigError`] names the field and what is wrong with it.
    pub fn validate(&self) -> Result<(), OidcConfigError> {
        let issuer = parse_url("issuer_url", &self.issuer_url)?;
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err(OidcConfigError::invalid(
                "issuer_url",
                "must have no query or fragment",
            ));
        }
        parse_url("redirect_url", &self.redirect_url)?;
        if self.client_id.is_empty() {
            return Err(OidcConfigError::invalid("client_id", "must not be empty"));
        }
        if self.client_secret.as_deref() == Some("") {
            return Err(OidcConfigError::invalid(
                "client_secret",
                "must not be empty; leave it out for a public client",
            ));
        }
        for (field, claim) in [
            ("username_claim", Some(&self.username_claim)),
            ("groups_claim", Some(&self.groups_claim)),
            ("uid_claim", self.uid_claim.as_ref()),
            ("gid_claim", self.gid_claim.as_ref()),
        ] {
            if claim.is_some_and(|c| c.is_empty()) {
                return Err(OidcConfigError::invalid(field, "must not be empty"));
            }
        }
        if self.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            return Err(OidcConfigError::invalid(
                "scopes",
                "each scope must be one non-empty word",
            ));
        }
        if !self.allow_all && self.allowed_groups.is_empty() && self.admin_groups.is_empty() {
            return Err(OidcConfigError::invalid(
                "allowed_groups",
                "nobody could log in: name allowed_groups or admin_groups, or set allow_all",
            ));
        }
        if self.http_timeout_secs == 0 {
            return Err(OidcConfigError::invalid(
                "http_timeout_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Parses a provider or callback URL: `https`, or `http` on a loopback host (tests, local
/// development). Anything else would send codes and tokens in the clear.
fn parse_url(field: &'static str, raw: &str) -> Result<Url, OidcConfigError> {
    let url = Url::parse(raw).map_err(|e| OidcConfigError::invalid(field, e.to_string()))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(OidcConfigError::invalid(
            field,
            "must be an https URL (http only on a loopback host)",
        )),
    }
}

/// A refused [`OidcConfig`].
#[derive(Debug, thiserror::Error)]
#[error("oidc.{field}: {reason}")]
pub struct OidcConfigError {
    /// The field, as named in the config file.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl OidcConfigError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Every claim of a token, as the provider sent them.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
struct AllClaims {
    #[serde(flatten)]
    claims: Map<String, Value>,
}

impl AdditionalClaims for AllClaims {}

/// Provider metadata gantry reads beyond the core set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
struct ExtraMetadata {
    /// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_session_endpoint: Option<EndSessionUrl>,
    /// RFC 9207: the provider always sends `iss` in authorization responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    authorization_response_iss_parameter_supported: Option<bool>,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

type GantryIdToken =
    IdToken<AllClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// The HTTP client's error, as openidconnect wraps it.
pub type HttpError = HttpClientError<reqwest::Error>;

/// What discovery found, replaced as a whole when the keys are fetched again.
struct Discovered {
    client: Client,
    /// Asymmetric algorithms the provider signs ID tokens with.
    algorithms: Vec<CoreJwsSigningAlgorithm>,
    end_session: Option<EndSessionUrl>,
    iss_parameter_required: bool,
}

/// A login started by [`OidcProvider::begin_login`], to be finished by
/// [`OidcProvider::finish_login`]. Its `Debug` output is redacted.
///
/// Store it server-side, bound to the browser that started the login, and use it once.
#[derive(Clone)]
pub struct PendingLogin {
    state: String,
    nonce: String,
    pkce_verifier: String,
}

impl PendingLogin {
    /// Rebuilds a pending login from the parts a store kept (see the accessors).
    pub fn from_parts(state: String, nonce: String, pkce_verifier: String) -> Self {
        Self {
            state,
            nonce,
            pkce_verifier,
        }
    }

    /// The `state` sent to the provider.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// The `nonce` the ID token must carry.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// The PKCE code verifier, sent with the code exchange.
    pub fn pkce_verifier(&self) -> &str {
        &self.pkce_verifier
    }
}

impl fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingLogin(…)")
    }
}

/// The query parameters of the provider's redirect to gantry's callback URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallbackParams {
    /// `code`: the authorization code.
    pub code: Option<String>,
    /// `state`: must equal the pending login's.
    pub state: Option<String>,
    /// `iss` (RFC 9207): when present, must equal the issuer.
    pub iss: Option<String>,
    /// `error`: the provider refused the login (for example the user denied consent).
    pub error: Option<String>,
    /// `error_description`, for the log.
    pub error_description: Option<String>,
}

impl CallbackParams {
    /// Parses a callback URL's query string (without the `?`).
    ///
    /// # Errors
    ///
    /// [`OidcError::DuplicateParameter`] when a parameter gantry reads appears twice: which
    /// one counts would be a guess.
    pub fn from_query(query: &str) -> Result<Self, OidcError> {
        let mut params = Self::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let (name, slot) = match key.as_ref() {
                "code" => ("code", &mut params.code),
                "state" => ("state", &mut params.state),
                "iss" => ("iss", &mut params.iss),
                "error" => ("error", &mut params.error),
                "error_description" => ("error_description", &mut params.error_description),
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(OidcError::DuplicateParameter(name));
            }
        }
        Ok(params)
    }
}

/// Who logged in, as the provider vouches.
#[derive(Clone, PartialEq, Eq)]
pub struct OidcIdentity {
    /// The user name, from the configured claim.
    pub username: UserName,
    /// The provider's subject identifier (`sub`), stable for this user at this provider.
    pub subject: String,
    /// The user's groups, from the groups claim; empty when it is absent.
    pub groups: BTreeSet<String>,
    /// Whether the user is in one of the admin groups.
    pub admin: bool,
    /// The numeric UID, when a UID claim is configured.
    pub uid: Option<u32>,
    /// The numeric GID, when a GID claim is configured.
    pub gid: Option<u32>,
    /// The raw ID token, kept for [`OidcProvider::logout_url`]'s `id_token_hint`.
    pub id_token: String,
}

impl fmt::Debug for OidcIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcIdentity")
            .field("username", &self.username)
            .field("subject", &self.subject)
            .field("groups", &self.groups)
            .field("admin", &self.admin)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .finish_non_exhaustive()
    }
}

/// The ID token check that failed.
#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    /// The token is not a well-formed JWT with ID token claims.
    #[error("ID token is malformed")]
    Malformed(#[source] serde_json::Error),
    /// The token is unsigned (`alg: none`).
    #[error("ID token is unsigned (alg none)")]
    Unsigned,
    /// The token's algorithm is not one gantry accepts from this provider.
    #[error("ID token algorithm refused")]
    Algorithm(#[source] ClaimsVerificationError),
    /// No key matched, or the signature does not verify.
    #[error("ID token signature invalid")]
    Signature(#[source] ClaimsVerificationError),
    /// `iss` is not the issuer.
    #[error("ID token issuer mismatch")]
    Issuer(#[source] ClaimsVerificationError),
    /// `aud` does not name gantry's client id, or names an untrusted party.
    #[error("ID token audience mismatch")]
    Audience(#[source] ClaimsVerificationError),
    /// `exp` has passed (or `iat` is unacceptable).
    #[error("ID token expired")]
    Expired(#[source] ClaimsVerificationError),
    /// `nonce` is not the pending login's.
    #[error("ID token nonce mismatch")]
    Nonce(#[source] ClaimsVerificationError),
    /// Another check failed.
    #[error("ID token refused")]
    Other(#[source] ClaimsVerificationError),
}

impl From<ClaimsVerificationError> for IdTokenError {
    fn from(error: ClaimsVerificationError) -> Self {
        use ClaimsVerificationError as C;
        use SignatureVerificationError as S;
        match error {
            C::SignatureVerification(S::NoSignature) => Self::Unsigned,
            C::SignatureVerification(S::DisallowedAlg(_) | S::UnsupportedAlg(_)) => {
                Self::Algorithm(error)
            }
            C::SignatureVerification(_) => Self::Signature(error),
            C::InvalidIssuer(_) => Self::Issuer(error),
            C::InvalidAudience(_) => Self::Audience(error),
            C::Expired(_) => Self::Expired(error),
            C::InvalidNonce(_) => Self::Nonce(error),
            _ => Self::Other(error),
        }
    }
}

/// An OpenID Connect login that failed, by the check that failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The config was refused.
    #[error(transparent)]
    Config(#[from] OidcConfigError),
    /// The HTTP client could not be built.
    #[error("building the HTTP client failed")]
    HttpClient(#[source] reqwest::Error),
    /// Discovery (metadata or JWKS) failed.
    #[error("OpenID provider discovery at {issuer} failed")]
    Discovery {
        /// The issuer URL.
        issuer: String,
        /// Why.
        #[source]
        source: DiscoveryError<HttpError>,
    },
    /// The operating system could not supply random bytes.
    #[error(transparent)]
    Randomness(#[from] RandomnessError),
    /// A callback parameter appeared twice.
    #[error("callback parameter `{0}` appears more than once")]
    DuplicateParameter(&'static str),
    /// The callback's `state` is missing or not the pending login's (login CSRF).
    #[error("callback state does not match the pending login")]
    StateMismatch,
    /// The callback's `iss` is not the issuer (RFC 9207 mix-up).
    #[error("callback iss `{found}` is not the issuer")]
    IssuerMismatch {
        /// The `iss` the callback carried.
        found: String,
    },
    /// The provider promises `iss` in authorization responses (RFC 9207) but sent none.
    #[error("callback lacks the iss parameter the provider promises")]
    IssuerMissing,
    /// The provider refused the login (the callback carried `error`).
    #[error("provider refused the login: {error}")]
    ProviderRefused {
        /// The `error` code.
        error: String,
        /// The `error_description`, if any.
        description: Option<String>,
    },
    /// The callback carried no `code`.
    #[error("callback lacks the code parameter")]
    MissingCode,
    /// The token endpoint refused the code (wrong PKCE verifier, used or expired code), or
    /// could not be reached.
    #[error("code exchange failed")]
    TokenExchange(
        #[source] RequestTokenError<HttpError, StandardErrorResponse<CoreErrorResponseType>>,
    ),
    /// The provider's metadata lacks an endpoint the login needs.
    #[error("provider metadata lacks `{0}`")]
    MissingEndpoint(&'static str),
    /// The token response carried no ID token.
    #[error("token response lacks an ID token")]
    MissingIdToken,
    /// The ID token failed a check.
    #[error(transparent)]
    IdToken(#[from] IdTokenError),
    /// The userinfo request failed.
    #[error("userinfo request failed")]
    UserInfo(#[source] UserInfoError<HttpError>),
    /// A required claim is missing.
    #[error("claim `{0}` is missing")]
    MissingClaim(String),
    /// A claim has the wrong type or value.
    #[error("claim `{claim}` is invalid: {reason}")]
    InvalidClaim {
        /// The claim.
        claim: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The user name claim is not a valid user name.
    #[error("user name claim refused")]
    Name(#[source] NameError),
    /// The user name is the e-mail address, and the provider has not verified it.
    #[error("e-mail address is not verified")]
    EmailNotVerified,
    /// The user is in none of the allowed or admin groups.
    #[error("user {username} is in none of the allowed groups")]
    NotInAllowedGroups {
        /// Who was refused.
        username: UserName,
    },
    /// The provider advertises no `end_session_endpoint`.
    #[error("provider offers no RP-initiated logout")]
    NoEndSession,
}

impl OidcError {
    /// The HTTP status a callback handler answers with: 400 for a malformed or forged
    /// callback, 403 for a valid login gantry refuses (bad ID token, not allowed), 502 when
    /// the provider fails, 500 for gantry's own faults.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::DuplicateParameter(_)
            | Self::StateMismatch
            | Self::IssuerMismatch { .. }
            | Self::IssuerMissing
            | Self::MissingCode => StatusCode::BAD_REQUEST,
            // The provider answered and refused the grant: the code or verifier was wrong.
            Self::TokenExchange(RequestTokenError::ServerResponse(_)) => StatusCode::BAD_REQUEST,
            Self::ProviderRefused { .. }
            | Self::IdToken(_)
            | Self::MissingClaim(_)
            | Self::InvalidClaim { .. }
            | Self::Name(_)
            | Self::EmailNotVerified
            | Self::NotInAllowedGroups { .. } => StatusCode::FORBIDDEN,
            Self::Discovery { .. }
            | Self::TokenExchange(_)
            | Self::MissingIdToken
            | Self::MissingEndpoint(_)
            | Self::UserInfo(_) => StatusCode::BAD_GATEWAY,
            Self::Config(_) | Self::HttpClient(_) | Self::Randomness(_) | Self::NoEndSession => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// Whether the login failed through the client's (browser's) fault or a refusal: the
    /// status is 4xx.
    pub fn is_client_error(&self) -> bool {
        self.status().is_client_error()
    }
}

/// A discovered OpenID provider and gantry's client registration there.
pub struct OidcProvider {
    config: OidcConfig,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    http: reqwest::Client,
    discovered: RwLock<Arc<Discovered>>,
}

impl fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl OidcProvider {
    /// Validates `config` and reads the provider's metadata and JWKS from the issuer.
    ///
    /// The HTTP client follows no redirects (openidconnect's advice against SSRF) and
    /// verifies TLS with the Mozilla root set (webpki-roots).
    ///
    /// # Errors
    ///
    /// [`OidcError::Config`] for a refused config, [`OidcError::Discovery`] when the
    /// provider cannot be read or its metadata names another issuer.
    pub async fn discover(config: OidcConfig) -> Result<Self, OidcError> {
        config.validate()?;
        let issuer = IssuerUrl::new(config.issuer_url.clone())
            .map_err(|e| OidcConfigError::invalid("issuer_url", e.to_string()))?;
        let redirect = RedirectUrl::new(config.redirect_url.clone())
            .map_err(|e| OidcConfigError::invalid("redirect_url", e.to_string()))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.http_timeout_secs))
            .build()
            .map_err(OidcError::HttpClient)?;
        let discovered = discover(&config, &issuer, &redirect, &http).await?;
        Ok(Self {
            config,
            issuer,
            redirect,
            http,
            discovered: RwLock::new(Arc::new(discovered)),
        })
    }

    /// The issuer, as configured and as the provider's metadata confirmed.
    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    fn current(&self) -> Arc<Discovered> {
        Arc::clone(
            &self
                .discovered
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Fetches the metadata and JWKS again (key rotation) and uses them from now on.
    async fn rediscover(&self) -> Result<Arc<Discovered>, OidcError> {
        let fresh =
            Arc::new(discover(&self.config, &self.issuer, &self.redirect, &self.http).await?);
        *self
            .discovered
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// Starts a login: the URL to send the browser to, and what [`Self::finish_login`] needs.
    ///
    /// # Errors
    ///
    /// [`OidcError::Randomness`] when no random bytes can be had.
    pub fn begin_login(&self) -> Result<(Url, PendingLogin), OidcError> {
        let state = Secret::generate()?.expose().to_owned();
        let nonce = Secret::generate()?.expose().to_owned();
        // 64 hex digits: within RFC 7636's 43 to 128 unreserved characters.
        let verifier = Secret::generate()?.expose().to_owned();
        let challenge =
            PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.clone()));
        let discovered = self.current();
        let (state_for_url, nonce_for_url) = (state.clone(), nonce.clone());
        let (url, _, _) = discovered
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state_for_url),
                move || Nonce::new(nonce_for_url),
            )
            .add_scopes(
                self.config
                    .scopes
                    .iter()
                    .filter(|s| *s != "openid")
                    .map(|s| Scope::new(s.clone())),
            )
            .set_pkce_challenge(challenge)
            .url();
        Ok((url, PendingLogin::from_parts(state, nonce, verifier)))
    }

    /// Finishes a login from the callback's parameters; see the [module documentation]
    /// (crate::oidc) for the checks and their order.
    ///
    /// # Errors
    ///
    /// The [`OidcError`] variant of the first check that failed.
    pub async fn finish_login(
        &self,
        pending: &PendingLogin,
        params: &CallbackParams,
    ) -> Result<OidcIdentity, OidcError> {
        let state_ok = params
            .state
            .as_deref()
            .is_some_and(|s| bool::from(s.as_bytes().ct_eq(pending.state.as_bytes())));
        if !state_ok {
            return Err(OidcError::StateMismatch);
        }
        let discovered = self.current();
        match &params.iss {
            Some(iss) if iss != self.issuer.as_str() => {
                return Err(OidcError::IssuerMismatch { found: iss.clone() });
            }
            None if discovered.iss_parameter_required => return Err(OidcError::IssuerMissing),
            _ => {}
        }
        if let Some(error) = &params.error {
            return Err(OidcError::ProviderRefused {
                error: error.clone(),
                description: params.error_description.clone(),
            });
        }
        let code = params.code.clone().ok_or(OidcError::MissingCode)?;

        let token = discovered
            .client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|_| OidcError::MissingEndpoint("token_endpoint"))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(OidcError::TokenExchange)?;
        let raw = token
            .id_token()
            .ok_or(OidcError::MissingIdToken)?
            .to_string();
        let mut claims = self.validate_id_token(&raw, &pending.nonce).await?;

        if self.config.fetch_userinfo {
            let discovered = self.current();
            let subject = claims_subject(&claims)?;
            let userinfo = discovered
                .client
                .user_info(
                    AccessToken::new(token.access_token().secret().clone()),
                    Some(openidconnect::SubjectIdentifier::new(subject)),
                )
                .map_err(|_| OidcError::MissingEndpoint("userinfo_endpoint"))?
                .request_async::<AllClaims, _, CoreGenderClaim>(&self.http)
                .await
                .map_err(OidcError::UserInfo)?;
            // The ID token's claims win; userinfo fills in what it lacks.
            if let Ok(Value::Object(extra)) = serde_json::to_value(&userinfo) {
                for (key, value) in extra {
                    claims.entry(key).or_insert(value);
                }
            }
        }
        map_claims(&self.config, &claims, raw)
    }

    /// Checks a raw ID token (compact JWS) against the provider's keys, the issuer, the client
    /// id, the clock and `expected_nonce`, and returns all its claims.
    ///
    /// When the signature does not verify with the cached keys, the metadata and JWKS are
    /// fetched once more and the token is checked again (key rotation).
    ///
    /// # Errors
    ///
    /// [`OidcError::IdToken`] with the check that failed, or [`OidcError::Discovery`] when the
    /// refetch fails.
    pub async fn validate_id_token(
        &self,
        raw: &str,
        expected_nonce: &str,
    ) -> Result<Map<String, Value>, OidcError> {
        let token: GantryIdToken = raw
            .parse()
            .map_err(|e| OidcError::IdToken(IdTokenError::Malformed(e)))?;
        let nonce = Nonce::new(expected_nonce.to_owned());
        let first = verify(&self.current(), &token, &nonce);
        let result = match first {
            // An unknown `kid`, or a known `kid` whose key no longer verifies (a provider that
            // rotated its key and kept the id, as some do): fetch the keys once more.
            Err(ClaimsVerificationError::SignatureVerification(_)) => {
                let fresh = self.rediscover().await?;
                verify(&fresh, &token, &nonce)
            }
            other => other,
        };
        result.map_err(|e| OidcError::IdToken(e.into()))
    }

    /// The provider's logout URL (OpenID Connect RP-Initiated Logout 1.0), to send the browser
    /// to after gantry's own session is gone.
    ///
    /// # Errors
    ///
    /// [`OidcError::NoEndSession`] when the provider advertises no `end_session_endpoint`;
    /// [`OidcError::Config`] when `post_logout_redirect` is not a URL.
    pub fn logout_url(
        &self,
        id_token_hint: Option<&str>,
        post_logout_redirect: Option<&str>,
    ) -> Result<Url, OidcError> {
        let discovered = self.current();
        let endpoint = discovered
            .end_session
            .clone()
            .ok_or(OidcError::NoEndSession)?;
        let mut request = LogoutRequest::from(endpoint)
            .set_client_id(ClientId::new(self.config.client_id.clone()));
        if let Some(hint) = id_token_hint.and_then(|raw| raw.parse::<GantryIdToken>().ok()) {
            request = request.set_id_token_hint(&hint);
        }
        if let Some(redirect) = post_logout_redirect {
            let redirect = PostLogoutRedirectUrl::new(redirect.to_owned())
                .map_err(|e| OidcConfigError::invalid("post_logout_redirect", e.to_string()))?;
            request = request.set_post_logout_redirect_uri(redirect);
        }
        Ok(request.http_get_url())
    }
}

async fn discover(
    config: &OidcConfig,
    issuer: &IssuerUrl,
    redirect: &RedirectUrl,
    http: &reqwest::Client,
) -> Result<Discovered, OidcError> {
    // openidconnect checks that the metadata's `issuer` is exactly this URL.
    let metadata = Metadata::discover_async(issuer.clone(), http)
        .await
        .map_err(|source| OidcError::Discovery {
            issuer: issuer.to_string(),
            source,
        })?;
    let extra = metadata.additional_metadata().clone();
    // Asymmetric algorithms only: `none` is never a signature, and an HMAC "signature"
    // would be keyed with the client secret, which is no proof the provider issued it.
    let mut algorithms: Vec<CoreJwsSigningAlgorithm> = metadata
        .id_token_signing_alg_values_supported()
        .iter()
        .filter(|alg| !alg.uses_shared_secret())
        .cloned()
        .collect();
    if algorithms.is_empty() {
        algorithms.push(CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256);
    }
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(config.client_id.clone()),
        config.client_secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(redirect.clone());
    Ok(Discovered {
        client,
        algorithms,
        end_session: extra.end_session_endpoint,
        iss_parameter_required: extra.authorization_response_iss_parameter_supported == Some(true),
    })
}

fn verify(
    discovered: &Discovered,
    token: &GantryIdToken,
    nonce: &Nonce,
) -> Result<Map<String, Value>, ClaimsVerificationError> {
    let verifier = discovered
        .client
        .id_token_verifier()
        .set_allowed_algs(discovered.algorithms.iter().cloned());
    let claims = token.claims(&verifier, nonce)?;
    match serde_json::to_value(claims) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ClaimsVerificationError::Other(
            "ID token claims do not serialise to an object".to_owned(),
        )),
    }
}

fn claims_subject(claims: &Map<String, Value>) -> Result<String, OidcError> {
    match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => Ok(sub.clone()),
        _ => Err(OidcError::MissingClaim("sub".to_owned())),
    }
}

/// Turns validated claims into an identity, restrictions first: e-mail verification, then
/// the user name, then group membership, then the numeric ids.
fn map_claims(
    config: &OidcConfig,
    claims: &Map<String, Value>,
    id_token: String,
) -> Result<OidcIdentity, OidcError> {
    let subject = claims_subject(claims)?;
    if config.username_claim == "email" {
        // Missing counts as unverified: an unverified address names nobody.
        if claims.get("email_verified") != Some(&Value::Bool(true)) {
            return Err(OidcError::EmailNotVerified);
        }
    }
    let raw_name = match claims.get(&config.username_claim) {
        Some(Value::String(name)) => name,
        Some(_) => {
            return Err(OidcError::InvalidClaim {
                claim: config.username_claim.clone(),
                reason: "not a string",
            });
        }
        None => return Err(OidcError::MissingClaim(config.username_claim.clone())),
    };
    let username = UserName::parse(raw_name, config.name_policy).map_err(OidcError::Name)?;

    let groups = groups(claims.get(&config.groups_claim), &config.groups_claim)?;
    let admin = config.admin_groups.iter().any(|g| groups.contains(g));
    let allowed =
        config.allow_all || admin || config.allowed_groups.iter().any(|g| groups.contains(g));
    if !allowed {
        return Err(OidcError::NotInAllowedGroups { username });
    }
    let uid = numeric_id(claims, config.uid_claim.as_deref())?;
    let gid = numeric_id(claims, config.gid_claim.as_deref())?;
    Ok(OidcIdentity {
        username,
        subject,
        groups,
        admin,
        uid,
        gid,
        id_token,
    })
}

fn groups(value: Option<&Value>, claim: &str) -> Result<BTreeSet<String>, OidcError> {
    let invalid = || OidcError::InvalidClaim {
        claim: claim.to_owned(),
        reason: "not a string or a list of strings",
    };
    match value {
        None | Some(Value::Null) => Ok(BTreeSet::new()),
        Some(Value::String(one)) => Ok(BTreeSet::from([one.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(invalid))
            .collect(),
        Some(_) => Err(invalid()),
    }
}

/// A UID or GID: a JSON number or a string of digits, 1 to `u32::MAX`. Zero is refused, so a
/// provider's claim can never make a container run as root.
fn numeric_id(claims: &Map<String, Value>, claim: Option<&str>) -> Result<Option<u32>, OidcError> {
    let Some(claim) = claim else {
        return Ok(None);
    };
    let invalid = |reason| OidcError::InvalidClaim {
        claim: claim.to_owned(),
        reason,
    };
    let id = match claims.get(claim) {
        None | Some(Value::Null) => return Err(OidcError::MissingClaim(claim.to_owned())),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<u64>().ok()
        }
        Some(_) => return Err(invalid("not a number")),
    };
    match id.map(u32::try_from) {
        Some(Ok(0)) => Err(invalid("0 (root) is refused")),
        Some(Ok(id)) => Ok(Some(id)),
        _ => Err(invalid("not a number from 1 to 4294967295")),
    }
}

/// The PKCE S256 code challenge of `verifier` (RFC 7636 §4.2): base64url, without padding,
/// of its SHA-256. For the hub's own OAuth provider, which checks the verifiers that
/// single-user servers send.
pub fn pkce_challenge_s256(verifier: &str) -> String {
    PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.to_owned()))
        .as_str()
        .to_owned()
}
