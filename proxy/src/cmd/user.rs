//! `gantry user`: account administration from the command line, on the database the
//! configuration names. This is the first-run path to the first admin:
//! `gantry user add NAME --admin`.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use gantry_auth::store::NewUser;
use gantry_auth::{PasswordParams, Passwords, Secret, StoreError, UserName};

use gantry_proxy::hub::config::HubConfig;
use gantry_proxy::hub::identities::identity_to_link;

use super::up::{ConfigArg, init_logging, open_store};

/// Flags of `gantry user`.
#[derive(Debug, Args)]
pub(crate) struct UserArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    action: UserAction,
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Create a local account, approved. Without --password-stdin a random password is
    /// generated and printed once.
    Add {
        /// The user name (normalised: NFKC, lower-cased unless auth.username_case = "keep").
        name: String,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Approve an account created by sign-up, so it can log in.
    Approve {
        /// The user name.
        name: String,
    },
    /// List the accounts: name, admin, approved.
    List,
    /// Let an OpenID Connect identity log into an account: the user whose `sub` claim is
    /// SUBJECT at the provider of `[auth.oidc.ID]`, whatever name that provider shows. This is
    /// how an account with a local password, another identity, or the name of
    /// GANTRY_ADMIN_USER is opened to an OpenID login (the refusal page shows the subject).
    Link {
        /// The user name.
        name: String,
        /// The provider's id, from `[auth.oidc.<id>]`.
        #[arg(long)]
        provider: String,
        /// The user's subject (`sub`) at that provider.
        #[arg(long)]
        subject: String,
    },
    /// Stop an OpenID Connect identity from logging into an account (its sessions stay
    /// until they end; `gantry user revoke` ends them).
    Unlink {
        /// The user name.
        name: String,
        /// The provider's id, from `[auth.oidc.<id>]`.
        #[arg(long)]
        provider: String,
        /// The user's subject (`sub`) at that provider.
        #[arg(long)]
        subject: String,
    },
    /// End every session and API token of a user. (Open WebSockets in a running gantry end
    /// when the user's next request finds no session; use the API's
    /// `POST /hub/api/users/NAME/logout` to close them at once.)
    Revoke {
        /// The user name.
        name: String,
    },
}

pub(crate) fn run(args: &UserArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    // Changes to who may log in are audited on standard error, as `gantry up` logs them.
    init_logging("info", config.hub.log_format)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async {
            let store = open_store(&config).await?;
            let result = act(&args.action, &store, &config).await;
            store.close().await;
            result
        })
}

async fn act(
    action: &UserAction,
    store: &gantry_auth::Store,
    config: &HubConfig,
) -> anyhow::Result<()> {
    let parse = |raw: &str| {
        UserName::parse(raw, config.name_policy)
            .with_context(|| format!("{raw:?} is not a valid user name"))
    };
    let existing = async |raw: &str| {
        let name = parse(raw)?;
        store
            .user_by_name(&name)
            .await?
            .with_context(|| format!("no user named {}", name.as_str()))
    };
    let mut out = std::io::stdout().lock();
    match action {
        UserAction::Add {
            name,
            admin,
            password_stdin,
        } => {
            let name = parse(name)?;
            let (password, generated) = if *password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("cannot read the password from standard input")?;
                (line.trim_end_matches(['\r', '\n']).to_owned(), false)
            } else {
                (Secret::generate()?.expose()[..24].to_owned(), true)
            };
            if password.is_empty() {
                bail!("the password is empty");
            }
            let passwords = Passwords::new(PasswordParams::default())?;
            let hash = passwords.hash(&password)?;
            let new = NewUser {
                name: name.clone(),
                password_hash: Some(hash),
                admin: *admin,
                approved: true,
            };
            match store.create_user(&new, jiff::Timestamp::now()).await {
                Ok(_) => {}
                Err(StoreError::UserExists { .. }) => {
                    bail!("a user named {} already exists", name.as_str())
                }
                Err(other) => return Err(other.into()),
            }
            writeln!(
                out,
                "created {}{}",
                name.as_str(),
                if *admin { " (admin)" } else { "" }
            )?;
            if generated {
                writeln!(out, "password: {password}")?;
                writeln!(out, "(shown once; the user can sign in with it now)")?;
            }
        }
        UserAction::Approve { name } => {
            let name = parse(name)?;
            let user = store
                .user_by_name(&name)
                .await?
                .with_context(|| format!("no user named {}", name.as_str()))?;
            store.set_approved(user.id, true).await?;
            writeln!(out, "approved {}", name.as_str())?;
        }
        UserAction::List => {
            for user in store.list_users().await? {
                writeln!(
                    out,
                    "{}\tadmin={}\tapproved={}",
                    user.name.as_str(),
                    user.admin,
                    user.approved
                )?;
            }
        }
        UserAction::Link {
            name,
            provider,
            subject,
        } => {
            let user = existing(name).await?;
            let identity = identity_to_link(&config.oidc, provider, subject)?;
            let linked = match store
                .link_identity(user.id, &identity, jiff::Timestamp::now())
                .await
            {
                Ok(linked) => linked,
                Err(StoreError::IdentityTaken { .. }) => {
                    let owner = store
                        .user_by_identity(&identity.issuer, &identity.subject)
                        .await?
                        .map_or_else(
                            || "another account".to_owned(),
                            |u| u.name.as_str().to_owned(),
                        );
                    bail!(
                        "the identity {subject:?} of provider {provider} is linked to {owner} (fix: `gantry user unlink {owner} --provider {provider} --subject {subject}` first)"
                    );
                }
                Err(other) => return Err(other.into()),
            };
            if linked {
                tracing::info!(user = %user.name.as_str(), provider = %identity.provider, subject = %identity.subject, by = "gantry user link", os_user = %os_user(), "OpenID identity linked");
                writeln!(
                    out,
                    "linked {subject:?} of {provider} to {}: it logs in as {} from now on",
                    user.name.as_str(),
                    user.name.as_str()
                )?;
            } else {
                writeln!(
                    out,
                    "{subject:?} of {provider} was linked to {} already",
                    user.name.as_str()
                )?;
            }
        }
        UserAction::Unlink {
            name,
            provider,
            subject,
        } => {
            let user = existing(name).await?;
            let identity = identity_to_link(&config.oidc, provider, subject)?;
            if !store
                .unlink_identity(user.id, &identity.issuer, &identity.subject)
                .await?
            {
                bail!(
                    "{subject:?} of {provider} is not linked to {}",
                    user.name.as_str()
                );
            }
            tracing::info!(user = %user.name.as_str(), provider = %identity.provider, subject = %identity.subject, by = "gantry user unlink", os_user = %os_user(), "OpenID identity unlinked");
            writeln!(
                out,
                "unlinked {subject:?} of {provider} from {}",
                user.name.as_str()
            )?;
        }
        UserAction::Revoke { name } => {
            let name = parse(name)?;
            let user = store
                .user_by_name(&name)
                .await?
                .with_context(|| format!("no user named {}", name.as_str()))?;
            let revoked = store.revoke_user_credentials(user.id).await?;
            writeln!(
                out,
                "revoked {} session(s) and {} token(s) of {}",
                revoked.sessions,
                revoked.tokens,
                name.as_str()
            )?;
        }
    }
    Ok(())
}

/// Who ran the command, as the environment says (for the audit line; not a proof).
fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned())
}
