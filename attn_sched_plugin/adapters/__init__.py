"""Engine adapters. Each module holds pluggy hookimpls and is advertised in the
``attn_sched_plugin.adapters`` entry-point group; third parties add engines the same way."""
