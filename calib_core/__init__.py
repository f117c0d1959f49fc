"""Calibration Lab: how calibration data shapes post-training pruning of causal LMs."""

__version__ = "0.3.0"
