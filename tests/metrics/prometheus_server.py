"""A real Prometheus for tests: points written as OpenMetrics, backfilled into a fresh data
directory with ``promtool``, served by ``prometheus`` on a free loopback port (optionally
behind basic auth), and stopped afterwards.

    text = to_openmetrics([("error_rate", {"service": "checkout"}, [(t_us, 0.01), ...])])
    with running_prometheus(text, tmp_path) as server:
        config = server.config({"error_rate": 'error_rate{service="$service"}'})
"""

from __future__ import annotations

import base64
import math
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from trailmap.metrics.prometheus import PrometheusConfig

__all__ = [
    "BASIC_AUTH_PASSWORD",
    "BASIC_AUTH_USER",
    "PrometheusServer",
    "basic_auth_header",
    "binaries_missing",
    "running_prometheus",
    "to_openmetrics",
]

# A series: metric name, labels, and points (microseconds since the epoch, value).
SeriesPoints = tuple[str, Mapping[str, str], Sequence[tuple[int, float]]]

BASIC_AUTH_USER = "trailmap"
BASIC_AUTH_PASSWORD = "trailmap-test-password"
# bcrypt of BASIC_AUTH_PASSWORD at cost 4 (the lowest), so each request stays cheap.
_BASIC_AUTH_HASH = "$2b$04$NHY7sGbJteyLKH0O5h5y9eQSocobmdaGUbFUK0mssMh.RsJ1MUvwu"

_READY_TIMEOUT_SECONDS = 30.0
_STOP_TIMEOUT_SECONDS = 10.0


def binaries_missing() -> str | None:
    """None when ``prometheus`` and ``promtool`` are on the PATH; else what is missing."""
    missing = [name for name in ("prometheus", "promtool") if shutil.which(name) is None]
    if not missing:
        return None
    return f"{' and '.join(missing)} not found (apt-get install prometheus)"


def basic_auth_header(user: str, password: str) -> tuple[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return ("Authorization", f"Basic {token}")


def to_openmetrics(series: Sequence[SeriesPoints]) -> str:
    """OpenMetrics text of gauges, one family per metric name (in first-seen order), each
    series' points in time order; timestamps are seconds (Prometheus keeps milliseconds)."""
    families: dict[str, list[tuple[Mapping[str, str], Sequence[tuple[int, float]]]]] = {}
    for name, labels, points in series:
        families.setdefault(name, []).append((labels, points))
    lines: list[str] = []
    for name, members in families.items():
        lines.append(f"# TYPE {name} gauge")
        for labels, points in members:
            selector = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
            metric = f"{name}{{{selector}}}" if selector else name
            lines.extend(
                f"{metric} {_number(value)} {_timestamp(time_us)}"
                for time_us, value in sorted(points)
            )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _timestamp(time_us: int) -> str:
    whole, fraction = divmod(time_us, 1_000_000)
    return f"{whole}.{fraction:06d}"


@dataclass(frozen=True)
class PrometheusServer:
    """A running Prometheus: where it is and, behind basic auth, the header that opens it."""

    base_url: str
    auth_header: tuple[str, str] | None

    def config(
        self, queries: Mapping[str, str], *, timeout_seconds: float = 10.0
    ) -> PrometheusConfig:
        return PrometheusConfig(
            base_url=self.base_url,
            auth_header=self.auth_header,
            queries=dict(queries),
            timeout_seconds=timeout_seconds,
        )


@contextmanager
def running_prometheus(
    openmetrics: str,
    workdir: Path,
    *,
    basic_auth: bool = False,
    lookback_delta: str | None = None,
) -> Iterator[PrometheusServer]:
    """Prometheus serving the OpenMetrics text's points from ``workdir``.

    ``lookback_delta`` is Prometheus's ``--query.lookback-delta`` (default 5m): how long a
    gauge's last point is repeated at later evaluation steps. Less than the step (e.g.
    "30s") makes a range query give back exactly the points written, when they lie on
    multiples of the step."""
    missing = binaries_missing()
    if missing is not None:
        raise RuntimeError(missing)
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "points.om"
    source.write_text(openmetrics, encoding="utf-8")
    data = workdir / "data"
    backfill = subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if backfill.returncode != 0:
        raise RuntimeError(f"promtool could not backfill:\n{backfill.stdout}{backfill.stderr}")
    config_file = workdir / "prometheus.yml"
    config_file.write_text("global: {}\n", encoding="utf-8")  # nothing to scrape
    port = _free_port()
    command = [
        "prometheus",
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        # Backfilled points may be old; the default retention (15d) would delete them.
        "--storage.tsdb.retention.time=36500d",
    ]
    if lookback_delta is not None:
        command.append(f"--query.lookback-delta={lookback_delta}")
    auth_header = None
    if basic_auth:
        web_config = workdir / "web.yml"
        web_config.write_text(
            f"basic_auth_users:\n  {BASIC_AUTH_USER}: {_BASIC_AUTH_HASH}\n", encoding="utf-8"
        )
        command.append(f"--web.config.file={web_config}")
        auth_header = basic_auth_header(BASIC_AUTH_USER, BASIC_AUTH_PASSWORD)
    server = PrometheusServer(base_url=f"http://127.0.0.1:{port}", auth_header=auth_header)
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            _wait_until_ready(server, process, log_path)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_ready(
    server: PrometheusServer, process: subprocess.Popen[bytes], log_path: Path
) -> None:
    headers = dict([server.auth_header]) if server.auth_header else {}
    deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited ({process.returncode}):\n{_tail(log_path)}")
            try:
                if client.get(f"{server.base_url}/-/ready", headers=headers).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.05)  # polling with a deadline: Prometheus offers nothing to wait on
    raise RuntimeError(
        f"prometheus was not ready within {_READY_TIMEOUT_SECONDS:g}s:\n{_tail(log_path)}"
    )


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
