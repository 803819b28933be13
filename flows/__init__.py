"""The example flow files (package data), e.g. demo.json for ``evflow demo``."""
