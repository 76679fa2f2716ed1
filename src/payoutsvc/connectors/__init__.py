"""Helpdesk connectors: helpdesk triggers act on payouts; payout events become ticket notes."""
