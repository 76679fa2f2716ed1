"""payoutsvc: ticket-linked payouts for helpdesks."""

__version__ = "0.1.0"
