#!/usr/bin/env python3
"""Turns one bench/run output directory into the markdown report (bench/RESULTS.md).

Usage: report.py OUT_DIR > RESULTS.md. Reads OUT_DIR/machine.json, OUT_DIR/run.json and the
raw results OUT_DIR/raw/<peer>__<routes>__<scenario>.json written by bench/run.

The spawn benchmark (`bench/run spawn`) has a section of its own, between two HTML comments:
`report.py --spawn OUT_DIR RESULTS.md` renders OUT_DIR/spawn.json (spawn-bench's output) and
puts it in place of that section of RESULTS.md (or appends it), leaving the proxy sections as
they are. The proxy report (`report.py OUT_DIR`) ends with the spawn section: rendered from
OUT_DIR/spawn.json when that run measured it (`bench/run all`), else carried over from the
results file named by $BENCH_RESULTS_CARRY (default bench/RESULTS.md), so that regenerating
one part never drops the other.

The gated-path benchmark (`bench/run gated`) works the same way: `report.py --gated OUT_DIR
RESULTS.md` renders OUT_DIR/gated/ (keep-alive HTTP to one containerised backend: direct,
nginx, `gantry proxy`, and `gantry up` with a session cookie and with an API token) and splices
it between its own two HTML comments; the proxy report includes it from OUT_DIR/gated/ when
that run measured it (`bench/run all`), else carries it over.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

PEERS = ["direct", "nginx", "traefik", "chp", "gantry", "gantry-unpinned"]
NAMES = {
    "direct": "direct (no proxy)",
    "nginx": "nginx",
    "traefik": "traefik",
    "chp": "CHP (Python port)",
    "gantry": "gantry",
    "gantry-unpinned": "gantry, unpinned",
}
SCENARIOS = [
    ("http_keepalive", "HTTP, keep-alive", "req/s"),
    ("http_close", "HTTP, new connection per request", "req/s"),
    ("ws", "WebSocket round trips", "round trips/s"),
]


def load(path: Path):
    try:
        text = path.read_text().strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            # Tools print one JSON object per line; the last line is the result.
            return json.loads(text.splitlines()[-1])
    except (OSError, ValueError):
        return None


def num(value, digits=0):
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def mib(kib):
    return None if kib in (None, "", 0) else kib / 1024


class Results:
    def __init__(self, out: Path):
        self.out = out
        self.machine = load(out / "machine.json") or {}
        self.run = load(out / "run.json") or {}
        self.raw: dict[tuple[str, int, str], dict] = {}
        for path in sorted((out / "raw").glob("*.json")):
            parts = path.name[: -len(".json")].split("__")
            if len(parts) == 2:  # <peer>__idle_ws
                parts = [parts[0], "0", parts[1]]
            if len(parts) != 3:
                continue
            peer, routes, scenario = parts
            data = load(path)
            if data is not None:
                self.raw[(peer, int(routes), scenario)] = data
        counts = str(self.machine.get("route_counts", "10 10000 100000")).split()
        self.route_counts = [int(c) for c in counts]

    def get(self, peer, routes, scenario):
        return self.raw.get((peer, routes, scenario))

    def peers(self):
        seen = {key[0] for key in self.raw}
        return [p for p in PEERS if p in seen]

    def routes_for(self, peer):
        if peer == "direct":
            return [0]
        return sorted({key[1] for key in self.raw if key[0] == peer and key[2] != "idle_ws"})

    # One load: (rate, p50, p99, errors, cpu)
    def load_row(self, peer, routes, scenario):
        data = self.get(peer, routes, scenario)
        extra = self.get(peer, routes, scenario + ".extra") or {}
        if not data:
            return None
        if scenario == "ws":
            lat = data.get("latency", {})
            errors = (data.get("connect_failures") or 0) + (data.get("connection_errors") or 0)
            total = data.get("round_trips")
            return data.get("round_trips_per_s"), lat.get("p50_us"), lat.get("p99_us"), errors, total, extra.get("proxy_cpu")
        lat = data.get("latency", {})
        errors = sum((data.get("errors") or {}).values())
        return data.get("req_per_s"), lat.get("p50_us"), lat.get("p99_us"), errors, data.get("requests"), extra.get("proxy_cpu")

    def valid(self, peer, routes, scenario):
        """The load row, or None when it is missing or more than 1% of requests failed."""
        row = self.load_row(peer, routes, scenario)
        if not row or not row[0]:
            return None
        if row[3] and row[4] and row[3] > 0.01 * row[4]:
            return None
        return row


def routes_label(routes):
    return "–" if routes == 0 else f"{routes:,}"


def render(r: Results) -> str:
    m = r.machine
    quick = str(m.get("quick")) == "1"
    lines: list[str] = []
    w = lines.append
    w("# gantry benchmark results")
    w("")
    if quick:
        w("> **QUICK SMOKE RUN (`BENCH_QUICK=1`)** — short loads and small route counts, run to prove")
        w("> that `bench/run` works end to end. These numbers are not the benchmark; run `bench/run`")
        w("> without `BENCH_QUICK` on an otherwise idle machine for the real figures.")
        w("")
    w(f"Generated by `bench/run` on {m.get('started', '?')}, in {r.run.get('elapsed_s', '?')} s. Raw results: `bench/out/{r.out.name}/` (not committed). Load average at start {m.get('loadavg_start', '?')}, at the end {r.run.get('loadavg_end', '?')}: anything else running on the machine skews the numbers.")
    w("")
    w("## Machine")
    w("")
    w("| | |")
    w("| --- | --- |")
    for key, label in [
        ("cpu", "CPU"), ("cores", "cores"), ("memory_gib", "memory (GiB)"), ("kernel", "kernel"), ("os", "OS"),
        ("gantry", "gantry"), ("nginx", "nginx"), ("traefik", "traefik"), ("chp", "CHP"), ("wrk", "wrk"), ("rustc", "rustc"),
    ]:
        w(f"| {label} | {m.get(key, '?')} |")
    w("")
    w("## Method")
    w("")
    d = m.get("duration_s")
    c = m.get("connections")
    w(f"- **Backend**: `bench-backend` (hyper 1.x, one thread) answers every GET with a 13-byte body on keep-alive connections and echoes WebSocket messages. Every proxy forwards to it.")
    w(f"- **Pinning**: {m.get('pinning')}. gantry runs with `--threads 1`, nginx with `worker_processes 1`, traefik gets GOMAXPROCS=1 from its CPU affinity, CHP is single-threaded. One extra run, *gantry, unpinned*, lets gantry use its default threads (one per CPU) on any CPU, with the backend and load generator still on CPU 0.")
    w(f"- **Routes**: for N in {', '.join(f'{n:,}' for n in r.route_counts)}: routes `/user/u0` … `/user/u<N-1>`, all to the backend; every request goes to `/user/u<N/2>/api/status` and every WebSocket to `/user/u<N/2>/ws`, a route in the middle of the table, the same path for every peer. gantry and CHP get their routes through the route API (`route-load`, 8 keep-alive connections); nginx as generated `location /user/uI/ {{ proxy_pass http://backend; }}` blocks; traefik as generated file-provider routers with rule ``PathPrefix(`/user/uI/`)``. Each peer starts fresh for each N.")
    w(f"- **nginx**: `upstream {{ keepalive 64; }}`, `proxy_http_version 1.1`, `Connection` set to `\"\"` for plain requests and `upgrade` for WebSockets (a `map` on `$http_upgrade`), access log off. **traefik**: file provider, `serversTransport.maxIdleConnsPerHost=64`, log level ERROR. **CHP**: `configurable-http-proxy` from PyPI (the Python/tornado port; the Node original needs npm, not reachable here), `--log-level error`.")
    w(f"- **HTTP**: `wrk -t1 -c{c} -d{d}s --latency` after a 1 s warm-up; keep-alive as is, new connection per request with `-H 'Connection: close'`. Latency percentiles come from wrk's histogram (a Lua `done` hook prints them as JSON).")
    w(f"- **WebSocket round trips**: `ws-load --connections {c} --duration {d}`: {c} connections, each sends a 32-byte text message and waits for its echo, back to back.")
    w(f"- **Route adds**: `route-load` POSTs `{{\"target\": …}}` to `/api/routes/<path>` over 8 keep-alive connections; *bulk* is loading the N routes of the largest table, *timed* is {d} s of unique routes added on top of that table.")
    w(f"- **Memory**: VmRSS from `/proc/<pid>/status`, summed over the process and its children (nginx: master + worker); PSS from `smaps_rollup` too, which counts the pages nginx's master and worker share once. *Idle WebSockets*: RSS before, then with {num(m.get('idle_ws'))} WebSockets open and idle for {m.get('idle_hold_s')} s (`ws-load --idle`), at the smallest route count; per connection = difference / connections.")
    if m.get("idle_ws") != m.get("idle_ws_requested"):
        w(f"  {num(m.get('idle_ws_requested'))} idle WebSockets were asked for, but the open-file limit here is {m.get('nofile')} (hard, not raisable without privileges) and a proxy holds two descriptors per tunnelled WebSocket, so {num(m.get('idle_ws'))} were used; the per-connection figure does not depend on the count.")
    w("- **Proxy CPU** is the proxy's user + system CPU time during the load divided by its duration (1.00 = one CPU busy); *per request* divides it by the rate. On a two-CPU machine the load generator and the backend share CPU 0: where a proxy's CPU stays well under 1.00, CPU 0 was the bottleneck, not the proxy, and its rate is a floor. The CPU cost per request compares proxies whether or not they were saturated. In the direct rows the CPU is the backend's.")
    w("")

    for scenario, title, unit in SCENARIOS:
        w(f"## {title}")
        w("")
        w(f"| peer | routes | {unit} | p50 µs | p99 µs | errors | proxy CPU | proxy CPU µs per {'round trip' if scenario == 'ws' else 'request'} |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for peer in r.peers():
            for routes in r.routes_for(peer):
                row = r.load_row(peer, routes, scenario)
                state = r.get(peer, routes, "state") or {}
                if row is None:
                    reason = state.get("reason", "no result")
                    w(f"| {NAMES[peer]} | {routes_label(routes)} | not measured: {reason} | | | | | |")
                    continue
                rate, p50, p99, errors, _, cpu = row
                per = cpu * 1e6 / rate if isinstance(cpu, (int, float)) and rate and peer != "direct" else None
                w(f"| {NAMES[peer]} | {routes_label(routes)} | {num(rate)} | {num(p50)} | {num(p99)} | {num(errors)} | {num(cpu, 2)} | {num(per, 1)} |")
        w("")

    w("## Route adds through the API")
    w("")
    w("| peer | bulk: routes added | bulk: seconds | bulk: adds/s | proxy CPU | timed: adds/s (on top of the table) | proxy CPU | failures |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for peer in ["chp", "gantry", "gantry-unpinned"]:
        for routes in r.routes_for(peer):
            bulk = r.get(peer, routes, "route_load")
            if not bulk:
                continue
            timed = r.get(peer, routes, "route_add") or {}
            failures = (bulk.get("failed") or 0) + (timed.get("failed") or 0)
            added = f"{num(bulk.get('added'))} of {num(bulk.get('requested'))}"
            # CPU over a run shorter than a few clock ticks is noise.
            bulk_cpu = (r.get(peer, routes, "route_load.extra") or {}).get("proxy_cpu") if (bulk.get("seconds") or 0) >= 0.1 else None
            timed_cpu = (r.get(peer, routes, "route_add.extra") or {}).get("proxy_cpu")
            w(f"| {NAMES[peer]} | {added} | {num(bulk.get('seconds'), 2)} | {num(bulk.get('adds_per_s'))} | {num(bulk_cpu, 2)} | {num(timed.get('adds_per_s'))} | {num(timed_cpu, 2)} | {num(failures)} |")
    w("")

    w("## Memory with routes")
    w("")
    w("| peer | routes | time to load and serve (s) | RSS loaded (MiB) | RSS after the loads (MiB) | PSS after (MiB) | processes |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for peer in r.peers():
        for routes in r.routes_for(peer):
            s = r.get(peer, routes, "state")
            if not s:
                continue
            if str(s.get("ready")) != "true":
                w(f"| {NAMES[peer]} | {routes_label(routes)} | {num(s.get('seconds'), 1)} (not ready: {s.get('reason')}) | {num(mib(s.get('rss_kb')), 1)} | | | |")
                continue
            w(f"| {NAMES[peer]} | {routes_label(routes)} | {num(s.get('load_s'), 2)} | {num(mib(s.get('rss_loaded_kb')), 1)} | {num(mib(s.get('rss_after_kb')), 1)} | {num(mib(s.get('pss_after_kb')), 1)} | {num(s.get('processes'))} |")
    w("")

    w("## Idle WebSockets")
    w("")
    w("| peer | open / asked | still echoing after the hold | RSS before (MiB) | RSS with them (MiB) | per connection (KiB, RSS) | per connection (KiB, PSS) |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    idle_per = {}
    for peer in r.peers():
        s = r.get(peer, 0, "idle_ws")
        if not s:
            continue
        est = s.get("established") or 0
        per = (s["rss_idle_kb"] - s["rss_before_kb"]) / est if est else None
        per_pss = (s["pss_idle_kb"] - s["pss_before_kb"]) / est if est else None
        idle_per[peer] = per if est >= 0.99 * (s.get("requested") or 0) else None
        w(f"| {NAMES[peer]} | {num(est)} / {num(s.get('requested'))} | {s.get('checked_alive')} of 10 | {num(mib(s.get('rss_before_kb')), 1)} | {num(mib(s.get('rss_idle_kb')), 1)} | {num(per, 1)} | {num(per_pss, 1)} |")
    w("")
    w("The direct row is the backend's own memory (a reference, not a proxy).")
    w("")

    w("## Targets")
    w("")
    w("Ratios from this run; *met* only when both sides were measured without errors.")
    w("")
    w("| target | measured | ratio / value | met | note |")
    w("| --- | --- | ---: | --- | --- |")

    def saturation(*rows):
        cpus = [row[5] for row in rows if row and isinstance(row[5], (int, float))]
        if len(cpus) == len(rows) and any(cpu < 0.9 for cpu in cpus):
            return "proxy CPU " + " / ".join(f"{cpu:.2f}" for cpu in cpus) + ": a proxy under 0.90 was not the bottleneck (CPU 0 or other load on the machine was)"
        return ""


    def verdict(ok):
        return "–" if ok is None else ("**met**" if ok else "**not met**")

    for routes in r.route_counts:
        g, n = r.valid("gantry", routes, "http_keepalive"), r.valid("nginx", routes, "http_keepalive")
        ratio = g[0] / n[0] if g and n else None
        w(f"| keep-alive req/s ≥ 1.0× nginx, {routes:,} routes | gantry {num(g and g[0])} vs nginx {num(n and n[0])} | {num(ratio, 2)}× | {verdict(None if ratio is None else ratio >= 1.0)} | {saturation(g, n) if g and n else ''} |")
        ratio = g[2] / n[2] if g and n and n[2] else None
        w(f"| keep-alive p99 ≤ nginx p99, {routes:,} routes | gantry {num(g and g[2])} µs vs nginx {num(n and n[2])} µs | {num(ratio, 2)}× | {verdict(None if ratio is None else ratio <= 1.0)} | |")
    for scenario, title, _ in SCENARIOS:
        for routes in r.route_counts:
            g, c = r.valid("gantry", routes, scenario), r.valid("chp", routes, scenario)
            ratio = g[0] / c[0] if g and c else None
            w(f"| {title} rate ≥ 6× CHP, {routes:,} routes | gantry {num(g and g[0])} vs CHP {num(c and c[0])} | {num(ratio, 1)}× | {verdict(None if ratio is None else ratio >= 6.0)} | {saturation(g, c) if g and c else ''} |")
    lo, hi = min(r.route_counts), max(r.route_counts)
    a, b = r.valid("gantry", lo, "http_keepalive"), r.valid("gantry", hi, "http_keepalive")
    ratio = b[1] / a[1] if a and b and a[1] else None
    w(f"| keep-alive p50 at {hi:,} routes within 10% of p50 at {lo:,} | {num(b and b[1])} µs vs {num(a and a[1])} µs | {num(ratio, 3)}× | {verdict(None if ratio is None else ratio <= 1.10)} | |")
    bulk = r.get("gantry", hi, "route_load") or {}
    timed = r.get("gantry", hi, "route_add") or {}
    rate = bulk.get("adds_per_s") if bulk.get("complete") else None
    w(f"| ≥ 50,000 route adds/s (bulk load of {hi:,}) | {num(bulk.get('added'))} routes in {num(bulk.get('seconds'), 2)} s | {num(rate)}/s | {verdict(None if rate is None else rate >= 50_000)} | |")
    t_rate = timed.get("adds_per_s") if not timed.get("failed") else None
    w(f"| ≥ 50,000 route adds/s (timed, on top of {hi:,}) | {num(timed.get('added'))} routes in {num(timed.get('seconds'), 2)} s | {num(t_rate)}/s | {verdict(None if t_rate is None else t_rate >= 50_000)} | |")
    s = r.get("gantry", hi, "state") or {}
    rss = s.get("rss_after_kb") if str(s.get("ready")) == "true" else None
    mb = rss * 1024 / 1e6 if rss else None
    w(f"| ≤ 50 MB RSS at {hi:,} routes (after the loads; 1 MB = 10⁶ bytes) | {num(mib(rss), 1)} MiB | {num(mb, 1)} MB | {verdict(None if mb is None else mb <= 50)} | |")
    per = idle_per.get("gantry")
    w(f"| ≤ 20 KiB per idle WebSocket | {num(m.get('idle_ws'))} idle | {num(per, 1)} KiB | {verdict(None if per is None else per <= 20)} | |")
    if quick or hi < 100_000:
        w("")
        w(f"The route-count targets are stated for 100,000 routes; this run's largest table was {hi:,}.")
    w("")
    # The hand-written reading of the figures (gaps and their causes) is versioned beside this
    # script and carried into every report, so regenerating the tables never loses it.
    analysis = Path(__file__).resolve().parent.parent / "ANALYSIS.md"
    if analysis.exists():
        w(analysis.read_text().rstrip())
        w("")
    default_results = Path(__file__).resolve().parent.parent / "RESULTS.md"
    carry = Path(os.environ.get("BENCH_RESULTS_CARRY") or default_results)
    gated = render_gated(r.out) or carried_section(carry, GATED_BEGIN, GATED_END)
    if gated:
        w(gated)
        w("")
    flood = carried_section(carry, FLOOD_BEGIN, FLOOD_END)
    if flood:
        w(flood)
        w("")
    spawn = render_spawn(r.out) or carried_spawn_section(carry)
    if spawn:
        w(spawn)
        w("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The spawn benchmark's section.

SPAWN_BEGIN = "<!-- spawn benchmark: begin (written by bench/run spawn; edits here are replaced) -->"
SPAWN_END = "<!-- spawn benchmark: end -->"


def render_spawn(out: Path):
    """The spawn section from OUT_DIR/spawn.json, markers included; None without results."""
    d = load(out / "spawn.json")
    if not isinstance(d, dict) or "sequential" not in d:
        return None
    m, e = d.get("machine", {}), d.get("engine", {})
    seq, con = d.get("sequential", {}), d.get("concurrent", {})
    s, r = seq.get("spawner", {}), seq.get("docker_run", {})
    poll = d.get("poll_ms")
    started = d.get("started_unix")
    when = datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if started else "?"
    lines: list[str] = []
    w = lines.append
    w(SPAWN_BEGIN)
    w("## Spawning servers (Docker)")
    w("")
    note = f" ({d['note']})" if d.get("note") else ""
    w(f"Generated by `bench/run spawn` on {when}, in {d.get('elapsed_s', '?')} s{note}. Raw results: `bench/out/{out.name}/spawn.json` (not committed). Load average at start {d.get('loadavg_start', '?')}, at the end {d.get('loadavg_end', '?')}: anything else using the machine or the Docker engine skews the numbers.")
    w("")
    w("| | |")
    w("| --- | --- |")
    w(f"| CPU | {m.get('cpu', '?')} |")
    w(f"| cores | {m.get('cores', '?')} |")
    w(f"| memory (GiB) | {m.get('memory_gib', '?')} |")
    w(f"| kernel | {m.get('kernel', '?')} |")
    w(f"| Docker engine | {e.get('version', '?')} (API {e.get('api_version', '?')}), storage driver {e.get('storage_driver', '?')}, cgroup v{e.get('cgroup_version', '?')}, runtime {e.get('runtime', '?')} |")
    w(f"| server | image `{d.get('image', '?')}` (the host's static busybox, imported), command `{d.get('command', '?')}` |")
    w("")
    w("Method:")
    w("")
    w(f"- **Start → ready, one at a time**: {seq.get('n', '?')} starts of each kind, alternating which goes first, after one unrecorded warm-up of each. *gantry spawner* is `DockerSpawner::start` (image inspect, gantry network lookup, create with labels, start, then an HTTP probe every {poll} ms until the server answers). *docker run* is the CLI, `docker run -d --network <the same network> <image> <command>`, then the container's address from the engine and the same HTTP probe every {poll} ms. Both are timed from the call to the first HTTP answer; removing the container afterwards is not timed. The ratio is spawner / docker run (below 1: the spawner is faster).")
    w(f"- **Throughput**: {con.get('servers', '?')} servers (one per user) started at the same moment through one spawner; wall time until the last one answers HTTP, and servers per second. Then all are stopped at once (stop with a 1 s grace, then removed), timed too.")
    w("")
    w("### Start → ready, one at a time")
    w("")
    w("| path | median ms | p90 ms | min ms | max ms | mean ms | starts |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, x in [("gantry spawner", s), ("`docker run -d` + HTTP polling", r)]:
        w(f"| {name} | {num(x.get('median_ms'), 1)} | {num(x.get('p90_ms'), 1)} | {num(x.get('min_ms'), 1)} | {num(x.get('max_ms'), 1)} | {num(x.get('mean_ms'), 1)} | {num(x.get('count'))} |")
    w(f"| **ratio spawner / docker run** | **{num(seq.get('ratio_median'), 2)}×** | **{num(seq.get('ratio_p90'), 2)}×** | | | | |")
    w("")
    w(f"### {num(con.get('servers'))} servers at once")
    w("")
    lat = con.get("start_to_ready", {})
    w("| servers | ready | failed | wall time (s) | servers/s | each: start → ready median / p90 / max (ms) | stopping all (s) | left after stop |")
    w("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    w(f"| {num(con.get('servers'))} | {num(con.get('started'))} | {num(con.get('failed'))} | {num(con.get('wall_s'), 2)} | {num(con.get('servers_per_s'), 1)} | {num(lat.get('median_ms'))} / {num(lat.get('p90_ms'))} / {num(lat.get('max_ms'))} | {num(con.get('stop_wall_s'), 2)} | {num(con.get('left_after_stop'))} |")
    if con.get("first_failures"):
        w("")
        w("First failures: " + "; ".join(f"`{f}`" for f in con["first_failures"]))
    w(SPAWN_END)
    return "\n".join(lines)


def carried_section(results: Path, begin: str, end_marker: str):
    """The section between two markers of an existing results file, markers included; None
    if it has none."""
    try:
        text = results.read_text()
    except OSError:
        return None
    start, end = text.find(begin), text.find(end_marker)
    if start < 0 or end < start:
        return None
    return text[start:end + len(end_marker)]


def carried_spawn_section(results: Path):
    """The spawn section of an existing results file, markers included; None if it has none."""
    return carried_section(results, SPAWN_BEGIN, SPAWN_END)


def splice(results: Path, section: str, begin: str, end_marker: str, before: str | None = None):
    """Puts SECTION into the results file in place of the one between the markers; without
    one, before the marker BEFORE when the file has it, else at the end."""
    try:
        text = results.read_text()
    except OSError:
        text = "# gantry benchmark results\n"
    start, end = text.find(begin), text.find(end_marker)
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len(end_marker):]
    elif before is not None and text.find(before) >= 0:
        at = text.find(before)
        text = text[:at] + section + "\n\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    results.write_text(text)


def splice_spawn(out: Path, results: Path):
    """Puts the spawn section of OUT_DIR into the results file, in place of its old one."""
    section = render_spawn(out)
    if section is None:
        sys.exit(f"report.py: no spawn results in {out}/spawn.json")
    (out / "RESULTS-spawn.md").write_text(section + "\n")
    splice(results, section, SPAWN_BEGIN, SPAWN_END)


def splice_gated(out: Path, results: Path):
    """Puts the gated section of OUT_DIR into the results file, in place of its old one (or
    before the spawn section, where the full report has it)."""
    section = render_gated(out)
    if section is None:
        sys.exit(f"report.py: no gated results in {out}/gated/")
    (out / "RESULTS-gated.md").write_text(section + "\n")
    splice(results, section, GATED_BEGIN, GATED_END, before=SPAWN_BEGIN)


# ---------------------------------------------------------------------------------------------
# The gated-path section.

GATED_BEGIN = "<!-- gated path: begin (written by bench/run gated; edits here are replaced) -->"
GATED_END = "<!-- gated path: end -->"
GATED_PEERS = ["direct", "nginx", "gantry-proxy", "gantry-up-cookie", "gantry-up-token"]
GATED_NAMES = {
    "direct": "direct (no proxy)",
    "nginx": "nginx",
    "gantry-proxy": "`gantry proxy`",
    "gantry-up-cookie": "`gantry up`, session cookie",
    "gantry-up-token": "`gantry up`, API token",
}


def render_gated(out: Path):
    """The gated section from OUT_DIR/gated/, markers included; None without results."""
    g = out / "gated"
    setup = load(g / "setup.json")
    if not isinstance(setup, dict):
        return None
    run = load(g / "run.json") or {}
    rows = {}
    for peer in GATED_PEERS:
        data = load(g / "raw" / f"{peer}.json")
        extra = load(g / "raw" / f"{peer}.extra.json") or {}
        state = load(g / "raw" / f"{peer}.state.json") or {}
        if data is None and not state:
            continue
        rows[peer] = (data, extra, state)
    if not rows:
        return None

    def valid(peer):
        """(req/s, p50, p99, cpu) when measured with under 1% errors, else None."""
        data, extra, _ = rows.get(peer, (None, {}, {}))
        if not data or not data.get("req_per_s"):
            return None
        errors = sum((data.get("errors") or {}).values())
        if errors > 0.01 * (data.get("requests") or 0):
            return None
        lat = data.get("latency", {})
        return data["req_per_s"], lat.get("p50_us"), lat.get("p99_us"), extra.get("proxy_cpu")

    quick = str(setup.get("quick")) == "1"
    d, c = setup.get("duration_s"), setup.get("connections")
    cpuset = setup.get("cpuset")
    pinned = "not pinned (one CPU)" if cpuset in (None, "") else f"pinned to CPU {cpuset} with `docker update --cpuset-cpus` (no profile key pins CPUs)"
    lines: list[str] = []
    w = lines.append
    w(GATED_BEGIN)
    w("## Gated path (`gantry up`)")
    w("")
    if quick:
        w("> **QUICK SMOKE RUN (`BENCH_QUICK=1`)**: short loads, run to prove that `bench/run gated` works")
        w("> end to end; not the benchmark's figures.")
        w("")
    w(f"Generated by `bench/run gated` on {setup.get('started', '?')}, in {run.get('elapsed_s', '?')} s ({setup.get('gantry', '?')}; nginx {setup.get('nginx', '?')}; {setup.get('wrk', '?')}; Docker {setup.get('docker', '?')}; {setup.get('cores', '?')} × {setup.get('cpu', '?')}). Raw results: `bench/out/{out.name}/gated/` (not committed). Load average at start {setup.get('loadavg_start', '?')}, at the end {run.get('loadavg_end', '?')}: anything else running on the machine skews the numbers.")
    w("")
    w("Method:")
    w("")
    w(f"- **One backend**: `bench-backend` (one thread) in a Docker container (image `{setup.get('image', '?')}`, `docker import`ed from the binary and its shared libraries), started by `gantry up` as user alice's notebook server (`POST /hub/api/users/alice/server`, profile `bench`) on the gantry instance's own network, at `{setup.get('backend', '?')}`; {pinned}. Every peer below forwards to that container; all requests are GET `{setup.get('path', '?')}`.")
    w(f"- **Peers**, each a fresh process on CPU 1 ({setup.get('pinning', '?')}): *direct*: wrk to the container; *nginx*: 1 worker, upstream keep-alive 64, one `location /user/alice/`; *`gantry proxy`*: `--threads 1`, one route `/user/alice` added through its API; *`gantry up`*: the hub and proxy on one listener, SQLite in the run's folder, with the gate: only alice (or an admin, or a token allowed to reach her server) gets through to `/user/alice/…`. `gantry up` runs with `--threads 1`, tokio's current-thread scheduler like `gantry proxy --threads 1` (plus its blocking pool and SQLite's threads, idle here). Each `gantry up` peer is a fresh process that adopts the running container at start. *session cookie*: the `gantry-session` cookie from logging alice in with her password (`POST /hub/login` with the CSRF token of the login page); *API token*: `Authorization: token …`, a token alice's account got through `POST /hub/api/users/alice/tokens` (scope `self`).")
    w(f"- **Load**: `wrk -t1 -c{c} -d{d}s --latency` on keep-alive connections after a 1 s warm-up, on CPU 0 with the container, as in the keep-alive scenario above. *proxy CPU* is the proxy process's CPU use during the load (1.00 = one CPU; for direct, the backend's), children included (nginx's worker); *backend CPU* is the container's; *threads* the proxy process's threads after the load (for direct, the backend's).")
    w("")
    w("| peer | req/s | p50 µs | p99 µs | errors | proxy CPU | proxy CPU µs per request | backend CPU | threads | vs `gantry proxy` | vs nginx | unauthenticated request |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base_g, base_n = valid("gantry-proxy"), valid("nginx")
    for peer in GATED_PEERS:
        if peer not in rows:
            continue
        data, extra, state = rows[peer]
        if not data:
            w(f"| {GATED_NAMES[peer]} | not measured: {state.get('reason', 'no result')} | | | | | | | | | | |")
            continue
        lat = data.get("latency", {})
        rate = data.get("req_per_s")
        errors = sum((data.get("errors") or {}).values())
        cpu = extra.get("proxy_cpu")
        per = cpu * 1e6 / rate if isinstance(cpu, (int, float)) and rate and peer != "direct" else None
        v = valid(peer)
        vs_g = v[0] / base_g[0] if v and base_g else None
        vs_n = v[0] / base_n[0] if v and base_n else None
        anon = state.get("anonymous_status")
        anon = "–" if anon in (None, "") or peer in ("direct", "nginx", "gantry-proxy") else f"{anon}"
        w(f"| {GATED_NAMES[peer]} | {num(rate)} | {num(lat.get('p50_us'))} | {num(lat.get('p99_us'))} | {num(errors)} | {num(cpu, 2)} | {num(per, 1)} | {num(extra.get('backend_cpu'), 2)} | {num(extra.get('threads'))} | {num(vs_g, 2)}{'×' if vs_g else ''} | {num(vs_n, 2)}{'×' if vs_n else ''} | {anon} |")
    w("")
    w("*unauthenticated request*: the status `gantry up` gives the same request without a credential (the gate at work; a browser is sent to log in).")
    names = [(p, (rows[p][1] or {}).get("thread_names")) for p in ("gantry-proxy", "gantry-up-cookie") if p in rows]
    names = [f"{GATED_NAMES[p]}: {n}" for p, n in names if n]
    if names:
        w("")
        w("Threads by name: " + "; ".join(names) + ".")
    w("")
    w("### Targets")
    w("")
    w("Ratios from this run; *met* only when both sides were measured with under 1% errors.")
    w("")
    w("| target | measured | ratio | met | note |")
    w("| --- | --- | ---: | --- | --- |")

    def verdict(ok):
        return "–" if ok is None else ("**met**" if ok else "**not met**")

    def note(*vs):
        cpus = [v[3] for v in vs if v and isinstance(v[3], (int, float))]
        if len(cpus) == len(vs) and any(cpu < 0.9 for cpu in cpus):
            return "proxy CPU " + " / ".join(f"{cpu:.2f}" for cpu in cpus) + ": a proxy under 0.90 was not the bottleneck (CPU 0 or other load was)"
        return ""

    def rate_target(peer, base, base_name, factor):
        a, b = valid(peer), valid(base)
        ratio = a[0] / b[0] if a and b else None
        w(f"| {GATED_NAMES[peer]} req/s ≥ {factor:.2f}× {base_name} | {num(a and a[0])} vs {num(b and b[0])} | {num(ratio, 2)}× | {verdict(None if ratio is None else ratio >= factor)} | {note(a, b) if a and b else ''} |")

    rate_target("gantry-up-cookie", "gantry-proxy", "`gantry proxy`", 0.95)
    rate_target("gantry-up-token", "gantry-proxy", "`gantry proxy`", 0.95)
    rate_target("gantry-proxy", "nginx", "nginx", 1.0)
    a, b = valid("gantry-proxy"), valid("nginx")
    ratio = a[2] / b[2] if a and b and b[2] else None
    w(f"| `gantry proxy` p99 ≤ nginx p99 | {num(a and a[2])} µs vs {num(b and b[2])} µs | {num(ratio, 2)}× | {verdict(None if ratio is None else ratio <= 1.0)} | |")
    rate_target("gantry-up-cookie", "nginx", "nginx", 0.95)
    rate_target("gantry-up-token", "nginx", "nginx", 0.95)
    w(GATED_END)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The login-flood section.

FLOOD_BEGIN = "<!-- login flood: begin (written by bench/run flood; edits here are replaced) -->"
FLOOD_END = "<!-- login flood: end -->"


def render_flood(out: Path):
    """The login-flood section from OUT_DIR/flood/, markers included; None without results."""
    f = out / "flood"
    result, setup = load(f / "flood.json"), load(f / "setup.json")
    if not result:
        return None
    setup = setup or {}
    lines = []
    w = lines.append
    rss = result["rss_kib"]
    gated = result["gated"]
    login = result["login"]
    base = rss["baseline"]
    statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(result["statuses"].items()))
    w(FLOOD_BEGIN)
    w("## Login flood (`gantry up`)")
    w("")
    w(f"Generated by `bench/run flood` on {setup.get('started', '?')} ({setup.get('gantry', '?')}; "
      f"{setup.get('cores', '?')} × {setup.get('cpu', '?')}, {setup.get('memory_gib', '?')} GiB). "
      f"Raw results: `bench/out/{out.name}/flood/` (not committed). Load average at the end "
      f"{setup.get('loadavg_end', '?')}: anything else running on the machine skews the numbers. "
      "Command: `bench/run flood` (it builds with `cargo build --release --locked -p gantry-proxy -p gantry-bench`; "
      "`BENCH_SKIP_BUILD=1` uses what is built).")
    note = os.environ.get("BENCH_NOTE")
    if note:
        w("")
        w(f"Note on this run: {note}")
    w("")
    w(f"`gantry up` with its defaults (one hashing thread per core, `[auth.limits]` defaults), "
      f"unpinned, alice's server (bench-backend in a container) running. `login-flood`: "
      f"{result['clients']} clients from {result['addresses']} loopback addresses post wrong "
      f"passwords for {result['flood_seconds']:.0f} s, half for {result['known']} existing accounts "
      f"and half for made-up names (a client refused 429 reconnects from its next address); "
      f"meanwhile 8 keep-alive connections request `/user/alice/api/status` with alice's API "
      f"token (the gated path), against the same load alone for 10 s before; alice logs in from "
      f"127.0.0.1 before, halfway through and after the flood. Threads of the measured process: "
      f"{setup.get('threads', '?')}.")
    w("")
    cpu = result.get("gantry_cpu", {})
    w(f"Flood: {result['attempts']:,} attempts ({result['attempts_per_second']:,.0f}/s); answers {statuses}. "
      f"gantry's CPU use: {cpu.get('baseline', 0):.2f} CPUs under the gated load alone, {cpu.get('flood', 0):.2f} during the flood.")
    w("")

    def verdict(ok):
        return "met" if ok else "**missed**"

    def m(kib):
        return f"{kib / 1024:,.0f}"

    peak, after = rss["peak_during"], rss["after"]
    ratio = gated["ratio"]
    during_login = login["during"]
    w("| measure | figure | target | |")
    w("| --- | --- | --- | --- |")
    w(f"| RSS before (baseline) | {m(base)} MiB | | |")
    w(f"| RSS peak during the flood | {m(peak)} MiB (+{m(peak - base)}) | < baseline + 256 MiB | {verdict(peak - base < 256 * 1024)} |")
    w(f"| RSS {rss['after_seconds']:.0f} s after | {m(after)} MiB (+{m(after - base)}) | < baseline + 64 MiB | {verdict(after - base < 64 * 1024)} |")
    w(f"| gated path alone | {gated['baseline']['rate']:,.0f} req/s, p99 {gated['baseline']['p99_ms']:.1f} ms | | |")
    w(f"| gated path during the flood | {gated['during']['rate']:,.0f} req/s, p99 {gated['during']['p99_ms']:.1f} ms ({ratio:.2f}×) | ≥ 0.50× | {verdict(ratio >= 0.5)} |")
    w(f"| alice's login before | {login['before'].get('seconds', 0):.2f} s (status {login['before'].get('status', '?')}) | | |")
    w(f"| alice's login during the flood | {during_login.get('seconds', 0):.2f} s (status {during_login.get('status', '?')}) | ≤ 5 s, 303 | {verdict(bool(during_login.get('ok')) and during_login.get('seconds', 99) <= 5)} |")
    w(f"| alice's login after | {login['after'].get('seconds', 0):.2f} s (status {login['after'].get('status', '?')}) | | |")
    control = load(f / "control.json")
    if control:
        cg = control["gated"]
        w("")
        w(f"Control: the same {control['clients']} clients flooding `GET /hub/health` (a JSON answer from "
          f"memory, no limit) on a fresh `gantry up`: {control['attempts']:,} requests "
          f"({control['attempts_per_second']:,.0f}/s); the gated path {cg['baseline']['rate']:,.0f} req/s alone, "
          f"{cg['during']['rate']:,.0f} req/s during it ({cg['ratio']:.2f}×, p99 {cg['during']['p99_ms']:.1f} ms); "
          f"gantry's CPU use {control.get('gantry_cpu', {}).get('flood', 0):.2f} CPUs; "
          f"RSS {m(control['rss_kib']['baseline'])} → peak {m(control['rss_kib']['peak_during'])} MiB. "
          "What the gated path keeps under the login flood, compared with this, is what logins cost beyond "
          "any flood of requests on the same CPUs.")
    w(FLOOD_END)
    return "\n".join(lines)


def splice_flood(out: Path, results: Path):
    """Puts the flood section of OUT_DIR into the results file, in place of its old one (or
    before the spawn section)."""
    section = render_flood(out)
    if section is None:
        sys.exit(f"report.py: no flood results in {out}/flood/")
    (out / "RESULTS-flood.md").write_text(section + "\n")
    splice(results, section, FLOOD_BEGIN, FLOOD_END, before=SPAWN_BEGIN)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--spawn":
        splice_spawn(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--gated":
        splice_gated(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--flood":
        splice_flood(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    if len(sys.argv) != 2:
        sys.exit("usage: report.py OUT_DIR | report.py --spawn OUT_DIR RESULTS.md | report.py --gated OUT_DIR RESULTS.md | report.py --flood OUT_DIR RESULTS.md")
    print(render(Results(Path(sys.argv[1]))))


if __name__ == "__main__":
    main()
