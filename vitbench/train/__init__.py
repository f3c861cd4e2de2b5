"""Training: learning-rate schedules, optimizers and the fine-tuning loop."""
