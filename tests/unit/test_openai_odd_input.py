"""Odd OpenAI bodies the schemathesis fuzzing of the HTTP API found answered with a 500
(an exception in the mapping) or silently taken as absent: each is an InvalidArgument
naming the field (a 400), through ``openai_requests.spec_of``."""

from __future__ import annotations

from typing import Any

import pytest

from broker_bridge.openai_requests import Endpoint, spec_of
from fleetwire.domain.errors import InvalidArgument

BODY = {"model": "m", "prompt": "p"}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        # Out of the protobuf field's range: was ValueError from the runtime.
        ({"seed": 2**64}, "seed"),
        ({"max_tokens": 2**40}, "max_tokens"),
        ({"constraints": {"min_gpu_memory_mib": 2**70}}, "constraints.min_gpu_memory_mib"),
        # Too large for a float or a timedelta: was OverflowError.
        ({"temperature": 10**400}, "temperature"),
        ({"ttl": 1e300}, "ttl"),
        ({"ttl": 10**400}, "ttl"),
        # Not hashable: was TypeError looking it up in the enum table.
        ({"network": []}, "network"),
        ({"priority": {}}, "priority"),
        # The wrong type, taken as absent before.
        ({"constraints": []}, "constraints"),
        ({"stream": "yes"}, "stream"),
        ({"stream_options": "x"}, "stream_options"),
        ({"stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
        ({"user": 5}, "user"),
    ],
)
def test_an_odd_value_is_refused_naming_the_field(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        spec_of({**BODY, **extra}, Endpoint.COMPLETION, idempotency_key=None)
    assert [v.field for v in caught.value.violations] == [field]


def test_an_integral_float_is_an_integer() -> None:
    """JSON has one kind of number, and the document says ``integer``: 5.0 is 5."""
    spec = spec_of(
        {**BODY, "max_tokens": 5.0, "seed": 7.0}, Endpoint.COMPLETION, idempotency_key=None
    )
    assert spec.sampling.max_tokens == 5
    assert spec.sampling.seed == 7


def test_max_tokens_below_one_is_refused_even_when_max_completion_tokens_wins() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(InvalidArgument) as caught:
        spec_of(
            {**body, "max_tokens": 0, "max_completion_tokens": 4},
            Endpoint.CHAT,
            idempotency_key=None,
        )
    assert [v.field for v in caught.value.violations] == ["max_tokens"]
