"""pseudo/associate."""
