"""Consensus backends for active-passive HA: the interface and its implementations."""
