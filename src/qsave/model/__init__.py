"""Checkpoint loading, scoring and the offline tiny Qwen3-VL."""
