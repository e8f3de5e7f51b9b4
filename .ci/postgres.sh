#!/usr/bin/env bash
# Installs (from Debian) and starts a local PostgreSQL for the store tests, creates the role
# and database they use, and prints the URL to export as GANTRY_TEST_POSTGRES_URL.
# Idempotent: a running server, role or database is reused. Listens on loopback only.
set -euo pipefail

# Only the URL goes to stdout (callers capture it); everything else, including what
# pg_ctlcluster and apt print ("Removed stale pid file."), goes to stderr.
# The server must not inherit fd 3, or a caller's $(...) would wait for it to exit.
exec 3>&1 1>&2

log() { echo "postgres.sh: $*" >&2; }

if ! command -v pg_lsclusters >/dev/null 2>&1; then
    log "installing postgresql from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq postgresql >/dev/null
fi

read -r version cluster port status _ < <(pg_lsclusters --no-header | head -n1)
if [[ -z ${version:-} ]]; then
    log "no PostgreSQL cluster exists; creating 'main'"
    version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    pg_createcluster "$version" main 3>&-
    read -r version cluster port status _ < <(pg_lsclusters --no-header | head -n1)
fi
if [[ $status != online* ]]; then
    log "starting cluster $version/$cluster on port $port"
    if ! pg_ctlcluster "$version" "$cluster" start 3>&-; then
        # A server killed without shutdown (e.g. a machine image taken while it ran) leaves
        # its socket lock behind; with no postmaster alive it is stale, so clear it and retry.
        lock="/var/run/postgresql/.s.PGSQL.$port.lock"
        owner=$(head -n1 "$lock" 2>/dev/null || true)
        if [[ -n $owner ]] && ! kill -0 "$owner" 2>/dev/null; then
            log "clearing a stale socket lock (pid $owner is gone) and retrying"
            rm -f "$lock"
            pg_ctlcluster "$version" "$cluster" start 3>&-
        else
            exit 1
        fi
    fi
fi

psql_admin() { su postgres -c "psql -v ON_ERROR_STOP=1 -qtA -p $port $*"; }
if [[ -z $(psql_admin "-c \"SELECT 1 FROM pg_roles WHERE rolname = 'gantry'\"") ]]; then
    psql_admin "-c \"CREATE ROLE gantry LOGIN PASSWORD 'gantry'\""
fi
if [[ -z $(psql_admin "-c \"SELECT 1 FROM pg_database WHERE datname = 'gantry_test'\"") ]]; then
    psql_admin "-c \"CREATE DATABASE gantry_test OWNER gantry\""
fi
echo "postgres://gantry:gantry@127.0.0.1:$port/gantry_test" >&3
