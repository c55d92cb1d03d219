"""Schemathesis against the server's /openapi.json, on loopback: cases generated from the schema
of every route (a bounded number each) never get a 5xx, and every answer fits the schema (status
codes, content types, bodies)."""

from __future__ import annotations

import pytest

from lmatlas.serve import ServerConfig
from lmatlas.serve.background import running

from .helpers_serve import build_all
from .reference import require

schemathesis = require("schemathesis")
hypothesis = require("hypothesis")
KEY = "schema-key"
positive_data_acceptance = require("schemathesis.specs.openapi.checks").positive_data_acceptance


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, one_thread):
    folders = build_all(tmp_path_factory.mktemp("schema"))
    config = ServerConfig(model=str(folders["chat"]), api_key=KEY, index=str(folders["index"]), max_tokens=8,
                          task_models={"fill-mask": str(folders["mlm"])})
    with running(config) as served:
        yield schemathesis.openapi.from_url(served.url + "/openapi.json", headers={"Authorization": f"Bearer {KEY}"})


def test_generated_requests_get_no_5xx_and_fit_the_schema(api_schema):
    # Each operation's cases by hand rather than through schemathesis' pytest plugin, which does
    # not work with this pytest.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(max_examples=12, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        def check(case):
            # A request the schema allows may still be refused with a 400 for what no schema says
            # (max_tokens past this prompt's room): the acceptance of valid data is not checked.
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                                   excluded_checks=[positive_data_acceptance])

        check()
