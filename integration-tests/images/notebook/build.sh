#!/usr/bin/env bash
# Builds gantry's local notebook image without any container registry: a Debian root file system
# from debootstrap, a venv with the pinned JupyterHub (jupyterhub-singleuser), JupyterLab and
# ipykernel from PyPI, a `jovyan` user and a docker-stacks-style entrypoint, imported into the
# local Docker engine with `docker import`.
#
#   integration-tests/images/notebook/build.sh [--print-tag] [--verbose]
#
# Prints the image tag on stdout (gantry/notebook:<hash of the inputs>, also tagged
# gantry/notebook:latest); progress goes to stderr. Idempotent: when the tag for the current
# inputs exists it only makes sure :latest points at it. --print-tag prints the tag the current
# inputs give and exits without building. --verbose shows what debootstrap, apt and pip print
# (otherwise kept in a log that is shown when a step fails).
#
# Needs root (debootstrap, chroot, mounts in a private namespace), a running Docker engine,
# Debian's apt mirror and PyPI; installs debootstrap with apt when it is missing. Downloads are
# cached in GANTRY_IMAGE_CACHE (default ~/.cache/gantry/notebook-image): the .debs, pip's wheels
# and the finished Debian base, so a rebuild after changing only the Python pins or the scripts
# skips debootstrap. Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian),
# GANTRY_NOTEBOOK_REPO (default gantry/notebook). See README.md beside this script.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
constraints="$(cd "$here/../.." && pwd)/python-requirements.txt"
repo="${GANTRY_NOTEBOOK_REPO:-gantry/notebook}"
# Debian 13: the pins need Python >= 3.11.5 (soupsieve), and bookworm's is 3.11.2; trixie has
# CPython 3.13, for which every pinned package has a wheel.
suite=trixie
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# What the image needs from Debian beyond minbase: the interpreter the venv is made from,
# certificates for HTTPS from notebooks, and tini as PID 1 (docker-stacks runs it too).
base_packages=python3,python3-venv,ca-certificates,tini
venv=/opt/venv
nb_uid=1000
nb_gid=100
total_steps=5

print_tag=false
verbose=false
for arg in "$@"; do
    case $arg in
    --print-tag) print_tag=true ;;
    --verbose | -v) verbose=true ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "build.sh: unknown argument $arg (try --help)" >&2
        exit 2
        ;;
    esac
done

started=$SECONDS
step_started=$SECONDS
log() { echo "build.sh: $*" >&2; }
step() {
    step_started=$SECONDS
    log "[$1/$total_steps] $2"
}
step_done() { log "      done in $((SECONDS - step_started))s"; }
fail() {
    log "error: $*"
    exit 1
}

# The base file system: debootstrap plus Debian's security updates, no docs. Its recipe is this
# function's text, so editing it invalidates the cached base.
make_base() {
    local root=$1
    local debs=$2
    # A private mount namespace: debootstrap's /proc and /sys mounts in the target vanish
    # with it, even when debootstrap dies half-way.
    unshare --mount --propagation private -- \
        debootstrap --variant=minbase --include="$base_packages" --cache-dir="$debs" \
        "$suite" "$root" "$mirror"
    cat >"$root/etc/dpkg/dpkg.cfg.d/01-gantry-nodoc" <<'CFG'
# Keep later apt installs in this image small: no documentation or translations.
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
CFG
    cat >"$root/etc/apt/sources.list" <<LIST
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
LIST
    in_root "$root" sh -c 'apt-get update -qq && apt-get upgrade -y -qq && apt-get clean'
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
}

# Runs a command chrooted into `root`, with /proc, /dev and the pip cache mounted in a private
# mount namespace that disappears when the command ends. The host's DNS settings and CA bundle
# are lent for the build (a machine behind a TLS-intercepting proxy trusts its CA there, and
# pip must too) and never end up in the image; so are the host's proxy and index settings.
in_root() {
    local root=$1
    shift
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mkdir -p "$root/var/cache/gantry-pip"
    local host_ca=/etc/ssl/certs/ca-certificates.crt
    local pass=()
    if [[ -f $host_ca ]]; then
        cp "$host_ca" "$root/var/cache/gantry-host-ca.crt"
        pass+=(PIP_CERT=/var/cache/gantry-host-ca.crt)
    fi
    local name
    for name in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY \
        PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT; do
        if [[ -n ${!name:-} ]]; then
            pass+=("$name=${!name}")
        fi
    done
    local status=0
    unshare --mount --propagation private -- /bin/sh -c '
        root=$1; pip_cache=$2; shift 2
        mount -t proc proc "$root/proc" &&
        mount --rbind /dev "$root/dev" &&
        mount --bind "$pip_cache" "$root/var/cache/gantry-pip" &&
        exec chroot "$root" "$@"' in_root "$root" "$cache/pip" \
        /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
        PIP_CACHE_DIR=/var/cache/gantry-pip PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "${pass[@]}" "$@" || status=$?
    rm -f "$root/var/cache/gantry-host-ca.crt" "$root/etc/resolv.conf"
    return "$status"
}

# Runs a step's noisy command with its output in the build log; the output is shown when the
# command fails (and always with --verbose).
quietly() {
    if $verbose; then
        "$@" >&2
        return
    fi
    local out
    out="$(mktemp)"
    if ! "$@" >"$out" 2>&1; then
        cat "$out" >>"$build_log"
        tail -n 40 "$out" >&2
        rm -f "$out"
        fail "the command above failed; the build's whole output is in $build_log"
    fi
    cat "$out" >>"$build_log"
    rm -f "$out"
}

hash_of() { sha256sum | cut -c1-12; }

base_hash="$(
    {
        echo "$suite $base_packages"
        declare -f make_base
    } | hash_of
)"
inputs_hash="$(
    {
        echo "base $base_hash $venv $nb_uid $nb_gid"
        cat "${BASH_SOURCE[0]}" "$here/requirements.in" "$constraints" "$here/start.sh" \
            "$here/start-notebook.py" "$here/start-singleuser.py" "$here/jupyter_server_config.py" \
            "$here/overrides.json"
    } | hash_of
)"
tag="$repo:$inputs_hash"
if $print_tag; then
    echo "$tag"
    exit 0
fi

command -v docker >/dev/null 2>&1 || fail "docker is not on PATH; install Docker and start its engine"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
    fail "the Docker engine does not answer (docker version failed); start it, or run as a user that may use it"

if docker image inspect "$tag" >/dev/null 2>&1; then
    docker tag "$tag" "$repo:latest"
    log "$tag is already built (inputs unchanged); tagged $repo:latest"
    echo "$tag"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || fail "building $tag needs root (debootstrap, chroot); run: sudo $0"
for tool in tar unshare chroot flock; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not on PATH (it comes with tar, util-linux, coreutils)"
done

cache="${GANTRY_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gantry/notebook-image}"
mkdir -p "$cache/debs" "$cache/pip"
cache="$(cd "$cache" && pwd)"
build_log="$cache/build.log"

# One build at a time per cache: a second caller waits, then finds the image built.
exec 9>"$cache/lock"
if ! flock --nonblock 9; then
    log "another build holds $cache/lock; waiting for it"
    flock 9
    if docker image inspect "$tag" >/dev/null 2>&1; then
        docker tag "$tag" "$repo:latest"
        log "$tag was built meanwhile; tagged $repo:latest"
        echo "$tag"
        exit 0
    fi
fi
: >"$build_log"
# Holding the lock, any work directory left is from a build that was killed.
find "$cache" -maxdepth 1 -name 'work.*' -type d -exec rm -rf --one-file-system {} +

work="$(mktemp -d "$cache/work.XXXXXX")"
cleanup() { rm -rf --one-file-system "$work"; }
trap cleanup EXIT
root="$work/rootfs"
log "building $tag (cache: $cache; log: $build_log)"

step 1 "Debian $suite base (debootstrap --variant=minbase, + $base_packages)"
base_tar="$cache/base-$base_hash.tar.zst"
if [[ -f $base_tar ]]; then
    log "      cached: $base_tar"
else
    missing=()
    for tool in debootstrap zstd; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        command -v apt-get >/dev/null 2>&1 ||
            fail "${missing[*]} missing and no apt-get to install them; install them and run again"
        log "      installing ${missing[*]} from apt"
        quietly env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
        quietly env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
            install -y -qq --no-install-recommends "${missing[@]}"
    fi
    mkdir -p "$root"
    quietly make_base "$root" "$cache/debs"
    log "      saving the base to $base_tar"
    tar --numeric-owner -C "$root" -c . | zstd -q -T0 -3 -o "$base_tar.partial"
    mv "$base_tar.partial" "$base_tar"
    # Older bases are never used again.
    find "$cache" -maxdepth 1 -name 'base-*.tar.zst' ! -name "base-$base_hash.tar.zst" -delete
    rm -rf --one-file-system "$root"
fi
mkdir -p "$root"
zstd -q -d -c "$base_tar" | tar --numeric-owner -C "$root" -x
step_done

step 2 "Python venv at $venv: $(grep -v '^#' "$here/requirements.in" | xargs) (pins from python-requirements.txt)"
cp "$here/requirements.in" "$constraints" "$root/tmp/"
quietly in_root "$root" python3 -m venv "$venv"
quietly in_root "$root" "$venv/bin/pip" install --no-input --progress-bar off \
    -r /tmp/requirements.in -c /tmp/python-requirements.txt
# Every installed distribution must be pinned: a package that the constraints do not name
# would float to whatever PyPI has today.
in_root "$root" "$venv/bin/python" - <<'PY' || fail "the venv holds packages the pins do not cover (above)"
import importlib.metadata as md, re, sys
def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()
pins = {}
for line in open("/tmp/python-requirements.txt"):
    line = line.split("#")[0].strip()
    if "==" in line:
        name, version = line.split("==")
        pins[norm(name)] = version.strip()
bad = []
for dist in md.distributions():
    name = norm(dist.metadata["Name"])
    if name in ("pip", "setuptools"):
        continue
    if pins.get(name) != dist.version:
        bad.append(f"{name}=={dist.version} (pinned: {pins.get(name)})")
if bad:
    print("build.sh: unpinned or mismatched: " + ", ".join(sorted(bad)), file=sys.stderr)
    sys.exit(1)
PY
quietly in_root "$root" "$venv/bin/pip" check
rm -f "$root/tmp/requirements.in" "$root/tmp/python-requirements.txt"
step_done

step 3 "user jovyan ($nb_uid:$nb_gid), entrypoint and Jupyter configuration"
quietly in_root "$root" useradd --no-log-init --create-home --shell /bin/bash \
    --uid "$nb_uid" --gid "$nb_gid" jovyan
install -m 0755 "$here/start.sh" "$here/start-notebook.py" "$here/start-singleuser.py" \
    "$root/usr/local/bin/"
for name in start-notebook start-singleuser; do
    printf '#!/bin/bash\nexec %s.py "$@"\n' "$name" >"$root/usr/local/bin/$name.sh"
    chmod 0755 "$root/usr/local/bin/$name.sh"
done
install -D -m 0644 "$here/jupyter_server_config.py" "$root/etc/jupyter/jupyter_server_config.py"
# JupyterLab settings defaults: no "get Jupyter news?" toast, no update checks (docker-stacks
# does the same); users can still change them.
install -D -m 0644 "$here/overrides.json" "$root$venv/share/jupyter/lab/settings/overrides.json"
# As in docker-stacks: the home and the venv belong to jovyan and group `users`, group-writable
# with setgid directories, so any UID started with `--group-add users` can use them.
chown -R "$nb_uid:$nb_gid" "$root/home/jovyan" "$root$venv"
chmod -R g+rwX "$root/home/jovyan" "$root$venv"
find "$root/home/jovyan" "$root$venv" -type d -exec chmod g+s {} +
# start.sh adds a passwd entry for an unknown UID; group `users` may write /etc/passwd for that.
# So that this cannot lead to root, the image has no setuid or setgid programs (no sudo, su…).
chgrp "$nb_gid" "$root/etc/passwd"
chmod 0664 "$root/etc/passwd"
find "$root" -xdev -type f -perm /6000 -exec chmod ug-s {} +
rm -rf "$root/var/cache/gantry-pip" "$root/root/.cache" "$root"/tmp/* "$root"/var/lib/apt/lists/*
step_done

step 4 "docker import into $tag"
changes=(
    --change "ENV PATH=$venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    --change "ENV LANG=C.UTF-8"
    --change "ENV SHELL=/bin/bash"
    --change "ENV NB_USER=jovyan"
    --change "ENV NB_UID=$nb_uid"
    --change "ENV NB_GID=$nb_gid"
    --change "ENV HOME=/home/jovyan"
    --change "ENV JUPYTER_PORT=8888"
    --change "EXPOSE 8888"
    --change "USER $nb_uid"
    --change "WORKDIR /home/jovyan"
    --change 'ENTRYPOINT ["tini", "-g", "--", "start.sh"]'
    --change 'CMD ["start-notebook.py"]'
    --change "LABEL org.opencontainers.image.title=gantry-notebook"
    --change 'LABEL org.opencontainers.image.description="JupyterLab and jupyterhub-singleuser for gantry, built by integration-tests/images/notebook/build.sh"'
    --change "LABEL io.gantry.notebook.inputs=$inputs_hash"
)
tar --numeric-owner -C "$root" -c . |
    docker import "${changes[@]}" --message "gantry notebook image (inputs $inputs_hash)" - "$tag" >/dev/null
step_done

step 5 "checking the image: jupyter --version as jovyan"
if ! check="$(docker run --rm "$tag" jupyter --version 2>&1)"; then
    echo "$check" >&2
    docker rmi "$tag" >/dev/null 2>&1 || true
    fail "the new image cannot run jupyter --version (output above); removed $tag"
fi
log "      $(echo "$check" | grep -E '^(jupyterlab|jupyter_server|ipykernel) ' | xargs)"
docker tag "$tag" "$repo:latest"
step_done

log "built $tag (and $repo:latest) in $((SECONDS - started))s; $(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')"
echo "$tag"
