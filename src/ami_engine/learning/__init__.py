"""Offline learning, in pipeline order: the figures and the loss (feedback_metrics, loss),
their confidence bounds (bounds) and the search-time constraints (constraints); the
candidate search (policy_optimizer, study); the loop: data, split, settings, the search
itself (offline_loop), the needless fail-safes (needless) and the result with its
suggestion document (result).

This package module imports nothing: its modules sit in different layers (pyproject.toml).
"""
