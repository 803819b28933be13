"""evflow runtime: models, codec, protocol core, transport, client, engine and CLI."""

__version__ = "0.1.0"
