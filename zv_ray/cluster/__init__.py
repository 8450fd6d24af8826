"""Connecting to Ray: a local embedded cluster by default, an existing one under `ray job submit`."""
