"""`payoutsvc listen` against a real `payoutsvc serve` process: a newcomer's payout shows up
as verified webhooks, a forged delivery is reported and not forwarded, the temporary
endpoint is gone after Ctrl-C."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import ADMIN_KEY
from tests.executor.test_processes import (
    PAYOUTSVC,
    free_port,
    process,
    service_env,
    wait_http_ready,
)
from tests.helpers import payout_body
from tests.webhooks.receiver import Receiver, always

pytestmark = pytest.mark.slow

WALKTHROUGH_EVENTS = ["payout.created", "payout.approved", "payout.processing", "payout.succeeded"]


class Lines:
    """The lines a process writes to one stream, read in a thread so a test can wait for one
    with a deadline."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self._queue.put(raw.decode(errors="replace").rstrip("\n"))

    def wait_for(self, predicate: Any, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"no such line within {timeout}s; saw {self.seen}")


@contextmanager
def listening(
    base: str, *options: str, key: str = ADMIN_KEY
) -> Iterator[tuple[subprocess.Popen[bytes], Lines, Lines]]:
    env = service_env("unused", PAYOUTSVC_API_KEY=key)
    proc = subprocess.Popen(
        [PAYOUTSVC, "listen", "--api", base, *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        yield proc, Lines(proc.stdout), Lines(proc.stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = service_env(
        database_url,
        PAYOUTSVC_WEBHOOK_ALLOW_PRIVATE="true",
        PAYOUTSVC_WEBHOOK_RETRY_SCHEDULE="0.2,0.2,0.2",
    )
    with process([PAYOUTSVC, "serve", "--port", str(port)], env, log) as proc:
        wait_http_ready(base, proc, log)
        yield base


def walkthrough(base: str) -> str:
    """README's walk-through: an agent asks for 120.00 CNY, a supervisor approves."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=base, headers=admin, timeout=30) as http:
        integration = http.get("/v1/integrations").json()["data"][0]["id"]
        keys = {}
        for operator, role, scopes in (
            ("agent-17", "agent", ["payouts:write", "payouts:read"]),
            ("sup-2", "supervisor", ["payouts:approve", "payouts:read"]),
        ):
            made = http.post("/v1/operators", json={"id": operator, "role": role})
            assert made.status_code == 201, made.text
            made = http.post(
                f"/v1/integrations/{integration}/api-keys",
                json={"scopes": scopes, "operator_id": operator},
            )
            keys[operator] = {"Authorization": f"Bearer {made.json()['key']}"}
        created = http.post(
            "/v1/payouts",
            json=payout_body(amount="120.00"),
            headers={"Idempotency-Key": uuid.uuid4().hex, **keys["agent-17"]},
        )
        assert created.json()["status"] == "pending_approval", created.text
        payout_id = str(created.json()["id"])
        approved = http.post(
            f"/v1/payouts/{payout_id}/approve", json={"comment": "ok"}, headers=keys["sup-2"]
        )
        assert approved.status_code == 200, approved.text
        return payout_id


def endpoints(base: str) -> list[dict[str, Any]]:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    answer = httpx.get(f"{base}/v1/webhook-endpoints", headers=admin)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


def forged_delivery(listener_url: str) -> httpx.Response:
    """A delivery signed with a secret that is not the endpoint's."""
    body = json.dumps({"type": "payout.succeeded", "timestamp": "2026-01-01T00:00:00Z"})
    headers = {"webhook-id": "evt_forged", "content-type": "application/json"}
    now = time.time()
    signature = Webhook("whsec_" + "Zm9yZ2VkLXNlY3JldC1mb3JnZWQtc2VjcmV0").sign(
        "evt_forged", datetime.fromtimestamp(now, tz=UTC), body
    )
    headers |= {"webhook-timestamp": str(int(now)), "webhook-signature": signature}
    return httpx.post(listener_url, content=body, headers=headers)


def test_listen_shows_the_walkthrough_verified_forwards_it_and_removes_its_endpoint(
    server: str,
) -> None:
    target = Receiver()
    target.start()
    target.on("/hook", always(200))
    try:
        with listening(server, "--json", "--forward-to", target.url("/hook")) as (proc, out, err):
            ready = err.wait_for(lambda line: line.startswith("Ready"))
            listener_url = ready.split("listening on ")[1].split(" ")[0]
            secret = err.wait_for(lambda line: "signing secret" in line).split(": ")[1]
            [endpoint] = endpoints(server)
            assert endpoint["url"] == listener_url

            payout_id = walkthrough(server)
            got = [json.loads(out.wait_for(lambda _line: True)) for _ in WALKTHROUGH_EVENTS]
            assert [g["type"] for g in got] == WALKTHROUGH_EVENTS
            assert {g["data"]["payout"]["id"] for g in got} == {payout_id}
            assert got[-1]["data"]["payout"]["status"] == "succeeded"

            # Forwarded byte for byte with its signature: the target verifies it too.
            forwarded = target.received("/hook")
            assert len(forwarded) == len(WALKTHROUGH_EVENTS)
            for request in forwarded:
                Webhook(secret).verify(request.body, request.headers)

            forged = forged_delivery(listener_url)
            assert forged.status_code == 401
            report = json.loads(err.wait_for(lambda line: "evt_forged" in line))
            assert report["verified"] is False
            assert len(target.received("/hook")) == len(WALKTHROUGH_EVENTS)

            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=20) == 0
            err.wait_for(lambda line: "deleted" in line)
        assert endpoints(server) == []
    finally:
        target.stop()


def test_listen_prints_pretty_lines_and_stops_cleanly_on_sigterm(server: str) -> None:
    with listening(server) as (proc, out, err):
        err.wait_for(lambda line: line.startswith("Ready"))
        payout_id = walkthrough(server)
        line = out.wait_for(lambda line: "payout.succeeded" in line)
        assert "verified" in line
        assert payout_id in line
        assert "120.00 CNY" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert endpoints(server) == []


def test_listen_explains_a_service_that_refuses_loopback_urls(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with process([PAYOUTSVC, "serve", "--port", str(port)], service_env(database_url), log) as p:
        wait_http_ready(base, p, log)
        with listening(base) as (proc, _out, err):
            assert proc.wait(timeout=20) == 1
            err.wait_for(lambda line: "PAYOUTSVC_WEBHOOK_ALLOW_PRIVATE=true" in line)
        assert endpoints(base) == []
