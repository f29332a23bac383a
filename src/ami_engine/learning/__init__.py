"""Offline learning: feedback metrics, loss, candidate search and the offline loop."""
