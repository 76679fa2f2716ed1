"""The garbage collector, tuned for a long-running process (`payoutsvc serve` and `worker`)."""

from __future__ import annotations

import gc

# Net allocations of container objects between two young collections (CPython: 700).
YOUNG_COLLECTION_THRESHOLD = 20_000


def settle_startup_heap() -> None:
    """Called once startup is done. What startup built (routes, schemas, models, the policy:
    about 240,000 objects in the API) lives as long as the process: frozen, the collector
    stops scanning it (a full collection of it took ~120 ms). And young collections get
    rarer: at CPython's 700, under load they ran every few requests or payouts, each scanning
    and promoting the live objects of the work in flight (at 64 connections ~1,900
    collections per 5,000 creates, ~6 % of the API's CPU). A request leaves no reference
    cycles behind (db/driver.py), so under load the young collections stop; one that finds
    cycles scans at most this many objects (~10 ms). Not for tests, which build many apps in
    one process (frozen objects are never collected)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, 50, 100)
