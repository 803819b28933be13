"""The sans-IO protocol core of the EVerest APIs: topics, envelopes, correlation, heartbeats.

Nothing here touches a socket, a clock or a logger: bytes and values in, values and bytes out.
"""
