"""Standard Webhooks signing: secrets, signatures (incl. rotation) and delivery headers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from payoutsvc.webhooks.signing import (
    USER_AGENT,
    build_headers,
    generate_secret,
    sign,
    unix_timestamp,
)

BODY = (
    b'{"type":"payout.succeeded","timestamp":"2025-01-01T00:00:00Z",'
    b'"data":{"payout":{"id":"po_1","note":"caf\xc3\xa9"},"sequence":5}}'
)


def _now() -> datetime:
    return datetime.now(UTC)


def test_generate_secret_format() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    assert len(raw) == 32
    assert generate_secret() != secret
    Webhook(secret)  # accepted by the reference library


def test_known_answer_vector() -> None:
    # Test vector published with the Standard Webhooks / Svix libraries.
    signature = sign(
        ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        datetime.fromtimestamp(1614265330, tz=UTC),
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_single_secret_verifies_with_reference_library() -> None:
    secret = generate_secret()
    headers = build_headers([secret], "evt_123", _now(), BODY)
    assert headers["webhook-signature"].startswith("v1,")
    assert " " not in headers["webhook-signature"]
    assert Webhook(secret).verify(BODY, headers) == {
        "type": "payout.succeeded",
        "timestamp": "2025-01-01T00:00:00Z",
        "data": {"payout": {"id": "po_1", "note": "café"}, "sequence": 5},
    }


def test_rotation_signs_with_every_secret_and_each_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    headers = build_headers([new, old], "evt_rot", _now(), BODY)
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2
    assert all(entry.startswith("v1,") for entry in entries)
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_duplicate_secrets_sign_once() -> None:
    secret = generate_secret()
    assert sign([secret, secret], "evt_1", _now(), BODY) == sign([secret], "evt_1", _now(), BODY)


def test_wrong_secret_and_tampering_fail() -> None:
    secret = generate_secret()
    headers = build_headers([secret], "evt_1", _now(), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"po_1", b"po_2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-id": "evt_2"})
    stale = str(int(headers["webhook-timestamp"]) - 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-timestamp": stale})


def test_build_headers_contents() -> None:
    secret = generate_secret()
    when = datetime(2025, 3, 4, 5, 6, 7, 900_000, tzinfo=UTC)
    headers = build_headers([secret], "evt_abc", when, BODY)
    assert headers == {
        "webhook-id": "evt_abc",
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": sign([secret], "evt_abc", when, BODY),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    assert headers["webhook-timestamp"] == "1741064767"  # floored, whole seconds
    assert USER_AGENT == "payoutsvc-webhooks/1"


def test_non_utc_and_naive_timestamps_are_normalised() -> None:
    secret = generate_secret()
    utc_now = _now().replace(microsecond=0)
    plus_two = utc_now.astimezone(timezone(timedelta(hours=2)))
    naive = utc_now.replace(tzinfo=None)
    reference = build_headers([secret], "evt_tz", utc_now, BODY)
    assert build_headers([secret], "evt_tz", plus_two, BODY) == reference
    assert build_headers([secret], "evt_tz", naive, BODY) == reference
    assert unix_timestamp(plus_two) == int(utc_now.timestamp())
    Webhook(secret).verify(BODY, build_headers([secret], "evt_tz", plus_two, BODY))


@pytest.mark.parametrize(
    ("secrets", "msg_id", "body"),
    [
        ([], "evt_1", BODY),
        ("whsec_abc", "evt_1", BODY),  # a bare string is not a list of secrets
        (["whsec_"], "evt_1", BODY),  # decodes to an empty key
        (["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], "", BODY),
        (["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], "evt\r\nx: y", BODY),
        (["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], "evt_1", b"\xff\xfe"),
    ],
)
def test_sign_rejects_bad_input(secrets: list[str], msg_id: str, body: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 -- several distinct messages
        sign(secrets, msg_id, _now(), body)
