"""An open-loop, paced load (what `wrk2 -R` does; Debian has no wrk2): requests are scheduled
at a fixed rate whatever the server does, and each latency is measured from the request's
scheduled time, so a stall shows up in the percentiles instead of silently slowing the
sender down (coordinated omission). Raw HTTP/1.1 keep-alive on asyncio streams, so the
client costs little of the machine's CPU."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field


def payout_request(host: str, api_key: str, requesters: int) -> Callable[[int], bytes]:
    """The bytes of the n-th POST /v1/payouts (unique key, ticket and recipient, as
    bench/create_payout.lua builds them)."""

    def build(n: int) -> bytes:
        unique = uuid.uuid4().hex
        body = json.dumps(
            {
                "ticket": {"system": "bench", "id": f"t-{unique}"},
                "reason": "refund",
                "amount": "12.50",
                "currency": "CNY",
                "recipient": {"type": "alipay", "account": f"u{unique}@example.com", "name": "B"},
                "requested_by": f"bench-agent-{n % requesters}",
                "description": "benchmark",
                "metadata": {"order_id": unique},
            }
        ).encode()
        head = (
            f"POST /v1/payouts HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {api_key}\r\n"
            f"Idempotency-Key: paced-{unique}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    return build


@dataclass
class PacedResult:
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _read_status(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def _connection(
    host: str, port: int, queue: asyncio.Queue[tuple[float, bytes] | None], result: PacedResult
) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (item := await queue.get()) is not None:
            scheduled, request = item
            writer.write(request)
            status = await _read_status(reader)
            result.latencies_ms.append((loop.time() - scheduled) * 1000)
            if status >= 300:
                result.failures += 1
    finally:
        writer.close()


async def paced(
    host: str,
    port: int,
    rate: float,
    seconds: float,
    build: Callable[[int], bytes],
    connections: int = 64,
) -> PacedResult:
    """Send ``rate`` requests a second for ``seconds`` over up to ``connections``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    result = PacedResult()
    workers = [
        asyncio.create_task(_connection(host, port, queue, result)) for _ in range(connections)
    ]
    # Built before the clock starts, so building them does not steal the server's CPU.
    requests = [build(n) for n in range(int(rate * seconds))]
    start = loop.time() + 0.5
    for n, request in enumerate(requests):
        scheduled = start + n / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((scheduled, request))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return result
