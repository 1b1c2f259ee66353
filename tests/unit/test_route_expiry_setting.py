"""FLEETWIRE_ROUTE_QUEUE_EXPIRES is checked when the settings load: an expiring route queue
deletes what it holds, so it must outlive the longest job TTL (FLEETWIRE_BRIDGE_MAX_TTL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from fleetwire.messaging.topology import ROUTE_EXPIRY_MARGIN, Topology
from fleetwire.process.settings import BridgeSettings, MeshSettings, Settings


def settings(expires: timedelta, max_ttl: timedelta = timedelta(hours=24)) -> Settings:
    return Settings(
        mesh=MeshSettings(route_queue_expires=expires), bridge=BridgeSettings(max_ttl=max_ttl)
    )


def test_the_default_outlives_the_longest_job() -> None:
    default = MeshSettings.model_fields["route_queue_expires"].default
    max_ttl = BridgeSettings.model_fields["max_ttl"].default
    assert default >= max_ttl + ROUTE_EXPIRY_MARGIN
    assert Topology("ns").route_queue_expires == default, "the same for every process"
    assert Topology("ns").route_arguments()["x-expires"] == default.total_seconds() * 1000


def test_an_expiry_shorter_than_the_longest_job_ttl_and_its_margin_is_refused() -> None:
    assert settings(timedelta(hours=25)).mesh.route_queue_expires == timedelta(hours=25)
    with pytest.raises(ValidationError, match="FLEETWIRE_ROUTE_QUEUE_EXPIRES"):
        settings(timedelta(hours=24, minutes=59))
    with pytest.raises(ValidationError, match="FLEETWIRE_BRIDGE_MAX_TTL"):
        settings(timedelta(hours=48), max_ttl=timedelta(hours=72))


def test_zero_leaves_the_expiry_to_a_policy() -> None:
    assert settings(timedelta(0)).mesh.route_queue_expires == timedelta(0)
    assert "x-expires" not in Topology("ns", route_queue_expires=timedelta(0)).route_arguments()
