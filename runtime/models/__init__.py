"""attrs values of the EVerest APIs (one module per API)."""
