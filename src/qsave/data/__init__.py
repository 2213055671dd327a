"""Synthetic clips, ratings → MOS, screening, splits and training records."""
