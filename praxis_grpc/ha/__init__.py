"""Active-passive HA: the coordinator role, its replicated task records, fencing."""
