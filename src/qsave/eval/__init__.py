"""Correlation and preference metrics, benchmark adapters, reports (paper App. B, D.2)."""
