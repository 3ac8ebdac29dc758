"""schemathesis against the OpenAPI schema, in process, with a real tenant: no server error
and no response that contradicts the schema, over a bounded number of examples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.conftest import clear_cached_settings

AUTH: dict[str, str] = {}
# CI runs the same examples every time (a landing must not depend on the draw);
# FACESPEECH_FUZZ_EXAMPLES=N draws N fresh ones per operation for a deeper search.
FRESH_EXAMPLES = int(os.environ.get("FACESPEECH_FUZZ_EXAMPLES", "0"))


@pytest.fixture
def api_schema(embedded_env: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from facespeech.api.app import create_app
    from facespeech.db.migrate import upgrade_head
    from tests.conftest import new_key

    monkeypatch.setenv("FACESPEECH_TENANT_RATE_PER_S", "0")
    clear_cached_settings()
    upgrade_head()
    AUTH["Authorization"] = f"Bearer {new_key('fuzz')}"
    app: FastAPI = create_app()
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_api_conforms_to_its_schema(api_schema) -> None:  # type: ignore[no-untyped-def]
    """Each operation in turn (schemathesis' pytest plugin lags our pytest, so no plugin)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:

        @given(operation.as_strategy())
        @settings(
            max_examples=FRESH_EXAMPLES or 25, derandomize=not FRESH_EXAMPLES, deadline=None,
            suppress_health_check=list(HealthCheck), database=None,
        )
        def check(case) -> None:  # type: ignore[no-untyped-def]
            # Random bytes are schema-valid uploads but not media: a 422 for them is right.
            case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])

        check()
