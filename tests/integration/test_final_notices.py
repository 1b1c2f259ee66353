"""broker_bridge.final_notices.FinalNotices on the real Redis: a terminal state event wakes
the job's waiters (also one that starts waiting after the notice), a live state does not,
and stopping releases every waiter."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from broker_bridge.final_notices import FinalNotices
from fleetwire.domain.states import JobState
from fleetwire.messaging.events import JobEvents, connect_redis
from fleetwire.process.settings import Settings

WAIT_S = 30.0  # generous: a notice normally arrives within milliseconds


@pytest.fixture
async def events_and_notices(
    events: JobEvents, settings: Settings
) -> AsyncIterator[tuple[JobEvents, FinalNotices]]:
    redis = connect_redis(settings.redis.url.get_secret_value())
    notices = FinalNotices(redis, events.final_channel)
    await notices.start()
    yield events, notices
    await notices.stop()
    await redis.aclose()


async def test_terminal_state_wakes_every_waiter_of_the_job(
    events_and_notices: tuple[JobEvents, FinalNotices],
) -> None:
    events, notices = events_and_notices
    job_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    waiters = [asyncio.create_task(notices.wait(job_id, WAIT_S)) for _ in range(3)]
    bystander = asyncio.create_task(notices.wait(other, WAIT_S))
    await asyncio.sleep(0)  # the waiters are registered
    await events.publish_state(job_id, JobState.SUCCEEDED)
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert not bystander.done()
    bystander.cancel()


async def test_a_notice_that_came_first_is_remembered(
    events_and_notices: tuple[JobEvents, FinalNotices],
) -> None:
    events, notices = events_and_notices
    job_id = str(uuid.uuid4())
    await events.publish_state(job_id, JobState.FAILED)
    # Whether the listener has it yet or not, the answer is the same: woken.
    assert await notices.wait(job_id, WAIT_S)
    assert await notices.wait(job_id, 0.01)  # now surely from memory


async def test_live_states_do_not_wake_and_the_wait_times_out(
    events_and_notices: tuple[JobEvents, FinalNotices],
) -> None:
    events, notices = events_and_notices
    job_id = str(uuid.uuid4())
    waiter = asyncio.create_task(notices.wait(job_id, 1.0))
    for state in (JobState.QUEUED, JobState.DISPATCHED, JobState.RUNNING, JobState.RETRYING):
        await events.publish_state(job_id, state)
    assert await waiter is False


async def test_stop_releases_waiters(settings: Settings) -> None:
    redis = connect_redis(settings.redis.url.get_secret_value())
    notices = FinalNotices(redis, f"{settings.mesh.namespace}:final")
    await notices.start()
    waiter = asyncio.create_task(notices.wait(str(uuid.uuid4()), WAIT_S))
    await asyncio.sleep(0)  # the waiter is registered
    await notices.stop()
    await redis.aclose()
    assert await asyncio.wait_for(waiter, WAIT_S) is True
