"""Network blocks and the two networks."""
