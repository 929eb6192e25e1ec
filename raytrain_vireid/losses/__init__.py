"""Contrastive and refinement losses (pure torch): ``soft``, ``contrastive``, ``neighbour``,
``refinement``, ``parts``, ``multicentre``."""
