"""The alerts and dashboards in deploy/ (issue 17, item 3), against a real Prometheus.

promtool checks the shipped configurations and rules, and runs the rules' unit tests
(deploy/prometheus/tests: each alert fires on its condition). Then a real ``prometheus``
(Debian's package; ``make test`` installs it) is started with a configuration made from
the shipped one — same jobs and TLS settings, the test mesh's ports, the test CA, 1 s
intervals, the shipped rules — and scrapes a live in-process mesh: a bridge serving TLS
(so the shipped ``scheme``/``tls_config`` are what scrapes it) and the run's scheduler.
Jobs go through it: one succeeds, one is dead-lettered, one route starves behind a refused
submit. Every recorded signal, every alert's comparison and every query of every
dashboard panel must then return data; a metric or label renamed on either side leaves
one of them empty, and the test fails naming it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiormq
import grpc
import pytest
import yaml

from broker_bridge.server import BridgeServer
from fleetwire.messaging.topology import Topology
from fleetwire.process.node_settings import NodeSettings
from fleetwire.process.settings import BridgeSettings, SchedulerSettings, Settings, TlsSettings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from fleetwire_tools.certs import DevCertificates
from fleetwire_tools.supervisor import DEV_CERT_DIR
from scheduler.server import SchedulerServer
from tests.conftest import free_port
from tests.integration.test_bad_results import spec, wait_state
from tests.support.eventually import eventually, eventually_sync
from tests.support.scripted_node import ScriptedNode, running
from tests.support.tls import make_certificates

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"
CONFIG = DEPLOY / "prometheus.yml"
OTHER_CONFIG = DEPLOY / "prometheus.compose.yml"
RULES = DEPLOY / "rules" / "fleetwire.rules.yml"
RULE_TESTS = DEPLOY / "tests" / "fleetwire.test.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))

BRIDGE_JOB, SCHEDULER_JOB = "fleetwire-bridge", "fleetwire-scheduler"
NODE_JOB = "fleetwire-node"
# What Grafana puts in for its built-in variables; no other variable may reach a query.
GRAFANA_BUILT_INS = {"$__rate_interval": "1m", "${__rate_interval}": "1m"}
ALERT_FORM = re.compile(
    r"^(?P<signal>fleetwire:[a-z0-9_:]+)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<threshold>-?[0-9.]+)$"
)


def tool(name: str) -> str:
    """The path of a Prometheus tool. Missing is a failure, not a skip: ``make test``
    installs it (scripts/ensure-services.sh, Debian package prometheus)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed; `make test` installs it (apt-get install prometheus)"
        )
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def load_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict), f"{path} is not a YAML mapping"
    return loaded


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, expr) of every target of every panel, Grafana's variables put in."""
    queries = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_BUILT_INS.items():
                    expr = expr.replace(variable, value)
                assert "$" not in expr, f"{path.name}/{panel['title']}: unknown variable in {expr}"
                queries.append((f"{path.name}: {panel['title']}", expr))
    return queries


def live_queries() -> list[tuple[str, str]]:
    """Everything that must return data from a live mesh: each recorded signal (as its
    expression, and as the series Prometheus recorded), each alert's comparison made
    ``bool`` (it answers 0 or 1 for every series instead of nothing while all is well),
    and each dashboard query."""
    queries = []
    for rule in rules():
        if "record" in rule:
            queries.append((f"rule {rule['record']}", rule["expr"]))
            queries.append((f"recorded {rule['record']}", rule["record"]))
        else:
            form = ALERT_FORM.match(rule["expr"].strip())
            assert form, f"alert {rule['alert']}: not `fleetwire:<signal> <op> <number>`"
            comparison = f"{form['signal']} {form['op']} bool {form['threshold']}"
            queries.append((f"alert {rule['alert']}", comparison))
    return queries + dashboard_queries()


# --- The files, as promtool and Grafana read them. ----------------------------------------


def test_promtool_passes_the_rules_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_passes_the_configurations() -> None:
    checked = promtool("check", "config", str(CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 rule files found" in checked.stdout  # the glob finds the shipped rules
    # Its paths are the containers' (/etc/prometheus/...), not this machine's.
    other = promtool("check", "config", "--syntax-only", str(OTHER_CONFIG))
    assert other.returncode == 0, other.stdout + other.stderr


def test_the_config_scrapes_the_local_mesh_as_fleetwire_up_serves_it() -> None:
    """Default metrics ports, HTTPS, and the CA where the dev profile writes it."""
    jobs = {job["job_name"]: job for job in load_yaml(CONFIG)["scrape_configs"]}
    ports = {
        BRIDGE_JOB: BridgeSettings.model_fields["metrics_port"].default,
        SCHEDULER_JOB: SchedulerSettings.model_fields["metrics_port"].default,
    }
    assert set(jobs) == {*ports, NODE_JOB}
    # The nodes: plaintext on loopback (node/metrics.py), one port each from the default up.
    first = NodeSettings.model_fields["metrics_port"].default
    node = jobs.pop(NODE_JOB)
    assert node["scheme"] == "http"
    assert node["static_configs"] == [{"targets": [f"localhost:{first}", f"localhost:{first + 1}"]}]
    for name, job in jobs.items():
        assert job["static_configs"] == [{"targets": [f"localhost:{ports[name]}"]}]
        assert job["scheme"] == "https"
        ca = (CONFIG.parent / job["tls_config"]["ca_file"]).resolve()
        assert ca == (ROOT / DEV_CERT_DIR / "ca.pem").resolve()


def test_alerts_say_what_fired_and_what_to_do() -> None:
    alerts = [rule for rule in rules() if "alert" in rule]
    assert {a["alert"] for a in alerts} >= {
        "FleetwireQueueWaitHigh",
        "FleetwireDeadLettersGrowing",
        "FleetwireNoEligibleNode",
        "FleetwireNodesExcluded",
        "FleetwireAdmissionRefusals",
        "FleetwireLedgerImbalance",
    }
    for alert in alerts:
        assert alert["annotations"]["summary"], alert["alert"]
        assert alert["annotations"]["description"], alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]


def test_dashboards_choose_their_prometheus_with_a_variable() -> None:
    assert [p.stem for p in DASHBOARDS] == ["nodes", "overview", "queues"]
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        uids.add(board["uid"])
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert board["panels"], path.name
        for panel in board["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], f"{path.name}: {panel['title']}"
    assert len(uids) == len(DASHBOARDS)


# --- A real Prometheus on a live mesh. -----------------------------------------------------


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as reply:
            return json.loads(reply.read())

    async def query(self, expr: str) -> list[Any]:
        """The result of an instant query; an error answer (a bad query) raises."""
        try:
            answer = await asyncio.to_thread(self._get, "/api/v1/query", query=expr)
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{expr}: {err.read().decode(errors='replace')}") from err
        data = answer["data"]
        result = data["result"]
        return [result] if data["resultType"] == "scalar" else list(result)

    async def targets(self) -> dict[str, dict[str, Any]]:
        answer = await asyncio.to_thread(self._get, "/api/v1/targets")
        return {t["labels"]["job"]: t for t in answer["data"]["activeTargets"]}

    async def rule_health(self) -> dict[str, str]:
        """Rule name -> "ok", or its last evaluation error."""
        answer = await asyncio.to_thread(self._get, "/api/v1/rules")
        return {
            rule["name"]: "ok" if rule["health"] == "ok" else rule.get("lastError", rule["health"])
            for group in answer["data"]["groups"]
            for rule in group["rules"]
        }

    def ready(self) -> bool:
        try:
            self._get("/api/v1/status/runtimeinfo")
        except (OSError, ValueError):
            return self.process.poll() is not None  # dead: stop waiting, fail below
        return True


def config_for_the_test_mesh(ports: dict[str, int], ca: Path) -> dict[str, Any]:
    """The shipped configuration aimed at the test mesh: each job's target host kept and
    its port replaced; the bridge keeps the shipped TLS settings, with the test CA; the
    scheduler is scraped in plaintext (its scripted nodes speak plaintext, and its metrics
    endpoint serves as its gRPC ports do)."""
    config = copy.deepcopy(load_yaml(CONFIG))
    config["global"] = {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    config["rule_files"] = [str(CONFIG.parent / pattern) for pattern in config["rule_files"]]
    # The in-process mesh's nodes are scripted (no metrics endpoint); a real node's endpoint
    # is scraped by the e2e suite (test_node_worker_lifecycle.py).
    config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] != NODE_JOB]
    for job in config["scrape_configs"]:
        host = job["static_configs"][0]["targets"][0].rsplit(":", 1)[0]
        job["static_configs"] = [{"targets": [f"{host}:{ports[job['job_name']]}"]}]
        if job["job_name"] == BRIDGE_JOB:
            job["tls_config"]["ca_file"] = str(ca)
        else:
            job["scheme"] = "http"
            del job["tls_config"]
    return config


@pytest.fixture
def certs(tmp_path: Path) -> DevCertificates:
    return make_certificates(tmp_path / "certs")


@pytest.fixture
async def tls_bridge(
    settings: Settings, certs: DevCertificates, starved_model: str
) -> AsyncIterator[BridgeServer]:
    server = BridgeServer(tls_bridge_settings(settings, certs, starved_model))
    await server.start()
    yield server
    await server.stop(grace=1)


@pytest.fixture
def prometheus(
    tls_bridge: BridgeServer,
    scheduler: SchedulerServer,
    certs: DevCertificates,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Prometheus]:
    """A ``prometheus`` of its own (config, data dir, free port) scraping the test mesh;
    stopped at the end, its log printed when the test failed."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    ports = {BRIDGE_JOB: tls_bridge.metrics_port, SCHEDULER_JOB: scheduler.metrics_port}
    (directory / "prometheus.yml").write_text(
        yaml.safe_dump(config_for_the_test_mesh(ports, certs.ca))
    )
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        eventually_sync(server.ready, within=30, what="prometheus to answer")
        assert process.poll() is None, f"prometheus exited:\n{log.read_text()}"
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            print(f"===== prometheus =====\n{log.read_text(errors='replace')}")


def tls_bridge_settings(settings: Settings, certs: DevCertificates, starved: str) -> Settings:
    """A bridge serving TLS (gRPC and metrics) with ``certs``, on free ports, that knows the
    model ``starved`` (no node serves it) and refuses a third bulk job queued on a route."""
    tls = TlsSettings(cert_file=certs.server.cert, key_file=certs.server.key, insecure=False)
    mesh = settings.mesh.model_copy(update={"models": [*settings.mesh.models, starved]})
    bridge = settings.bridge.model_copy(
        update={"port": 0, "max_queue_depth": 2, "queue_depth_cache": timedelta(0)}
    )
    return settings.model_copy(update={"tls": tls, "mesh": mesh, "bridge": bridge})


@pytest.fixture
async def starved_model(
    settings: Settings, amqp_channel: aiormq.abc.AbstractChannel
) -> AsyncIterator[str]:
    """A model of this test alone, that no node serves; its route queue is deleted after."""
    model = f"prom-{uuid.uuid4().hex[:8]}"
    yield model
    topology = Topology(settings.mesh.namespace)
    await amqp_channel.queue_delete(topology.route_queue(topology.route_key("mainnet", model)))


FAILING_POOL = f"prom-{uuid.uuid4().hex[:8]}"


async def submit(jobs: job_service_pb2_grpc.JobServiceStub, job: job_pb2.JobSpec) -> str:
    return (await jobs.Submit(job_service_pb2.SubmitRequest(job=job))).job.job_id


async def run_the_workload(jobs: job_service_pb2_grpc.JobServiceStub, starved: str) -> list[str]:
    """Runs while nodes are connected: a job that succeeds (histograms, ledger), one
    failed through every retry stage into the dead letters (retries, offences), and bulk
    jobs on ``starved`` up to a QUEUE_FULL refusal (jobs waiting where no node serves).
    Returns the ids of the jobs left waiting."""
    done = await submit(jobs, spec())
    await wait_state(jobs, done, job_pb2.JOB_STATE_SUCCEEDED)
    failing = spec()
    # Served by the failing node alone, on a queue of its own: jobs earlier tests left on
    # tiny-llama's public queue would take its retries and exclude it first.
    failing.model = "tiny-llama"
    failing.constraints.subcloud = FAILING_POOL
    dead = await submit(jobs, failing)
    await wait_state(jobs, dead, job_pb2.JOB_STATE_DEAD_LETTERED)
    bulk = job_pb2.JobSpec(
        model=starved,
        prompt="p",
        priority=job_pb2.PRIORITY_CLASS_BULK,
        sampling=job_pb2.SamplingParams(max_tokens=3),
    )
    waiting = [await submit(jobs, bulk) for _ in range(2)]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await submit(jobs, bulk)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    return waiting


@pytest.mark.timeout(180)
async def test_every_rule_and_dashboard_query_has_data_from_a_live_mesh(
    tls_bridge: BridgeServer,
    scheduler: SchedulerServer,
    prometheus: Prometheus,
    certs: DevCertificates,
    starved_model: str,
) -> None:
    ok = ScriptedNode(
        f"127.0.0.1:{scheduler.port}", f"prom-ok-{uuid.uuid4().hex[:6]}", "scripted", lambda _: "ok"
    )
    failing = ScriptedNode(
        f"127.0.0.1:{scheduler.port}",
        f"prom-failing-{uuid.uuid4().hex[:6]}",
        "tiny-llama",
        lambda _: "fail-retryable",
        subclouds=[FAILING_POOL],
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
    waiting: list[str] = []
    async with (
        grpc.aio.secure_channel(f"127.0.0.1:{tls_bridge.port}", credentials) as channel,
        running(ok),
        running(failing),
    ):
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        try:
            waiting = await run_the_workload(jobs, starved_model)
            assert scheduler.census is not None
            # One census pass now rather than at its next interval: the waiting jobs, the
            # dead letter and the nodes' routes are in the reading from here on.
            reading = await scheduler.census.poll()
            assert reading.queues is not None
            assert reading.ledger is not None
            await assert_every_query_has_data(prometheus)
        finally:
            for job_id in waiting:
                await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job_id))


async def assert_every_query_has_data(prometheus: Prometheus) -> None:
    queries = live_queries()
    empty: list[str] = []

    async def all_answer() -> bool:
        empty.clear()
        for where, expr in queries:
            if not await prometheus.query(expr):
                empty.append(f"{where}: {expr}")
        return not empty

    try:
        # Rates need two scrapes of a series, the recorded signals an evaluation after.
        await eventually(all_answer, within=45, interval=1, what="every query to have data")
    except AssertionError:
        targets = await prometheus.targets()
        health = {job: (t["health"], t["lastError"]) for job, t in targets.items()}
        listed = "\n  ".join(empty)
        raise AssertionError(
            f"{len(empty)} of {len(queries)} queries return nothing (a metric or label "
            f"renamed?):\n  {listed}\ntargets: {health}"
        ) from None
    targets = await prometheus.targets()
    assert {job: t["health"] for job, t in targets.items()} == {
        BRIDGE_JOB: "up",
        SCHEDULER_JOB: "up",
    }
    assert targets[BRIDGE_JOB]["scrapeUrl"].startswith("https://localhost:")
    failing = {
        name: error for name, error in (await prometheus.rule_health()).items() if error != "ok"
    }
    assert not failing, f"rules failing to evaluate: {failing}"
