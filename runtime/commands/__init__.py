"""One module per ``evflow`` command, each with ``run(args) -> exit code``; imported on use."""
