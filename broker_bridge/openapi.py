"""The bridge's OpenAPI document, served at ``GET /openapi.json`` (no key needed).

Assembled from groups of paths (``openapi_common.PathGroup``, one module per group:
``openapi_openai``, ``openapi_jobs``), the JSON Schemas of their pydantic models (generated, never
written by hand: ``openapi_models``), and the shared error responses, headers and bearer
scheme (``openapi_common``). It is made from the running bridge's settings, so the limits
it states (largest ``max_tokens`` and ``ttl``, prompt size, the model registry) are the ones
this bridge enforces. OpenAPI 3.2: a server-sent event stream is described per event
(``itemSchema``), which is how ``tests/integration/test_openapi_fuzz.py`` checks streams.

To add a group: a module ``openapi_<group>.py`` with ``group(settings) -> PathGroup``, and
its ``group`` in ``GROUPS`` below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker_bridge import openapi_jobs, openapi_openai
from broker_bridge.openapi_common import PathGroup, shared_components
from broker_bridge.openapi_models import ErrorBody
from fleetwire.process.settings import Settings

OPENAPI_VERSION = "3.2.0"
PATH = "/openapi.json"
GROUPS: tuple[Callable[[Settings], PathGroup], ...] = (openapi_openai.group, openapi_jobs.group)
REQUEST_MODEL_SUFFIX = "Request"


def _schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    """The models' JSON Schemas (2020-12, as OpenAPI 3.1+ takes them), by model name.
    Requests are generated as validation schemas, answers as serialization schemas."""

    def mode(model: type[BaseModel]) -> Literal["validation", "serialization"]:
        return "validation" if model.__name__.endswith(REQUEST_MODEL_SUFFIX) else "serialization"

    pairs = [(m, mode(m)) for m in models]
    _, generated = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = generated.get("$defs", {})
    return schemas


def document(settings: Settings) -> dict[str, Any]:
    """The whole document for a bridge with ``settings``."""
    groups = [make(settings) for make in GROUPS]
    paths: dict[str, Any] = {}
    models: list[type[BaseModel]] = [ErrorBody]
    for group in groups:
        clash = paths.keys() & group.paths.keys()
        if clash:
            raise ValueError(f"paths described twice: {sorted(clash)}")
        paths |= group.paths
        models += [m for m in group.models if m not in models]
    schemas = _schemas(models)
    for group in groups:
        if group.limits is not None:
            group.limits(schemas)
    paths[PATH] = {
        "get": {
            "tags": ["meta"],
            "operationId": "getOpenApiDocument",
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {
                    "description": "The OpenAPI document of this bridge's HTTP API.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "fleetwire bridge HTTP API",
            "version": "v1",
            "description": "The broker bridge's HTTP port: OpenAI-compatible chat completions, "
            "completions and models, and the 202 jobs API (jobs, their events, batches), "
            "through the same validation, tenant policy, admission and idempotency as gRPC "
            "Submit (docs/http.md). Errors are OpenAI's error JSON.",
        },
        "tags": [{"name": g.tag, "description": g.description} for g in groups]
        + [{"name": "meta", "description": "About the API itself."}],
        "paths": paths,
        "components": {"schemas": schemas, **shared_components()},
    }


def endpoint(settings: Settings) -> Callable[[Request], Any]:
    """The handler of ``GET /openapi.json``: the document, made once per app."""
    made = document(settings)

    async def serve(_request: Request) -> Response:
        return JSONResponse(made)

    return serve
