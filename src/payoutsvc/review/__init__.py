"""The periodic review: anomaly detectors over recent payouts, their scan and the review
workflow (API.md "Periodic review")."""
