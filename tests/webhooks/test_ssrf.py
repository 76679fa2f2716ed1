"""The SSRF guard as an API client meets it: refused at registration with a clear 422, and
refused again at send time when DNS now points somewhere private."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest

from payoutsvc.main import create_app
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.sender import WebhookSender
from tests.conftest import ADMIN_KEY, make_settings
from tests.helpers import create_operator, create_payout
from tests.webhooks.conftest import FAST_SCHEDULE, deliveries_of

PUBLIC_IP = "93.184.216.34"

# Every address form the issue names, each with the machine code the client gets back.
REFUSED_URLS: list[tuple[str, str]] = [
    ("http://hooks.example.com/payouts", "https_required"),
    ("ftp://hooks.example.com/payouts", "https_required"),
    ("https://user:pass@hooks.example.com/payouts", "credentials_in_url"),
    ("https://localhost/payouts", "private_address"),
    ("https://127.0.0.1/payouts", "private_address"),  # loopback
    ("https://127.8.9.10:8443/payouts", "private_address"),
    ("https://10.1.2.3/payouts", "private_address"),  # private
    ("https://172.16.5.4/payouts", "private_address"),
    ("https://192.168.0.10/payouts", "private_address"),
    ("https://169.254.169.254/latest/meta-data/", "private_address"),  # cloud metadata
    ("https://169.254.10.1/payouts", "private_address"),  # link-local
    ("https://100.64.0.1/payouts", "private_address"),  # CGNAT
    ("https://224.0.0.251/payouts", "private_address"),  # multicast
    ("https://0.0.0.0/payouts", "private_address"),  # unspecified
    ("https://255.255.255.255/payouts", "private_address"),  # broadcast
    ("https://[::1]/payouts", "private_address"),
    ("https://[::]/payouts", "private_address"),
    ("https://[fe80::1]/payouts", "private_address"),
    ("https://[fc00::1]/payouts", "private_address"),
    ("https://[ff02::1]/payouts", "private_address"),
    ("https://[::ffff:127.0.0.1]/payouts", "private_address"),  # IPv4-mapped
    ("https://[::ffff:a9fe:a9fe]/payouts", "private_address"),  # mapped metadata, hex form
    ("https://[::127.0.0.1]/payouts", "private_address"),  # IPv4-compatible
    ("https://[64:ff9b::a9fe:a9fe]/payouts", "private_address"),  # NAT64 of the metadata IP
    ("https://[2002:a9fe:a9fe::1]/payouts", "private_address"),  # 6to4 of the metadata IP
    ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/payouts", "private_address"),  # Teredo
    ("https://2130706433/payouts", "non_canonical_ip"),  # 127.0.0.1 as an integer
    ("https://0x7f000001/payouts", "non_canonical_ip"),
    ("https://0177.0.0.1/payouts", "invalid_url"),  # octal: the URL parser already balks
    ("https://127.1/payouts", "non_canonical_ip"),  # short form
    ("https://private.example.test/payouts", "private_address"),  # DNS -> 10.0.0.7
    ("https://mixed.example.test/payouts", "private_address"),  # DNS -> public + loopback
    ("https://nowhere.example.test/payouts", "unresolvable_host"),
]


class FakeDns:
    """A resolver the tests control; records every lookup."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int, /) -> Sequence[str]:
        self.lookups.append(host)
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        return self.answers[host]


@pytest.fixture
def dns() -> FakeDns:
    return FakeDns(
        {
            "hooks.example.com": [PUBLIC_IP],
            "private.example.test": ["10.0.0.7"],
            "mixed.example.test": [PUBLIC_IP, "127.0.0.1"],
            "rebinding.example.test": [PUBLIC_IP],
        }
    )


@pytest.fixture
async def strict_app(database_url: str, dns: FakeDns) -> AsyncIterator[Any]:
    """The app as deployed: private webhook targets not allowed."""
    settings = make_settings(
        database_url, webhook_allow_private=False, webhook_retry_schedule=FAST_SCHEDULE
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        application.state.webhook_resolver = dns
        yield application


@pytest.fixture
async def strict_client(strict_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=strict_app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as http:
        yield http


async def test_unsafe_urls_are_refused_at_registration(strict_client: httpx.AsyncClient) -> None:
    wrong: list[str] = []
    for url, code in REFUSED_URLS:
        response = await strict_client.post("/v1/webhook-endpoints", json={"url": url})
        problem = response.json()
        got = (
            response.status_code,
            response.headers["content-type"],
            problem.get("code"),
            [(e["field"], e["code"]) for e in problem.get("errors", [])],
        )
        expected = (422, "application/problem+json", "webhook_url_refused", [("url", code)])
        if got != expected or not problem["errors"][0]["message"]:
            wrong.append(f"{url}: {got}")
    assert not wrong, "\n".join(wrong)
    listed = await strict_client.get("/v1/webhook-endpoints")
    assert listed.json()["data"] == []


async def test_public_urls_are_accepted_and_changes_are_checked_too(
    strict_client: httpx.AsyncClient,
) -> None:
    for url in ("https://hooks.example.com/payouts", f"https://{PUBLIC_IP}:8443/hooks"):
        response = await strict_client.post("/v1/webhook-endpoints", json={"url": url})
        assert response.status_code == 201, response.text
    endpoint_id = response.json()["id"]
    moved = await strict_client.patch(
        f"/v1/webhook-endpoints/{endpoint_id}", json={"url": "https://169.254.169.254/"}
    )
    assert moved.status_code == 422
    assert moved.json()["errors"][0]["code"] == "private_address"
    unchanged = await strict_client.get(f"/v1/webhook-endpoints/{endpoint_id}")
    assert unchanged.json()["url"] == f"https://{PUBLIC_IP}:8443/hooks"


async def test_a_name_that_now_resolves_to_a_private_address_is_refused_at_send_time(
    strict_app: Any, strict_client: httpx.AsyncClient, dns: FakeDns
) -> None:
    created = await strict_client.post(
        "/v1/webhook-endpoints", json={"url": "https://rebinding.example.test/hooks"}
    )
    assert created.status_code == 201, created.text
    endpoint_id = created.json()["id"]
    await create_operator(strict_client, "agent-17", "agent")
    assert (await create_payout(strict_client)).status_code == 201

    # Between registration and delivery the name was re-pointed at a private address
    # (loopback: were the guard broken, the attempt would stay on this machine).
    dns.answers["rebinding.example.test"] = ["127.0.0.1"]
    dns.lookups.clear()
    runtime: Runtime = strict_app.state.runtime
    sender = WebhookSender(runtime, resolver=dns)
    try:
        handled = await sender.run_once()
    finally:
        await sender.aclose()
    assert handled >= 1
    assert dns.lookups
    assert set(dns.lookups) == {"rebinding.example.test"}
    log = await deliveries_of(strict_client, endpoint_id)
    attempted = [d for d in log if d["attempts"] == 1]
    assert attempted
    for delivery in attempted:
        assert delivery["status"] == "pending"  # retried later: DNS may be fixed
        assert delivery["last_status_code"] is None
        assert delivery["last_error"] == "refused: resolves to a non-public address"
        assert delivery["next_attempt_at"] is not None
