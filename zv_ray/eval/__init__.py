"""Evaluation on real scanned objects (GSO) and held-out Zeroverse objects, and reconstruction from posed images."""
