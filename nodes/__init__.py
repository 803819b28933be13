"""Built-in node library of evflow."""
