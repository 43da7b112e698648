"""Placing tasks on agents: the router, delegation to other nodes, the front door."""
