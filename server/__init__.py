"""The cloud server: decode, motion-compensate, run M2, store detections."""
