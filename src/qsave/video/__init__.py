"""Video decoding, SlowFast planning and Qwen3-VL processor inputs (paper Sec. 4.2.1)."""
