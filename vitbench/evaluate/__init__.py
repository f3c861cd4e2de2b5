"""Evaluation: classification accuracy (top-1, ImageNet-ReaL)."""
