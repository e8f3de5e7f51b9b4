//! Per-user named volumes, owned by the user before the server starts.
//!
//! A server that runs as the user's UID/GID ([`crate::profile::RunAs::User`]) cannot fix the
//! ownership of its home itself: nothing in it runs as root. A named volume the engine creates
//! is owned by root (or by whoever owns the image's directory at the mount point), so the
//! user could not write to their own home. Before creating the server's container the spawner
//! therefore makes each per-user named volume of the profile (a `type = "volume"` whose
//! source uses `{username}`, mounted read-write) owned by `uid:gid`, whenever the UID is known
//! (with [`crate::profile::RunAs::RootThenDrop`] too: docker-stacks' `start.sh` fixes only the
//! home directory, and only in images that have it):
//!
//! 1. It creates the volume unless the engine has it (labelled `gantry.instance` and
//!    `gantry.owner`), and remembers whether it was fresh.
//! 2. It runs a short-lived helper container of the **profile's own image** as root, with
//!    only that volume mounted, at the server's mount point, no network and no GPUs, running
//!    `chown uid:gid <mount point>`, and removes it (exit code and output read first).
//!
//! Why a helper of the same image: it needs nothing else on the host (no second image to
//! pull, no access to the engine's volume directory, which a spawner on another host or a
//! rootless engine does not have), and mounting the volume at the same path lets the engine
//! copy the image's content there into a fresh volume exactly as it would for the server
//! (its "copy-up"). The cost: the image must have `chown` on its `PATH` and allow running as
//! root (every docker-stacks image does); otherwise the start fails, saying so.
//!
//! Why only the top directory: the volume may hold years of the user's files; a recursive
//! `chown` would take long and would override ownership the user chose. The one exception is
//! a volume created by this start: it holds only what the engine copied from the image, so it
//! is changed recursively (`chown -R`), or the user could not modify those files. (A volume
//! whose first preparation failed half-way is no longer fresh at the next start; its copied
//! files stay as they were.) Shared named volumes (no `{username}`), read-only ones and bind
//! mounts are left alone: they are not the user's to own.
//!
//! The server's container then mounts these volumes with `NoCopy` ([`keep_prepared`]): the
//! helper has already done the copy-up, and the engine would otherwise copy again into a
//! volume that is still empty (the image has nothing at that path), taking the ownership of
//! the directory it finds in the server's file system, which is root's when the engine
//! created it there for the working directory, and undoing the `chown`.
//!
//! The helper carries the label [`HELPER`], so that [`DockerSpawner::recover`] removes one
//! left behind by a crash, and no `gantry.server`/`gantry.profile` labels, so it is never
//! listed as a server.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;

use super::{DockerError, DockerSpawner, is_status};
use crate::labels;
use crate::names::{ServerName, legacy_volume_name, volume_name};
use crate::profile::{Profile, VolumeKind, is_docker_name};
use crate::request::USERS_GID;
use crate::spawner::{ServerKey, SpawnError, SpawnRequest};

/// The label on gantry's helper containers; its value says what the helper does.
pub const HELPER: &str = "gantry.helper";

/// A per-user named volume of a profile, as one server mounts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UserVolume {
    /// The volume's name.
    pub(crate) name: String,
    /// Where the server mounts it.
    pub(crate) target: String,
}

/// The per-user, read-write named volumes of `profile` for `user`'s server `server`, named and
/// placed as [`crate::request::container_spec`] names and places them. A volume whose name
/// comes out invalid is left out: building the container's request refuses it right after.
pub(crate) fn user_volumes(profile: &Profile, user: &str, server: &ServerName) -> Vec<UserVolume> {
    profile
        .volumes
        .iter()
        .filter(|v| v.kind == VolumeKind::Volume && !v.read_only)
        // Per-user: the name depends on the user name.
        .filter(|v| v.source.render("a", server.as_str()) != v.source.render("b", server.as_str()))
        .filter_map(|v| {
            let name = volume_name(&v.source, user, server);
            (name.len() >= 2 && is_docker_name(&name)).then(|| UserVolume {
                name,
                target: v.target.render(user, server.as_str()),
            })
        })
        .collect()
}

/// The per-user named volumes of `profile` for `user`'s server `server` whose gantry 0.1 name
/// ([`legacy_volume_name`]) differs from today's, as (today's name, the old one).
pub(crate) fn renamed_volumes(
    profile: &Profile,
    user: &str,
    server: &ServerName,
) -> Vec<(String, String, crate::profile::Template)> {
    profile
        .volumes
        .iter()
        .filter(|v| v.kind == VolumeKind::Volume)
        .filter_map(|v| {
            let new = volume_name(&v.source, user, server);
            let old = legacy_volume_name(&v.source, user, server);
            (new != old).then(|| (new, old, v.source.clone()))
        })
        .collect()
}

/// Mounts the `prepared` volumes in `body` with `NoCopy`; see the module documentation.
pub(crate) fn keep_prepared(body: &mut ContainerCreateBody, prepared: &[String]) {
    let mounts = body.host_config.as_mut().and_then(|h| h.mounts.as_mut());
    for mount in mounts.into_iter().flatten() {
        let named = mount.typ == Some(MountType::VOLUME);
        if named && prepared.iter().any(|p| mount.source.as_ref() == Some(p)) {
            mount.volume_options = Some(MountVolumeOptions {
                no_copy: Some(true),
                ..MountVolumeOptions::default()
            });
        }
    }
}

/// Whether `name` is a portable account name, which running as a UID needs (the request
/// builder refuses others; the volumes are then left alone).
fn is_account_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 32
        && matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

impl DockerSpawner {
    /// Makes the per-user volumes of `request`'s profile owned by the user's UID/GID; nothing
    /// when the UID is unknown. Returns the names of the volumes it prepared. See the module
    /// documentation.
    pub(super) async fn prepare_volumes(
        &self,
        request: &SpawnRequest,
        kept: &[(String, String)],
    ) -> Result<Vec<String>, SpawnError> {
        let Some(uid) = request.identity.uid else {
            return Ok(Vec::new());
        };
        let user = request.identity.user.as_str();
        if !is_account_name(user) {
            return Ok(Vec::new());
        }
        let gid = request.identity.gid.unwrap_or(USERS_GID);
        let key = request.key();
        let mut prepared = Vec::new();
        for mut volume in user_volumes(&request.profile, user, &request.server) {
            if let Some((_, old)) = kept.iter().find(|(new, _)| *new == volume.name) {
                volume.name.clone_from(old);
            }
            let fresh = self.ensure_volume(&key, &volume.name).await?;
            self.chown_volume(&key, &request.profile.image, &volume, (uid, gid), fresh)
                .await?;
            prepared.push(volume.name);
        }
        Ok(prepared)
    }

    /// Creates volume `name` unless it exists; returns whether it created it.
    /// The per-user volumes of `request` that keep their gantry 0.1 name, as (today's name,
    /// the old one): those whose new name the engine lacks and whose old name it has, either
    /// labelled as this user's in this instance (gantry created it) or, unlabelled (the
    /// engine created it), readable as this (user, server) only
    /// ([`crate::profile::Template::legacy_readings`]). An old name two pairs could share is
    /// left alone with its data: it cannot be told whose it is.
    pub(super) async fn kept_volumes(
        &self,
        request: &SpawnRequest,
    ) -> Result<Vec<(String, String)>, SpawnError> {
        let key = request.key();
        let mut kept = Vec::new();
        for (new, old, source) in renamed_volumes(&request.profile, &key.user, &request.server) {
            if self.volume_labels(&key, &new).await?.is_some() {
                continue;
            }
            let Some(found) = self.volume_labels(&key, &old).await? else {
                continue;
            };
            let ours = match found.get(labels::OWNER) {
                Some(owner) => {
                    *owner == key.user
                        && found
                            .get(labels::INSTANCE)
                            .is_some_and(|i| *i == self.settings.instance.to_string())
                }
                None => source.legacy_readings(&old) == 1,
            };
            if ours {
                kept.push((new, old));
            }
        }
        Ok(kept)
    }

    /// The labels of the volume `name`; `None` if the engine has no such volume.
    async fn volume_labels(
        &self,
        key: &ServerKey,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, SpawnError> {
        match self.docker.inspect_volume(name).await {
            Ok(volume) => Ok(Some(volume.labels)),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(Self::engine(key, None, "inspect volume", e)),
        }
    }

    async fn ensure_volume(&self, key: &ServerKey, name: &str) -> Result<bool, SpawnError> {
        match self.docker.inspect_volume(name).await {
            Ok(_) => return Ok(false),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(Self::engine(key, None, "inspect volume", e)),
        }
        let request = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(HashMap::from([
                (
                    labels::INSTANCE.to_owned(),
                    self.settings.instance.to_string(),
                ),
                (labels::OWNER.to_owned(), key.user.clone()),
            ])),
            ..VolumeCreateRequest::default()
        };
        // Creating a volume that exists (a concurrent start made it) succeeds; it is then
        // treated as fresh, which only makes its ownership change recursive.
        self.docker
            .create_volume(request)
            .await
            .map_err(|e| Self::engine(key, None, "create volume", e))?;
        Ok(true)
    }

    /// Runs the helper that chowns `volume` to `uid:gid` (recursively when `fresh`), and
    /// removes it whatever happened.
    async fn chown_volume(
        &self,
        key: &ServerKey,
        image: &str,
        volume: &UserVolume,
        (uid, gid): (u32, u32),
        fresh: bool,
    ) -> Result<(), SpawnError> {
        let owner = format!("{uid}:{gid}");
        let mut cmd = Vec::new();
        if fresh {
            cmd.push("-R".to_owned());
        }
        cmd.extend([owner.clone(), volume.target.clone()]);
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(vec!["chown".to_owned()]),
            cmd: Some(cmd.clone()),
            user: Some("0:0".to_owned()),
            // Not the image's: the engine would create a missing working directory.
            working_dir: Some("/".to_owned()),
            // As for servers without GPUs: a CUDA image on a host whose default runtime is
            // nvidia would otherwise get every GPU.
            env: Some(vec!["NVIDIA_VISIBLE_DEVICES=void".to_owned()]),
            network_disabled: Some(true),
            labels: Some(HashMap::from([
                (
                    labels::INSTANCE.to_owned(),
                    self.settings.instance.to_string(),
                ),
                (labels::OWNER.to_owned(), key.user.clone()),
                (HELPER.to_owned(), "volume-owner".to_owned()),
            ])),
            host_config: Some(HostConfig {
                mounts: Some(vec![Mount {
                    typ: Some(MountType::VOLUME),
                    source: Some(volume.name.clone()),
                    target: Some(volume.target.clone()),
                    read_only: Some(false),
                    ..Mount::default()
                }]),
                network_mode: Some("none".to_owned()),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let failed = |cause: String| {
            Self::err(
                key,
                None,
                DockerError::VolumeOwner {
                    volume: volume.name.clone(),
                    owner: owner.clone(),
                    image: image.to_owned(),
                    command: format!("chown {}", cmd.join(" ")),
                    cause,
                },
            )
        };
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| failed(super::engine_message(&e)))?;
        let id = created.id;
        let outcome = tokio::time::timeout(self.options.start_timeout, self.run_helper(&id)).await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "it did not finish within {:?}",
                self.options.start_timeout
            )),
        };
        let options = RemoveContainerOptions {
            force: true,
            ..RemoveContainerOptions::default()
        };
        // Best effort: a helper that cannot be removed now is removed by `recover`.
        let _ = self.docker.remove_container(&id, Some(options)).await;
        outcome.map_err(failed)
    }

    /// Starts helper `id` and waits for it; `Err` says why it did not exit with 0.
    async fn run_helper(&self, id: &str) -> Result<(), String> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| super::engine_message(&e))?;
        let options = WaitContainerOptions {
            condition: "not-running".to_owned(),
        };
        let mut wait = self.docker.wait_container(id, Some(options));
        // The outcome is read from the container below; the stream only says when.
        while wait.next().await.is_some() {}
        let c = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| super::engine_message(&e))?;
        let state = c.state.unwrap_or_default();
        match state.exit_code {
            Some(0) => Ok(()),
            code => {
                let lines = self.last_lines(id).await;
                let code = code.map_or_else(|| "an unknown code".to_owned(), |c| c.to_string());
                let error = state.error.filter(|e| !e.is_empty());
                Err(match (error, lines.is_empty()) {
                    (Some(error), _) => format!("it exited with {code}: {error}"),
                    (None, true) => format!("it exited with {code}"),
                    (None, false) => format!("it exited with {code}: {}", lines.join(" / ")),
                })
            }
        }
    }
}
