#!/bin/bash
# The image's entrypoint (under tini), a small version of Jupyter docker-stacks' start.sh that
# honours the same variables, so that a hub treats this image like a stock Jupyter one:
#
# - Started as root (`--user 0`): refits the `jovyan` account to NB_USER / NB_UID / NB_GID
#   (renaming it and moving or linking its home to /home/$NB_USER), chowns that home when
#   CHOWN_HOME=yes, then drops to the user with setpriv and runs the command. The image has no
#   sudo; nothing stays root.
# - Started as any other user (`--user 4242:4242 --group-add users`): adds a passwd entry for
#   the UID when it has none (/etc/passwd is writable by group `users`, and the image has no
#   setuid programs that could abuse that), warns when HOME is not writable, runs the command.
#
# The command defaults to start-notebook.py (the image's CMD): `jupyterhub-singleuser` when
# JUPYTERHUB_API_TOKEN is set, else `jupyter lab`.
set -euo pipefail

_log() {
    if [[ -z ${JUPYTER_DOCKER_STACKS_QUIET:-} ]]; then
        echo "start.sh: $*" >&2
    fi
}

if [[ $# -eq 0 ]]; then
    set -- start-notebook.py
fi

NB_USER="${NB_USER:-jovyan}"
NB_UID="${NB_UID:-1000}"
NB_GID="${NB_GID:-100}"

if [[ $(id -u) -eq 0 ]]; then
    if [[ $NB_USER != jovyan ]] && id jovyan >/dev/null 2>&1; then
        _log "renaming the user jovyan to $NB_USER"
        usermod --login "$NB_USER" --home "/home/$NB_USER" jovyan
        if [[ -e /home/$NB_USER ]]; then
            # A mounted home: keep it, and leave the image's home where it is.
            _log "/home/$NB_USER exists (a mount?): using it as the home"
        else
            mv /home/jovyan "/home/$NB_USER"
            ln -s "/home/$NB_USER" /home/jovyan
        fi
    fi
    if [[ $NB_GID != "$(id -g "$NB_USER")" ]]; then
        _log "giving $NB_USER the primary group $NB_GID (keeping the group users)"
        groupadd --force --gid "$NB_GID" --non-unique "${NB_GROUP:-$NB_USER}"
        usermod --gid "$NB_GID" --append --groups users "$NB_USER"
    fi
    if [[ $NB_UID != "$(id -u "$NB_USER")" ]]; then
        _log "giving $NB_USER the UID $NB_UID"
        usermod --uid "$NB_UID" --non-unique "$NB_USER"
    fi
    if [[ ${CHOWN_HOME:-} == 1 || ${CHOWN_HOME:-} == yes ]]; then
        _log "changing the owner of /home/$NB_USER to $NB_UID:$NB_GID"
        # CHOWN_HOME_OPTS is a word list by design (docker-stacks: e.g. "-R").
        # shellcheck disable=SC2086
        chown ${CHOWN_HOME_OPTS:-} "$NB_UID:$NB_GID" "/home/$NB_USER"
    fi
    if [[ $PWD == /home/jovyan* ]]; then
        cd "/home/$NB_USER${PWD#/home/jovyan}" 2>/dev/null || cd "/home/$NB_USER"
    fi
    export HOME="/home/$NB_USER" USER="$NB_USER" LOGNAME="$NB_USER"
    _log "running as $NB_USER ($NB_UID:$NB_GID): $*"
    exec setpriv --reuid="$NB_UID" --regid="$NB_GID" --init-groups -- "$@"
fi

if ! whoami >/dev/null 2>&1; then
    if [[ -w /etc/passwd ]]; then
        _log "adding a passwd entry for UID $(id -u) named $NB_USER (home $HOME)"
        # No sed --in-place: it would create a temporary file in /etc, which is not writable.
        passwd_copy="$(mktemp)"
        if [[ $NB_USER == jovyan ]]; then
            sed -e 's/^jovyan:/nayvoj:/' /etc/passwd >"$passwd_copy"
        else
            cat /etc/passwd >"$passwd_copy"
        fi
        echo "$NB_USER:x:$(id -u):$(id -g):,,,:$HOME:/bin/bash" >>"$passwd_copy"
        cat "$passwd_copy" >/etc/passwd
        rm -f "$passwd_copy"
    else
        _log "WARNING: UID $(id -u) has no passwd entry and /etc/passwd is not writable; add --group-add users"
    fi
fi
export USER="${USER:-$(whoami 2>/dev/null || echo "$NB_USER")}"
if [[ ! -w $HOME ]]; then
    _log "WARNING: HOME ($HOME) is not writable by UID $(id -u): mount a home owned by it, or add --group-add users"
fi
exec "$@"
