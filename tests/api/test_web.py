"""The web page: served with a strict policy, its script parses, and every API call it makes
names a route that exists."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from fastapi.testclient import TestClient
from starlette.routing import compile_path

from facespeech.api.routes.web import STATIC
from tests.security.test_isolation import api_routes


def _called_paths(script: str) -> set[str]:
    """Every '/v1/...' path in the script's string and template literals, with each
    `${...}` and query string cut off: what the page sends requests to."""
    literals = re.findall(r"[\"`](/v1/[^\"`?]*)", script)
    return {re.sub(r"\$\{[^}]*\}", "x", literal) for literal in literals}


def test_page_is_served_with_a_strict_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert '<script src="/ui/app.js"' in page.text
    script = client.get("/ui/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert client.get("/ui/style.css").status_code == 200


def test_static_files_do_not_reach_outside_their_folder(client: TestClient) -> None:
    for path in ("/ui/../app.py", "/ui/%2e%2e/app.py", "/ui/..%2fapp.py"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "create_app" not in response.text


def test_every_api_call_of_the_page_has_a_route(client: TestClient) -> None:
    called = _called_paths((STATIC / "app.js").read_text())
    assert {"/v1/datasets", "/v1/training-runs", "/v1/renders", "/v1/jobs", "/v1/models",
            "/v1/usage"} <= called
    templates = [compile_path(path)[0] for path, _ in api_routes(client.app.routes)]  # type: ignore[attr-defined]
    for path in called:
        assert any(template.match(path) for template in templates), f"no route for {path}"


def test_page_never_writes_server_data_as_html() -> None:
    script = (STATIC / "app.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", script)


def test_script_parses() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the script's syntax is not checked")
    result = subprocess.run([node, "--check", str(STATIC / "app.js")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
