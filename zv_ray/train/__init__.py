"""Distributed GS-LRM training: Ray Data streams Zeroverse objects into Ray Train DDP workers."""
