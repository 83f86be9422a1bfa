"""One module per command group; each registers its parser and its handlers."""
