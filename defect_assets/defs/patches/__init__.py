"""Patch stage: labeled 64x64 patches with stable splits, and the augmented training set."""
