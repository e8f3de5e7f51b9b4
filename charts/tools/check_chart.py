"""Checks the gantry Helm chart without a cluster or a helm binary; .ci/chart runs it.

    python check_chart.py CHART_DIR OUT_DIR

For the default values, every file in CHART_DIR/examples and CHART_DIR/ci, it:
  1. validates the values against values.schema.json (the `jsonschema` package, and Helm's own
     validator, which `helm install` runs);
  2. lints the chart with them (`helm lint --strict`, through helm-python-sdk, which embeds
     Helm's Go library);
  3. renders the templates (`helm template`) and checks every manifest against Kubernetes'
     OpenAPI schemas in strict mode (kubernetes-validate) for the oldest Kubernetes the chart
     supports and the newest the package knows; the Gateway API HTTPRoute, which those schemas
     lack, against the subset of its CRD schema the chart uses;
  4. parses the rendered gantry.toml with tomllib and checks what the chart maps into it.
It also feeds the schema values it must refuse, and the templates values that pass the schema
but make no sense together. The rendered manifests go to OUT_DIR/<name>/.
"""

from __future__ import annotations

import copy
import json
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

# The oldest Kubernetes in Chart.yaml's kubeVersion, and the newest kubernetes-validate knows.
KUBE_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
RELEASE = "lab"
NAMESPACE = "jhub"

# What the chart renders for gateway.networking.k8s.io/v1 HTTPRoute, checked as the CRD
# (gateway-api v1.2, standard channel) constrains it.
HTTPROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "parentRefs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 32,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "group": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string", "minLength": 1, "maxLength": 253},
                            "namespace": {"type": "string", "minLength": 1, "maxLength": 63},
                            "sectionName": {"type": "string", "minLength": 1, "maxLength": 253},
                            "port": {"type": "integer"},
                        },
                    },
                },
                "hostnames": {
                    "type": "array",
                    "maxItems": 16,
                    "items": {
                        "type": "string",
                        "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                    },
                },
                "rules": {
                    "type": "array",
                    "maxItems": 16,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "matches": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "path": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "properties": {
                                                "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                                                "value": {"type": "string", "pattern": "^/"},
                                            },
                                        }
                                    },
                                },
                            },
                            "backendRefs": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name"],
                                    "properties": {
                                        "name": {"type": "string", "minLength": 1},
                                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                        "weight": {"type": "integer"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


class Checks:
    """Runs named checks, prints each, and counts the results."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def run(self, name: str, fn: Callable[[], str | None]) -> None:
        try:
            detail = fn()
        except Exception as exc:  # every failure is reported, then the next check runs
            self.failed.append(name)
            print(f"  FAIL {name}\n       {type(exc).__name__}: {exc}", flush=True)
            return
        self.passed += 1
        print(f"  ok   {name}{f' ({detail})' if detail else ''}", flush=True)


def values_sets(chart: Path) -> dict[str, dict[str, Any]]:
    """The values files to check, by a short name: the defaults, examples/*, ci/*."""
    sets: dict[str, dict[str, Any]] = {"default": {}}
    for sub in ("examples", "ci"):
        for path in sorted((chart / sub).glob("*.yaml")):
            sets[f"{sub}/{path.stem}"] = yaml.safe_load(path.read_text()) or {}
    return sets


def check_schema(chart: Path, name: str, overrides: dict[str, Any], validator: jsonschema.Validator) -> str:
    with helm.Chart.load(chart) as c:
        merged = c.merge_values(overrides)
        c.validate_schema(overrides)
    errors = sorted(validator.iter_errors(merged), key=lambda e: list(e.absolute_path))
    if errors:
        raise AssertionError(
            "; ".join(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)
        )
    return "jsonschema and Helm"


def check_lint(chart: Path, overrides: dict[str, Any]) -> str:
    report = helm.lint(chart, overrides, strict=True, namespace=NAMESPACE)
    # Severity 1 is information ("icon is recommended"); warnings and errors fail.
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    if bad or report.get("errors"):
        raise AssertionError(json.dumps({"messages": bad, "errors": report.get("errors")}))
    return f"{len(report.get('messages', []))} info message(s)"


def render(chart: Path, overrides: dict[str, Any]) -> dict[str, str]:
    with helm.Chart.load(chart) as c:
        return c.render(overrides, name=RELEASE, namespace=NAMESPACE, is_install=True)


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def check_kubernetes(docs: list[dict[str, Any]]) -> str:
    problems = []
    kinds = []
    for doc in docs:
        kinds.append(doc["kind"])
        if doc.get("apiVersion", "").startswith("gateway.networking.k8s.io/"):
            for e in jsonschema.Draft7Validator(HTTPROUTE_SCHEMA).iter_errors(doc):
                problems.append(f"{doc['kind']}: {'.'.join(map(str, e.absolute_path))}: {e.message}")
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{doc['kind']} {doc['metadata']['name']} (Kubernetes {version}): {e.message}")
    if problems:
        raise AssertionError("; ".join(problems))
    return f"{len(docs)} manifests: {', '.join(sorted(kinds))}; Kubernetes {' and '.join(KUBE_VERSIONS)}"


def check_toml(docs: list[dict[str, Any]], overrides: dict[str, Any], out: Path) -> str:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    text = cm["data"]["gantry.toml"]
    out.write_text(text)
    config = tomllib.loads(text)
    hub = config["hub"]
    # What the chart itself maps, for every values set.
    assert hub["data_dir"] == "/var/lib/gantry", hub
    assert isinstance(hub["session_days"], int), f"session_days is {hub['session_days']!r}, not an integer"
    assert isinstance(config["proxy"]["header_timeout_secs"], int), config["proxy"]
    port = int(hub["bind"].rsplit(":", 1)[1])
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == port, "bind and containerPort differ"
    env = {e["name"]: e for e in container.get("env", [])}
    assert env["GANTRY_CONFIG"]["value"] == "/etc/gantry/gantry.toml", env
    assert env["GANTRY_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "admin-token", env
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    for provider in config.get("auth", {}).get("oidc", {}).values():
        if "client_secret_file" in provider:
            assert "/etc/gantry/secrets" in mounts, "client secrets named but not mounted"
    for key, provider in config.get("auth", {}).get("oidc", {}).items():
        assert provider["client_secret_file"] == f"/etc/gantry/secrets/oidc-{key}", provider
    profile_list = overrides.get("singleuser", {}).get("profileList", [])
    assert sorted(config.get("profiles", {})) == sorted(p["slug"] for p in profile_list), "profiles"
    for p in profile_list:
        rendered = config["profiles"][p["slug"]]
        for key, value in p.items():
            if key == "slug":
                continue
            # Whole numbers must come out as TOML integers, fractions as floats.
            assert rendered[key] == value and type(rendered[key]) is type(value), (
                f"profiles.{p['slug']}.{key}: {rendered[key]!r} rendered for {value!r}"
            )
    ports = config.get("docker", {}).get("spark_ports")
    if ports is not None:
        assert all(isinstance(x, int) for x in ports), f"spark_ports {ports!r}"
    return f"{len(text.splitlines())} lines, tables {', '.join(sorted(config))}"


def check_refusals(chart: Path, validator: jsonschema.Validator) -> str:
    """Values the schema must refuse: without these, a permissive schema would pass all else."""
    profile = {"slug": "cpu", "display_name": "CPU", "image": "img"}
    bad: dict[str, dict[str, Any]] = {
        "a misspelt key": {"hub": {"imgae": {"name": "x"}}},
        "an unknown top-level key": {"singeluser": {}},
        "an unknown signup mode": {"auth": {"local": {"signup": "maybe"}}},
        "an unknown profile key": {"singleuser": {"profileList": [dict(profile, gpu=1)]}},
        "a profile without a slug": {"singleuser": {"profileList": [{"display_name": "CPU", "image": "i"}]}},
        "a fractional GPU count": {"singleuser": {"profileList": [dict(profile, gpus=0.5)]}},
        "a database type Helm charts do not know": {"hub": {"db": {"type": "mysql"}}},
        "an OIDC provider id gantry refuses": {
            "auth": {"oidc": {"lab_sso": {"issuerUrl": "https://x", "clientId": "c", "allowAll": True}}}
        },
        "an OIDC provider with two client secrets": {
            "auth": {"oidc": {"x": {"issuerUrl": "https://x", "clientId": "c", "clientSecret": "s",
                                    "existingSecret": {"name": "n", "key": "k"}, "allowAll": True}}}
        },
        "an OIDC provider that lets nobody in": {
            "auth": {"oidc": {"x": {"issuerUrl": "https://x", "clientId": "c", "allowedGroups": []}}}
        },
        "a port as text": {"hub": {"port": "8000"}},
    }
    with helm.Chart.load(chart) as c:
        for what, overrides in bad.items():
            merged = c.merge_values(copy.deepcopy(overrides))
            if validator.is_valid(merged):
                raise AssertionError(f"jsonschema accepted {what}: {overrides}")
            try:
                c.validate_schema(overrides)
            except helm.HelmError:
                pass
            else:
                raise AssertionError(f"Helm accepted {what}: {overrides}")
    return f"{len(bad)} bad values refused"


def check_template_refusals(chart: Path) -> str:
    """Values the schema allows but the templates must refuse, each with its message."""
    profile = {"display_name": "CPU", "image": "img"}
    bad: dict[str, tuple[dict[str, Any], str]] = {
        "PostgreSQL without a URL": ({"hub": {"db": {"type": "postgres"}}}, "set hub.db.url"),
        "an Ingress without hosts": ({"ingress": {"enabled": True}}, "ingress.hosts"),
        "an HTTPRoute without a Gateway": ({"httpRoute": {"enabled": True}}, "httpRoute.gateway.name"),
        "two profiles with one slug": (
            {"singleuser": {"profileList": [dict(profile, slug="a"), dict(profile, slug="a")]}},
            'the slug "a" is used twice',
        ),
    }
    with helm.Chart.load(chart) as c:
        for what, (overrides, message) in bad.items():
            try:
                c.render(overrides, name=RELEASE, namespace=NAMESPACE)
            except helm.HelmError as exc:
                if message not in str(exc):
                    raise AssertionError(f"{what}: refused, but with {exc}") from exc
            else:
                raise AssertionError(f"the chart rendered {what}")
    return f"{len(bad)} refused with a message"


def main() -> int:
    chart, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    schema = json.loads((chart / "values.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema)
    checks = Checks()
    print(f"helm-python-sdk {helm.helm_c_version()} (Helm {helm.helm_sdk_version()}), "
          f"kubernetes-validate {kubernetes_validate.__version__}", flush=True)

    for name, overrides in values_sets(chart).items():
        print(f"values: {name}", flush=True)
        set_out = out / name.replace("/", "-")
        set_out.mkdir(parents=True, exist_ok=True)
        checks.run(f"{name}: values match values.schema.json",
                   lambda: check_schema(chart, name, overrides, validator))
        checks.run(f"{name}: helm lint --strict", lambda: check_lint(chart, overrides))
        state: dict[str, Any] = {}

        def do_render() -> str:
            state["rendered"] = render(chart, overrides)
            for path, text in state["rendered"].items():
                (set_out / Path(path).name).write_text(text)
            state["docs"] = manifests(state["rendered"])
            return f"{len(state['rendered'])} templates"

        checks.run(f"{name}: helm template", do_render)
        if "docs" in state:
            checks.run(f"{name}: manifests valid for Kubernetes", lambda: check_kubernetes(state["docs"]))
            checks.run(f"{name}: gantry.toml is TOML and says what the values say",
                       lambda: check_toml(state["docs"], overrides, set_out / "gantry.toml"))

    print("schema strictness", flush=True)
    checks.run("values.schema.json refuses bad values", lambda: check_refusals(chart, validator))
    checks.run("the templates refuse incoherent values", lambda: check_template_refusals(chart))

    print(f"chart: {checks.passed} passed, {len(checks.failed)} failed", flush=True)
    for name in checks.failed:
        print(f"  failed: {name}", file=sys.stderr)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
