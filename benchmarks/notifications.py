"""The notification outbox's delivery rate against the same posts sent without it.

    .venv/bin/python benchmarks/notifications.py [--backend sqlite|postgres|both]
                                                 [--notifications N] [--repeat R] [--quick]

The figure: N notifications queued in the outbox (by `enqueue`, as stored events queue them;
not timed) and sent by the outbox's sender (`trailmap.notifications.outbox.Sender`, its
default batch, workers and concurrency) to a signed-webhook channel whose receiver, on loopback in a
process of its own, answers 204: each is claimed with a lease, signed, posted through the
outbound guard and marked sent. The floor: the very same deliveries sent by the same send
function at the same concurrency, with no database at all. The two alternate R times (default
3) and the best of each is kept. Printed: both rates and the ratio, and each per second of
this process's CPU time (what a shared machine's load leaves out; PostgreSQL's own work, in
its processes, is not counted).

Target: at least 200 notifications per second through the outbox; exits 1 when it is missed.
`--quick` (300 notifications) is a sanity check that never fails on a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import anyio
import httpx
from _common import Backend, bench_database, create_org_with_key, run_backends, start_server

from trailmap import clock, ids
from trailmap.accounts.audit import OPERATOR
from trailmap.accounts.team import OPERATOR_AUTHORITY
from trailmap.integrations.notifications import create_channel, create_rule
from trailmap.notifications.channels import Channel
from trailmap.notifications.outbox import OutboxSettings, Sender
from trailmap.notifications.senders import Delivery, send
from trailmap.notifications.triggers import Trigger, enqueue, message_for
from trailmap.outbound import OutboundPolicy
from trailmap.storage import Connection, Database
from trailmap.storage import notifications as store

TARGET_PER_SECOND = 200.0
_SECRET_KEY = "benchmark-server-secret-key-0123456789abcdef"  # noqa: S105 - a throwaway key
_POLICY = OutboundPolicy.parse("127.0.0.0/8")
_RECEIVER = Path(__file__).resolve().parent / "_notification_receiver.py"


def _trigger(n: int) -> Trigger:
    return Trigger(
        "event",
        {
            "id": ids.new_id(),
            "type": "deployment",
            "source": "//bench.example/checkout",
            "service": "checkout",
            "subject": "production",
            "version": f"1.{n}",
            "time_us": clock.now_us(),
        },
    )


async def _queue(db: Database, org_id: str, count: int) -> None:
    for start in range(0, count, 500):
        chunk = [_trigger(n) for n in range(start, min(count, start + 500))]
        await db.write(enqueue, org_id, chunk, clock.now_us())


async def _setup(db: Database, org_id: str, url: str) -> Channel:
    channel, _ = await create_channel(
        db,
        org_id,
        {"kind": "webhook", "name": "bench", "settings": {"url": url, "secret": "s" * 32}},
        who=OPERATOR_AUTHORITY,
        by=OPERATOR,
        secret_key=_SECRET_KEY,
        outbound=_POLICY,
    )
    await create_rule(
        db,
        org_id,
        {"name": "all", "channel_ids": [channel.id]},
        who=OPERATOR_AUTHORITY,
        by=OPERATOR,
    )
    return channel


def _sent(conn: Connection, org_id: str) -> int:
    return store.count_outbox(conn, org_id).get("sent", 0)


async def _through_outbox(db: Database, org_id: str, count: int) -> tuple[float, float]:
    await _queue(db, org_id, count)
    before = await db.read_one(_sent, org_id)
    settings = OutboxSettings()
    sender = Sender(db, secret_key=_SECRET_KEY, outbound=_POLICY, settings=settings)
    started, cpu = time.perf_counter(), time.process_time()
    async with httpx.AsyncClient(trust_env=False) as client:
        await sender.send_all_due(client=client)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    sent = await db.read_one(_sent, org_id) - before
    if sent != count:
        sys.exit(f"the outbox sent {sent} of {count}")
    return count / elapsed, count / cpu


async def _directly(channel: Channel, count: int) -> tuple[float, float]:
    """The same deliveries, sent by the same function at the same concurrency, no database."""
    settings = OutboxSettings()
    deliveries = [
        Delivery(
            id=ids.new_id(),
            kind=channel.kind,
            settings=channel.public_settings,
            secrets=channel.secrets(_SECRET_KEY),
            message=message_for(_trigger(n), "event"),
            created_us=clock.now_us(),
        )
        for n in range(count)
    ]
    limiter = anyio.CapacityLimiter(settings.concurrency * settings.workers)

    async def one(delivery: Delivery, client: httpx.AsyncClient) -> None:
        async with limiter:
            await send(delivery, policy=_POLICY, timeout_seconds=10, client=client)

    started, cpu = time.perf_counter(), time.process_time()
    async with httpx.AsyncClient(trust_env=False) as client, anyio.create_task_group() as group:
        for delivery in deliveries:
            group.start_soon(one, delivery, client)
    return count / (time.perf_counter() - started), count / (time.process_time() - cpu)


def _run(backend: Backend, directory: Path, count: int, repeat: int) -> bool:
    with (
        bench_database(backend, "notifications", directory) as bench,
        start_server(bench.url, directory, launcher=_RECEIVER) as receiver,
    ):
        org_id, _token = create_org_with_key(bench.url, "bench-notify")
        db = Database(bench.url)
        try:

            async def measure() -> tuple[tuple[float, float], tuple[float, float]]:
                channel = await _setup(db, org_id, f"{receiver.base_url}/hook")
                best_outbox = best_direct = (0.0, 0.0)
                for _ in range(repeat):  # alternating, the best of each kept
                    best_outbox = max(best_outbox, await _through_outbox(db, org_id, count))
                    best_direct = max(best_direct, await _directly(channel, count))
                return best_outbox, best_direct

            (outbox, outbox_cpu), (direct, direct_cpu) = asyncio.run(measure())
        finally:
            db.close()
    met = outbox >= TARGET_PER_SECOND
    print(
        f"{backend}: {count} notifications through the outbox at {outbox:,.0f}/s; the same posts "
        f"sent directly at {direct:,.0f}/s; ratio {outbox / direct:.2f}; target "
        f"{TARGET_PER_SECOND:.0f}/s {'met' if met else 'MISSED'}; per second of this "
        f"process's CPU: {outbox_cpu:,.0f} through the outbox, {direct_cpu:,.0f} directly",
        flush=True,
    )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", default="both")
    parser.add_argument("--notifications", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    count = 300 if args.quick else args.notifications
    repeat = 1 if args.quick else args.repeat

    def run(backend: Backend, directory: Path) -> bool:
        return _run(backend, directory, count, repeat)

    return run_backends("notifications", args.backend, run, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
