"""The console at /docs works offline: its page references only assets the gateway serves itself;
the shell agent example talks to the gateway's default port. (`/` is the dashboard: test_dashboard.)"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from projections.gateway.app import create_app
from projections.gateway.auth import Auth, parse_env
from projections.gateway.deps import Runtime

ROOT = Path(__file__).resolve().parents[2]


def app():
    runtime = Runtime(live=None, log=None, auth=Auth(parse_env("adm-tok:admin")))  # type: ignore[arg-type]
    return create_app(runtime=runtime, routers=())


async def get(path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app()), base_url="http://gw") as client:
        return await client.get(path)


async def test_docs_reference_only_local_assets_and_they_are_served() -> None:
    page = await get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
    assert urls, page.text
    remote = [u for u in urls if "://" in u or u.startswith("//")]
    assert remote == [], f"/docs loads {remote} from elsewhere: blank offline"
    assets = [u for u in urls if u.startswith("/docs/assets/")]
    assert {Path(u).name for u in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for url in assets:
        served = await get(url)
        assert served.status_code == 200 and len(served.content) > 1000, url
    assert "/openapi.json" in urls


def test_shell_agent_defaults_to_the_gateway_port() -> None:
    script = (ROOT / "examples" / "http_agent.sh").read_text()
    assert "TASKFOLD_URL:-http://127.0.0.1:8080}" in script
    assert ":8000" not in script
