"""Built-in features, each a pluggy plugin on the core's hooks."""
