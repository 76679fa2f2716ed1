"""Reconciliation: does what the gateway paid match what we think we paid?

A reconciliation compares, for one gateway and one period, every payout of ours with what
the gateway says about it (its status query by idempotency key, its own transfer list where
it has one, or a bank statement uploaded as CSV) and records each difference as an item.
It never changes a payout: the items are for a person to look at.
"""
