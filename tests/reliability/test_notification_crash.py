"""`kill -9` of the server while it sends notifications: nothing is lost, and nothing reaches a
receiver twice under two different keys. Repeats under the same key are allowed (the lease of a
killed node runs out, and its rows are sent again with the key they had): each receiver's API
takes that key to tell a repeat (PagerDuty's dedup_key, Opsgenie's alias, the webhook's
X-Trailmap-Delivery), so the receiver tells one notification per key. On SQLite and on
PostgreSQL; the receivers answer slowly so that sends are in flight when the kill comes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.notifications.receivers import HttpReceiver
from tests.server import free_port, org_with_key, stop, wait_until_ready

_EVENTS = 120
_KILL_AFTER = 40  # requests the receivers took before the kill
_DEADLINE_S = 60.0
_SECRET_KEY = "the notification crash test key of 32 characters or more"


@contextmanager
def _serving(database_url: str, log_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    environment = {
        **os.environ,
        "TRAILMAP_RETENTION_PURGE_INTERVAL_SECONDS": "0",
        "TRAILMAP_KUBERNETES_POLL_SECONDS": "0",
        "TRAILMAP_LOG_LEVEL": "warning",
        "TRAILMAP_SECRET_KEY": _SECRET_KEY,
        "TRAILMAP_OUTBOUND_ALLOWED_NETWORKS": "public,127.0.0.0/8",
        "TRAILMAP_NOTIFICATION_POLL_SECONDS": "0.05",
        # A killed node's claims run out soon, so the restarted one sends them again soon.
        "TRAILMAP_NOTIFICATION_LEASE_SECONDS": "3",
        "TRAILMAP_NOTIFICATION_TIMEOUT_SECONDS": "2",
        "TRAILMAP_NOTIFICATION_RETRY_BASE_SECONDS": "0.1",
        "PYTHONUNBUFFERED": "1",
    }
    environment.pop("TRAILMAP_DATABASE_URL", None)
    command = [
        sys.executable,
        "-m",
        "trailmap.cli.main",
        "--database",
        database_url,
        "serve",
        "--port",
        str(port),
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(process, url, log_path)
            yield process, url
        finally:
            stop(process)


def _taken(receivers: list[HttpReceiver]) -> int:
    return sum(len(r.received) for r in receivers)


def test_a_server_killed_while_sending_loses_no_notification_and_repeats_none_under_a_new_key(
    database_url: str, tmp_path: Path
) -> None:
    key = org_with_key(database_url, "crash-notify", scope="admin")
    auth = {"Authorization": f"Bearer {key}"}
    receivers = [
        HttpReceiver("pagerduty", delay_seconds=0.05).start(),
        HttpReceiver("opsgenie", secret="genie-crash", delay_seconds=0.05).start(),
        HttpReceiver("webhook", secret="whsec-crash-0123456789", delay_seconds=0.05).start(),
    ]
    settings = [
        {"url": receivers[0].url, "routing_key": "R0UT1NGKEYcrash456789abcdefghijkl"},
        {"url": receivers[1].url, "api_key": "genie-crash"},
        {"url": receivers[2].url, "secret": "whsec-crash-0123456789"},
    ]
    log_path = tmp_path / "server.log"
    try:
        with (
            _serving(database_url, log_path) as (process, url),
            httpx.Client(base_url=url, headers=auth, timeout=30) as http,
        ):
            channel_ids = []
            for receiver, given in zip(receivers, settings, strict=True):
                made = http.post(
                    "/api/v1/notifications/channels",
                    json={"kind": receiver.kind, "name": receiver.kind, "settings": given},
                )
                assert made.status_code == 201, made.text
                channel_ids.append(made.json()["data"]["id"])
            rule = http.post(
                "/api/v1/notifications/rules", json={"name": "all", "channel_ids": channel_ids}
            )
            assert rule.status_code == 201, rule.text
            stored: list[str] = []
            for start in range(0, _EVENTS, 20):
                batch = [
                    {
                        "specversion": "1.0",
                        "id": f"crash-{n}",
                        "type": "deployment",
                        "source": "//crash.example/notify",
                        "subject": "production",
                        "time": "NOW",
                    }
                    for n in range(start, start + 20)
                ]
                answer = http.post("/api/v1/events", json=batch)
                assert answer.status_code == 201, answer.text
                stored += [a["id"] for a in answer.json()["data"]["accepted"]]
            deadline = time.monotonic() + _DEADLINE_S
            while _taken(receivers) < _KILL_AFTER:
                assert time.monotonic() < deadline, "no notification reached the receivers"
                time.sleep(0.01)  # waiting for sends to be under way, bounded by the deadline
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        taken_before_restart = _taken(receivers)
        assert taken_before_restart < 3 * _EVENTS, "the kill came after every send"

        with (
            _serving(database_url, log_path) as (_process, url),
            httpx.Client(base_url=url, headers=auth, timeout=30) as http,
        ):
            deadline = time.monotonic() + _DEADLINE_S
            while True:
                keys = [r.keys() for r in receivers]
                if all(len(k) >= _EVENTS for k in keys):
                    break
                assert time.monotonic() < deadline, (
                    [len(k) for k in keys],
                    log_path.read_text(errors="replace")[-3000:],
                )
                time.sleep(0.05)  # waiting for the restarted node's sends, bounded
            failed = http.get(
                "/api/v1/notifications/deliveries", params={"status": "failed", "limit": 500}
            ).json()["data"]["deliveries"]
    finally:
        for receiver in receivers:
            receiver.stop()

    assert failed == []
    repeats = 0
    for receiver in receivers:
        assert receiver.problems == []
        arrived = receiver.keys()
        # One key per (channel, event): every stored event told once, under one key.
        assert len(arrived) == _EVENTS
        told: dict[str, str] = {}
        for request in receiver.received:
            body = request.json()
            event_id = (
                body["payload"]["custom_details"]["event"]["id"]
                if receiver.kind == "pagerduty"
                else body["details"]["id"]
                if receiver.kind == "opsgenie"
                else body["event"]["id"]
            )
            key = {
                "pagerduty": body.get("dedup_key"),
                "opsgenie": body.get("alias"),
                "webhook": request.headers.get("x-trailmap-delivery"),
            }[receiver.kind]
            assert told.setdefault(event_id, key) == key, f"{event_id} told under two keys"
        assert sorted(told) == sorted(stored)
        repeats += sum(n - 1 for n in arrived.values())
    print(
        f"\nkill -9 while sending: {taken_before_restart} requests taken before the kill, "
        f"{repeats} repeats under the same key after the restart (told apart by the receiver)"
    )
