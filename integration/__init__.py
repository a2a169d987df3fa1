"""GPU packing, the GPU runner and the real-engine serving A/B (``python3 -m integration.serve_ab``)."""
