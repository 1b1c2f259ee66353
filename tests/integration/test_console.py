"""The operators' console in a real browser: Debian's Chromium, headless, driven by
Playwright, against the console running as its own process (``python -m console``) over
HTTPS, which calls a real scheduler's admin port; jobs go through a real bridge, RabbitMQ
and PostgreSQL to a scripted node that signs its results.

One walk through it as an operator would: a wrong key is refused; an admin's key logs in;
the overview refreshes by itself; a job this test submitted shows its signature verified
(checked by the console against the mesh's key for the node); a dead letter is replayed
behind a confirmation and its replacement appears; a pending node is approved; a form
without the session's CSRF token is refused. Screenshots are saved in the test's tmp dir
and in ``.cache/test-artifacts/console/``. Chromium missing is a failure, not a skip:
``make setup`` installs it (scripts/ensure-browser.sh)."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from nacl.signing import SigningKey
from playwright.async_api import Browser, Page, async_playwright, expect

from fleetwire.process.settings import Settings
from fleetwire.protocol.signing import key_id
from fleetwire.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    mesh_admin_service_pb2,
    mesh_admin_service_pb2_grpc,
)
from scheduler.server import SchedulerServer
from tests.conftest import ROOT, free_port
from tests.support.eventually import eventually, eventually_sync
from tests.support.handshake import handshake
from tests.support.mesh_admin import SendsOperatorKey, create_operator_key
from tests.support.scripted_node import ScriptedNode, running
from tests.support.tls import make_certificates

pytestmark = pytest.mark.timeout(180)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = ROOT / ".cache" / "test-artifacts" / "console"
Admin = mesh_admin_service_pb2_grpc.MeshAdminServiceStub
Jobs = job_service_pb2_grpc.JobServiceStub


@dataclass
class RunningConsole:
    url: str
    ca_file: Path
    process: subprocess.Popen[bytes]
    log: Path


def _answers(url: str, ca_file: Path) -> bool:
    """Whether the console answers its health check over HTTPS with a certificate that
    chains to the test CA (the browser below is told to accept it; this checks it)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with urllib.request.urlopen(f"{url}healthz", context=context, timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
async def console_scheduler(settings: Settings) -> AsyncIterator[SchedulerServer]:
    """A scheduler of this run's mesh that admits nodes only by approval."""
    group = settings.scheduler.model_copy(
        update={
            "port": 0,
            "admin_port": 0,
            "auto_register_nodes": False,
            "scheduler_id": f"console-{uuid.uuid4().hex[:6]}",
        }
    )
    server = SchedulerServer(settings.model_copy(update={"scheduler": group}))
    await server.start()
    yield server
    await server.stop(grace=1)


@pytest.fixture(scope="module")
def console(
    console_scheduler: SchedulerServer,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[RunningConsole]:
    """``python -m console`` over HTTPS (the test CA's certificate), calling the scheduler's
    admin port (plaintext: the in-process test mesh serves no TLS)."""
    certs = make_certificates(tmp_path_factory.mktemp("console-certs"))
    port = free_port()
    log = tmp_path_factory.mktemp("console-log") / "console.log"
    env = {
        **os.environ,
        "FLEETWIRE_TLS_INSECURE": "false",
        "FLEETWIRE_TLS_CERT_FILE": str(certs.server.cert),
        "FLEETWIRE_TLS_KEY_FILE": str(certs.server.key),
        "FLEETWIRE_CONSOLE_PORT": str(port),
        "FLEETWIRE_CONSOLE_ADMIN_ADDRESS": f"127.0.0.1:{console_scheduler.admin_port}",
        "FLEETWIRE_CONSOLE_ADMIN_INSECURE": "true",
        "FLEETWIRE_CONSOLE_REFRESH_INTERVAL": "1",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "console"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    running_console = RunningConsole(f"https://localhost:{port}/", certs.ca, process, log)
    try:
        eventually_sync(
            lambda: process.poll() is not None or _answers(running_console.url, certs.ca),
            within=20,
            what="the console answering over HTTPS",
        )
        assert process.poll() is None, log.read_text()
        yield running_console
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.returncode not in (0, -15):
            print(log.read_text())
        if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
            print(f"--- console log ---\n{log.read_text()}")


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium; its absence fails the test (``make setup`` installs it)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `make setup` installs Debian's chromium "
            "(scripts/ensure-browser.sh); the console's browser test needs it"
        )
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture
async def admin(console_scheduler: SchedulerServer, operator_key: str) -> AsyncIterator[Admin]:
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{console_scheduler.admin_port}", interceptors=[SendsOperatorKey(operator_key)]
    ) as channel:
        yield Admin(channel)


async def shot(page: Page, tmp_path: Path, name: str) -> None:
    """A full-page screenshot into the test's tmp dir and the stable artifacts dir."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(tmp_path / name), full_page=True)
    shutil.copy(tmp_path / name, ARTIFACTS / name)


async def wait_state(jobs: Jobs, job_id: str, states: set[int]) -> job_pb2.Job:
    async def reached() -> job_pb2.Job | None:
        reply = await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))
        return reply.job if reply.job.state in states else None

    return await eventually(reached, within=45, what=f"job {job_id} in {states}")


async def submit(jobs: Jobs, prompt: str, **spec_fields: object) -> str:
    spec = job_pb2.JobSpec(
        model="scripted",
        prompt=prompt,
        sampling=job_pb2.SamplingParams(max_tokens=3),
        **spec_fields,  # type: ignore[arg-type]
    )
    return str((await jobs.Submit(job_service_pb2.SubmitRequest(job=spec))).job.job_id)


async def test_an_operator_logs_in_verifies_a_job_replays_a_dead_letter_and_approves_a_node(
    console: RunningConsole,
    console_scheduler: SchedulerServer,
    browser: Browser,
    admin: Admin,
    jobs: Jobs,
    settings: Settings,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    key = await create_operator_key(
        settings.postgres.dsn.get_secret_value(), role="admin", name="console-operator"
    )
    # A node the operator registered out of band; its first attempts fail retryably, so the
    # first job goes through every retry stage into the dead letters.
    stages = len(settings.scheduler.retry_delays)
    worker = ScriptedNode(
        f"127.0.0.1:{console_scheduler.port}",
        "console-node",
        "scripted",
        lambda n: "fail-retryable" if n <= stages + 1 else "ok",
    )
    await admin.RegisterNode(
        mesh_admin_service_pb2.RegisterNodeRequest(
            node_id=worker.node_id,
            public_key=bytes(worker.key.verify_key),
            networks=[job_pb2.NETWORK_MAINNET, job_pb2.NETWORK_TESTNET],
        )
    )
    # A stranger asking to join: it proved its key, nobody admitted it yet.
    stranger = SigningKey.generate()
    stranger_id = f"console-newcomer-{uuid.uuid4().hex[:6]}"
    scheduler_address = f"127.0.0.1:{console_scheduler.port}"
    async with grpc.aio.insecure_channel(scheduler_address) as channel:
        assert "NODE_PENDING" in await handshake(channel, stranger_id, stranger)

    async with running(worker):
        dead_id = await submit(jobs, "this one fails every attempt")
        dead = await wait_state(jobs, dead_id, {job_pb2.JOB_STATE_DEAD_LETTERED})
        assert dead.attempts == stages + 1
        signed_id = await submit(jobs, "this one succeeds")
        signed = await wait_state(jobs, signed_id, {job_pb2.JOB_STATE_SUCCEEDED})
        assert signed.signature.node_id == "console-node"
        # Jobs for a pool no node serves wait in their queue (cancelled at the end).
        pool = job_pb2.Constraints(subcloud=f"console-{uuid.uuid4().hex[:6]}")
        waiting = [
            await submit(jobs, "waits", constraints=pool, priority=priority)
            for priority in (job_pb2.PRIORITY_CLASS_URGENT, job_pb2.PRIORITY_CLASS_BULK)
        ]

        context = await browser.new_context(
            ignore_https_errors=True, viewport={"width": 1440, "height": 900}
        )
        page = await context.new_page()
        try:
            # Not logged in: every page leads to the login form. A wrong key is refused.
            await page.goto(f"{console.url}overview")
            await expect(page).to_have_url(f"{console.url}login?next=%2Foverview")
            await page.fill("#operator_key", "fwo_000000000000_" + "A" * 43)
            await page.click("button[type=submit]")
            await expect(page.locator("#login-message")).to_contain_text("refused by the mesh")
            await shot(page, tmp_path, "login-refused.png")

            # An admin's key: in, on the overview, which refreshes itself (server-sent
            # events) while the page stays open.
            await page.fill("#operator_key", key)
            await page.click("button[type=submit]")
            await expect(page).to_have_url(f"{console.url}overview")
            await expect(page.locator("#operator")).to_contain_text("console-operator")
            await expect(page.locator("#live-status")).to_have_text("live", timeout=10_000)
            await expect(page.locator("#live")).to_contain_text("nodes connected")
            await expect(page.locator("#live")).to_contain_text("console-node")
            await expect(page.locator("#live svg.chart rect.succeeded").first).to_be_attached()
            await expect(page.locator("#queues")).to_contain_text(pool.subcloud)
            await shot(page, tmp_path, "overview.png")

            # The job this test submitted, found by id: its trail, signature verified.
            await page.goto(f"{console.url}jobs")
            await page.fill("#find-job input[name=job_id]", signed_id)
            await page.click("#find-job button")
            await expect(page).to_have_url(f"{console.url}jobs/{signed_id}")
            verdict = page.locator("#signature-verdict")
            await expect(verdict).to_have_attribute("data-check", "verified")
            await expect(verdict).to_contain_text("Signature verified")
            await expect(page.locator("#key-id")).to_have_text(key_id(bytes(worker.key.verify_key)))
            await expect(page.locator("#attempts")).to_contain_text("SUCCEEDED")
            await shot(page, tmp_path, "job-trail.png")
            # ...and in the list of its tenant's jobs.
            await page.goto(f"{console.url}jobs?tenant=anonymous")
            await expect(page.locator(f"#jobs tr[data-job='{signed_id}']")).to_contain_text(
                "signed"
            )

            # The dead letter, replayed behind a confirmation; the replacement appears.
            await page.goto(f"{console.url}dead-letters")
            row = page.locator(f"#dead-letters tr[data-job='{dead_id}']")
            await expect(row).to_contain_text(dead.error.reason)
            await row.locator("a.replay").click()
            await expect(page.locator("h1")).to_contain_text(f"Replay dead letter {dead_id}?")
            await shot(page, tmp_path, "replay-confirm.png")
            await page.click("#confirm")
            await expect(page.locator(".flash.ok")).to_contain_text(f"replayed {dead_id} as")
            replacement = page.url.rsplit("/", 1)[-1]
            assert replacement != dead_id
            trail = await admin.JobTrail(mesh_admin_service_pb2.JobTrailRequest(job_id=dead_id))
            assert trail.replayed_as == replacement
            await wait_state(jobs, replacement, {job_pb2.JOB_STATE_SUCCEEDED})
            await page.reload()
            await expect(page.locator("#signature-verdict")).to_have_attribute(
                "data-check", "verified"
            )
            await page.goto(f"{console.url}jobs/{dead_id}")
            await expect(page.locator("#replayed-as")).to_have_text(replacement)

            # The stranger, approved from the nodes page; its next handshake is welcome.
            await page.goto(f"{console.url}nodes")
            pending = page.locator(f"#pending tr[data-node='{stranger_id}']")
            await expect(pending).to_contain_text(key_id(bytes(stranger.verify_key)))
            await pending.locator("button.approve").click()
            await expect(page.locator(".flash.ok")).to_contain_text(f"approved node {stranger_id}")
            await expect(page.locator(f"#registered tr[data-node='{stranger_id}']")).to_be_visible()
            await shot(page, tmp_path, "nodes.png")
            async with grpc.aio.insecure_channel(scheduler_address) as channel:
                assert await handshake(channel, stranger_id, stranger) == "welcome"

            # The audit log names the operator for both actions.
            await page.goto(f"{console.url}audit")
            audit = page.locator("#audit")
            await expect(audit).to_contain_text("node.approve")
            await expect(audit).to_contain_text("ReplayDeadLetter")
            await expect(audit).to_contain_text("operator:console-operator")
            await page.goto(f"{console.url}tenants")
            await expect(page.locator("#tenants tr[data-tenant='anonymous']")).to_be_visible()
            await shot(page, tmp_path, "tenants.png")

            # A form post without the session's CSRF token is refused, cookie or not.
            forged = await page.request.post(
                f"{console.url}nodes/approve",
                form={"node_id": stranger_id, "key_id": "0" * 16},
                headers={"origin": console.url.rstrip("/")},
            )
            assert forged.status == 403

            # Logging out ends the session: the pages lead to the login form again.
            await page.click("header .who button")
            await page.goto(f"{console.url}nodes")
            await expect(page).to_have_url(f"{console.url}login?next=%2Fnodes")
        finally:
            await context.close()
            for job_id in waiting:
                await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job_id))
    print(f"console browser walk: {time.monotonic() - started:.1f} s; screenshots in {ARTIFACTS}")
