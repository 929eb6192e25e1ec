"""Cluster, instance and multi-centre memories (pure torch; the Ray actor lives in ``memory.actor``)."""
