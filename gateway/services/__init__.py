"""Use cases, one per module, each written as numbered steps that compose the leaves."""
