"""Detectors, int8 post-training quantization, cut points and the M1/M2 split."""
