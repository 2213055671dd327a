"""The three training stages: SFT (CE + MSE), GRPO, cool-off SFT (paper Sec. 4.3)."""
