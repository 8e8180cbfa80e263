"""Plain-httpx access to the sandbox for the simulator tests (not the project's clients)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fourdqbo import jsonio
from fourdqbo.sandbox import Sandbox
from fourdqbo.sandbox.server import FOURD_CLIENT_ID, FOURD_CLIENT_SECRET, FOURD_SUBSCRIPTION_KEY

FOURD_HEADERS = {
    "client-id": FOURD_CLIENT_ID,
    "client-secret": FOURD_CLIENT_SECRET,
    "subscription-key": FOURD_SUBSCRIPTION_KEY,
    "Accept": "application/json",
}


class QboCaller:
    """Speaks to the simulated QBO the way API-NOTES.md says a client must."""

    def __init__(self, sandbox: Sandbox, token: str) -> None:
        self.sandbox = sandbox
        self.token = token
        self.base = f"{sandbox.qbo_api_base_url}/v3/company/{sandbox.realm_id}"
        self.http = httpx.Client(timeout=10)

    def headers(self, **extra: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/json",
            "Content-Type": "application/json",
            **extra,
        }

    def get(self, path: str, **params: Any) -> httpx.Response:
        params.setdefault("minorversion", "75")
        return self.http.get(f"{self.base}/{path}", params=params, headers=self.headers())

    def query(self, statement: str) -> httpx.Response:
        return self.get("query", query=statement)

    def rows(self, statement: str, entity: str | None = None) -> list[dict[str, Any]]:
        response = self.query(statement)
        assert response.status_code == 200, response.text
        answer = jsonio.loads(response.content)["QueryResponse"]
        name = entity or statement.split()[3]
        return list(answer.get(name, []))

    def post(self, path: str, body: Any, **params: Any) -> httpx.Response:
        params.setdefault("minorversion", "75")
        return self.http.post(
            f"{self.base}/{path}",
            params=params,
            content=jsonio.dumps(body),
            headers=self.headers(),
        )

    def batch(self, items: list[dict[str, Any]], **params: Any) -> httpx.Response:
        return self.post("batch", {"BatchItemRequest": items}, **params)

    @staticmethod
    def json(response: httpx.Response) -> Any:
        return jsonio.loads(response.content)


@pytest.fixture
def qbo(sandbox: Sandbox) -> Iterator[QboCaller]:
    caller = QboCaller(sandbox, sandbox.oauth.mint()["access_token"])
    yield caller
    caller.http.close()


@pytest.fixture
def fourd(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.fourd_base_url, headers=FOURD_HEADERS, timeout=10) as c:
        yield c


def fault_codes(body: Any) -> list[str]:
    return [error["code"] for error in body["Fault"]["Error"]]
