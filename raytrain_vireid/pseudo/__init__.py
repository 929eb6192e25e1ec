"""pseudo."""
