#!/usr/bin/env bash
# Registers a stand-in for nvidia-container-runtime with the local Docker engine, so the
# spawner's GPU path with `gpu_request = "runtime"` runs through the engine's real runtime
# mechanism on a machine without GPUs (shared/reference/mesos-gpu-spark.md §4).
#
# The runtime, /usr/local/bin/gantry-fake-nvidia-runtime, records each container it creates
# with the NVIDIA_VISIBLE_DEVICES of its OCI spec in /var/log/gantry-fake-nvidia-runtime.log,
# then hands over to runc unchanged: it gives no device to anyone, it proves which devices
# the engine was asked for. It is registered as the runtime `nvidia` in
# /etc/docker/daemon.json (other settings kept) and dockerd reloads it on SIGHUP, without a
# restart. Idempotent. Needs root.
set -euo pipefail

runtime=/usr/local/bin/gantry-fake-nvidia-runtime
log=/var/log/gantry-fake-nvidia-runtime.log
runc_path="$(command -v runc || true)"
if [[ -z $runc_path ]]; then
    echo "fake-nvidia-runtime.sh: runc is not on PATH; the Docker engine should have installed it" >&2
    exit 1
fi

cat >"$runtime.tmp" <<SCRIPT
#!/bin/sh
# gantry's stand-in for nvidia-container-runtime (see .ci/fake-nvidia-runtime.sh).
bundle=""
previous=""
for argument in "\$@"; do
    if [ "\$previous" = "--bundle" ] || [ "\$previous" = "-b" ]; then bundle="\$argument"; fi
    previous="\$argument"
done
if [ -n "\$bundle" ] && [ -f "\$bundle/config.json" ]; then
    devices=\$(grep -o 'NVIDIA_VISIBLE_DEVICES=[^"]*' "\$bundle/config.json" | head -n 1)
    echo "\$(basename "\$bundle") \${devices:-NVIDIA_VISIBLE_DEVICES=}" >>$log
fi
exec $runc_path "\$@"
SCRIPT
chmod 755 "$runtime.tmp"
mv "$runtime.tmp" "$runtime"
touch "$log"

python3 - "$runtime" <<'PY'
import json, os, sys
path = "/etc/docker/daemon.json"
config = {}
if os.path.exists(path):
    with open(path) as f:
        text = f.read().strip()
        config = json.loads(text) if text else {}
runtimes = config.setdefault("runtimes", {})
wanted = {"path": sys.argv[1]}
if runtimes.get("nvidia") != wanted:
    runtimes["nvidia"] = wanted
    with open(path + ".tmp", "w") as f:
        json.dump(config, f, indent=2)
    os.replace(path + ".tmp", path)
PY

if ! docker info --format '{{json .Runtimes}}' | grep -q '"nvidia"'; then
    pkill -HUP -x dockerd
    for _ in $(seq 50); do
        docker info --format '{{json .Runtimes}}' | grep -q '"nvidia"' && break
        sleep 0.1
    done
fi
if ! docker info --format '{{json .Runtimes}}' | grep -q '"nvidia"'; then
    echo "fake-nvidia-runtime.sh: dockerd did not pick up the nvidia runtime (see its log)" >&2
    exit 1
fi
