"""schemathesis against the OpenAPI description on a live server: no 5xx, and every
answer matches the documented schema (bounded number of examples per operation).

The schema is the one `/api/openapi.json` serves (tests/handlers/test_openapi.py checks
they are the same), built in-process so that collection needs no server.
"""
from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from core.config import Settings
from core.grading import PracticeBank
from handlers.openapi import build_spec
from tests.procs import http, start_server


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schemathesis")
    server = start_server(tmp, DATA_DIR=str(tmp / "data"), RATE_LIMIT_PER_MINUTE="0", LOG_LEVEL="WARNING")
    yield server
    server.stop()


# The live server's bank and settings are the bundled bank and the defaults.
SPEC = build_spec(PracticeBank.load(), Settings())
schema = schemathesis.openapi.from_dict(SPEC)


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_description(case, live_server):
    case.call_and_validate(base_url=live_server.url, timeout=30)


def test_served_description_is_the_tested_one(live_server):
    status, _, body = http("GET", live_server.url + "/api/openapi.json")
    assert status == 200 and json.loads(body) == json.loads(json.dumps(SPEC))
