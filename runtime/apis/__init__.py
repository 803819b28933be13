"""The EVerest APIs evflow speaks, one module each: its operation table and its typed calls."""
