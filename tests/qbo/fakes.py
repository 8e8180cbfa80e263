"""Fakes and answer builders the QBO client tests share (fixtures: tests/qbo/conftest.py)."""

from __future__ import annotations

from typing import Any

import httpx

from fourdqbo import jsonio

BASE = "https://qbo.test"
REALM = "9130"
COMPANY = f"/v3/company/{REALM}"


class FakeTokens:
    """A TokenSource: hands out tok-1, and tok-2, tok-3… after each forced refresh."""

    def __init__(self, realm: str = REALM, first: str = "tok-1") -> None:
        self.realm_id = realm
        self.current = first
        self.rejected: list[str] = []

    def access_token(self) -> str:
        return self.current

    def force_refresh(self, rejected: str) -> str:
        self.rejected.append(rejected)
        self.current = f"tok-{len(self.rejected) + 1}"
        return self.current


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def answer(document: Any, status: int = 200, tid: str = "tid-1", **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        content=jsonio.dumps(document).encode(),
        headers={"intuit_tid": tid, "Content-Type": "application/json", **headers},
    )


def fault(code: str, message: str = "Boom", detail: str = "", element: str = "") -> dict:
    return {
        "Fault": {
            "Error": [{"Message": message, "Detail": detail, "code": code, "element": element}],
            "type": "ValidationFault",
        },
        "time": "2025-03-05T10:21:33.000-08:00",
    }


def invoice_row(doc: str, n: int = 1) -> dict[str, Any]:
    return {
        "Id": str(n),
        "SyncToken": "0",
        "DocNumber": doc,
        "TotalAmt": 10,
        "Balance": 10,
        "MetaData": {"LastUpdatedTime": "2025-03-05T10:21:33-08:00"},
    }


def statement_of(request: httpx.Request) -> str:
    return request.url.params["query"]
