"""Payout batches: many payouts asked for in one request, approved, released and exported
for a bank portal together (API.md, Finance operations)."""
