"""The fastest receiver we can write on the same stack: a bare ASGI app that reads the body
and answers 204, so the benchmark measures the sender, not the receiver. ``GET /count`` says
how many webhooks arrived (and how many distinct ``webhook-id`` values) since ``POST /reset``."""

from __future__ import annotations

import json
from typing import Any

_received = 0
_ids: set[bytes] = set()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _received
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if scope["method"] == "GET" and scope["path"] == "/count":
        body = json.dumps({"received": _received, "distinct_ids": len(_ids)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    if scope["method"] == "POST" and scope["path"] == "/reset":
        _received = 0
        _ids.clear()
    else:
        _received += 1
        for name, value in scope["headers"]:
            if name == b"webhook-id":
                _ids.add(value)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
