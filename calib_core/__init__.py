"""Calibration Lab: how calibration data shapes post-training pruning of causal LMs."""

__version__ = "0.2.0"
