"""Pure algorithms and rules: no I/O, no web framework."""
