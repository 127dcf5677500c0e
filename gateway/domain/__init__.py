"""Pure types and rules: no I/O, no framework, importable from every layer."""
