"""Local simulators of the 4D EMR API, a QBO company and Intuit OAuth, served on loopback.

Used by `fourdqbo demo`, `fourdqbo sandbox serve`, the integration tests and the benchmarks.
`Sandbox` (in `server.py`) is the entry point.
"""

from fourdqbo.sandbox.server import QboLimits, RequestRecord, Sandbox, ServiceKnobs

__all__ = ["QboLimits", "RequestRecord", "Sandbox", "ServiceKnobs"]
