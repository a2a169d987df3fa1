"""``attn-sched bench``: an engine-shaped attention step, timed with and without shared metadata."""
