//! Pure pieces of status handling: task ids that name their server, the mapping of every
//! Mesos task state to a [`ServerStatus`], and the exit code in a status message.
//!
//! # Task ids
//!
//! A task id is `<container name>.<profile>.<nonce>`: the server's collision-free container
//! name ([`container_name`]: instance, escaped user, escaped server, hash), the profile id and
//! 8 random hex digits, so that a server started again gets a new task id. Neither the name
//! nor the profile id can hold a `.`, so the id splits one way only, and [`parse_task_id`]
//! recovers the owner, server and profile from the master's answers alone: what lets a
//! restarted gantry find its servers even when its own records are lost.
//!
//! # States
//!
//! | Mesos state | [`ServerStatus`] |
//! |---|---|
//! | launched, no update yet; `TASK_STAGING`, `TASK_STARTING` | `Starting` |
//! | `TASK_RUNNING` | `Running` at the notebook's address (`Starting` until it is known) |
//! | `TASK_UNREACHABLE` | `Running` at the last address: the agent is partitioned away and the notebook may well still run, so its route stays (`Starting` without an address) |
//! | `TASK_KILLING` | `Stopping` |
//! | `TASK_FINISHED` | `Stopped`, exit code 0 unless the message says otherwise |
//! | `TASK_FAILED`, `TASK_KILLED`, `TASK_ERROR`, `TASK_LOST`, `TASK_DROPPED`, `TASK_GONE`, `TASK_GONE_BY_OPERATOR` | `Stopped`, with the exit code the message names, if any |
//! | `TASK_UNKNOWN` | `Absent`: the master has no record of it |
//! | a state newer than this code | `Starting`: not known to have ended |

use crate::names::{
    Instance, ProfileId, ServerName, container_name, server_hash, unescape_component as unescape,
};
use crate::spawner::{ServerKey, ServerStatus};

use super::proto::TaskState;

#[cfg(test)]
mod tests;

/// The task id for `key`'s server on `profile`, with `nonce` (hex digits) to tell its
/// launches apart.
pub fn task_id(instance: &Instance, key: &ServerKey, profile: &ProfileId, nonce: &str) -> String {
    format!(
        "{}.{profile}.{nonce}",
        container_name(instance, &key.user, &key.server)
    )
}

/// Reverses [`task_id`]: the server and profile of a task id of `instance`, or `None` for
/// any other id.
pub fn parse_task_id(instance: &Instance, id: &str) -> Option<(ServerKey, ProfileId)> {
    let mut parts = id.split('.');
    let (name, profile, nonce) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || nonce.is_empty() || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let profile = ProfileId::new(profile).ok()?;
    let rest = name.strip_prefix(instance.as_str())?.strip_prefix('-')?;
    let fields: Vec<&str> = rest.split('-').collect();
    let (user, server, hash) = match fields.as_slice() {
        [user, hash] => (*user, "", *hash),
        [user, server, hash] if !server.is_empty() => (*user, *server, *hash),
        _ => return None,
    };
    let user = unescape(user)?;
    let server = ServerName::new(&unescape(server)?).ok()?;
    if server.is_default() != fields.len().eq(&2) || server_hash(&user, &server) != hash {
        return None;
    }
    Some((ServerKey { user, server }, profile))
}

/// The server's status for a task in `state` (`None`: launched, no update yet), reachable at
/// `url` when known; see the module documentation for the table.
pub fn server_status(
    state: Option<TaskState>,
    url: Option<&str>,
    message: Option<&str>,
) -> ServerStatus {
    let Some(state) = state else {
        return ServerStatus::Starting;
    };
    match state {
        TaskState::TaskStaging | TaskState::TaskStarting | TaskState::Unrecognized => {
            ServerStatus::Starting
        }
        TaskState::TaskRunning | TaskState::TaskUnreachable => match url {
            Some(url) => ServerStatus::Running {
                url: url.to_owned(),
            },
            None => ServerStatus::Starting,
        },
        TaskState::TaskKilling => ServerStatus::Stopping,
        TaskState::TaskUnknown => ServerStatus::Absent,
        TaskState::TaskFinished => ServerStatus::Stopped {
            exit_code: exit_code(message).or(Some(0)),
        },
        TaskState::TaskFailed
        | TaskState::TaskKilled
        | TaskState::TaskError
        | TaskState::TaskLost
        | TaskState::TaskDropped
        | TaskState::TaskGone
        | TaskState::TaskGoneByOperator => ServerStatus::Stopped {
            exit_code: exit_code(message),
        },
    }
}

/// The exit status in a status message, as executors and containerizers write it: "Command
/// exited with status 3", "Container exited with status 137".
pub fn exit_code(message: Option<&str>) -> Option<i64> {
    const MARK: &str = "exited with status ";
    let lower = message?.to_ascii_lowercase();
    let at = lower.find(MARK)? + MARK.len();
    let rest = &lower[at..];
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().ok()
}
