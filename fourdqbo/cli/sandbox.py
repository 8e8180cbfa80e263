"""`fourdqbo sandbox serve`: the local 4D + QBO + Intuit OAuth simulators, for trying things."""

from __future__ import annotations

import math
import shlex
import threading
from pathlib import Path

import typer

from fourdqbo.cli.output import info

app = typer.Typer(help="Local simulators of 4D EMR, QBO and Intuit OAuth.", no_args_is_help=True)


@app.command("serve")
def serve(
    port: int = typer.Option(8800, "--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any)."),
    seed: int = typer.Option(1, "--seed", help="Seed of the generated practice and company."),
    quotes: int = typer.Option(40, "--quotes", min=1, max=100_000, help="How many 4D quotes."),
    fault_rate: float = typer.Option(
        0.0, "--fault-rate", min=0.0, max=1.0, help="Share of 4D/QBO requests answered by a fault."
    ),
    latency_ms: float = typer.Option(0.0, "--latency-ms", min=0.0, help="Added to each answer."),
    data_dir: Path = typer.Option(
        Path("data/sandbox"), "--data-dir", help="Where the minted token file is written."
    ),
) -> None:
    """Serve the sandbox on loopback and print settings to point fourdqbo at it.

    Paste the printed `export` lines into another shell (or a .env), then use any
    command against the sandbox, e.g. `fourdqbo sync run --since 2020-01-01`.
    Stop with Ctrl-C.

    Example: fourdqbo sandbox serve --port 8800 --quotes 200 --fault-rate 0.05
    """
    from fourdqbo.errors import ConfigError
    from fourdqbo.sandbox.server import Sandbox

    # click's FloatRange lets NaN through (every comparison with it is false), and an
    # infinite latency would hang every caller.
    for flag, number in (("--fault-rate", fault_rate), ("--latency-ms", latency_ms)):
        if not math.isfinite(number):
            raise ConfigError(f"{flag}: expected a finite number, not {number}")
    try:
        sandbox = Sandbox(
            seed=seed, quotes=quotes, port=port, fault_rate=fault_rate, latency_ms=latency_ms
        )
        sandbox.start()
    except OSError as exc:  # the port is taken (or not ours to use): a bad --port
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"--port: cannot listen on 127.0.0.1:{port} ({reason})") from None
    try:
        try:
            env = sandbox.env(data_dir.resolve())
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(
                f"--data-dir: cannot write the token file under {data_dir} ({reason})"
            ) from None
        info(f"sandbox serving at {sandbox.url} (realm {sandbox.realm_id})")
        info(f"  4D EMR   {sandbox.fourd_base_url}")
        info(f"  QBO      {sandbox.qbo_api_base_url}")
        info(f"  OAuth    {sandbox.discovery_url}")
        info("settings for fourdqbo (a token is minted into QBO_TOKEN_FILE; Ctrl-C to stop):")
        for name, value in env.items():
            print(f"export {name}={shlex.quote(value)}", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        info("sandbox stopped")
    finally:
        sandbox.stop()
