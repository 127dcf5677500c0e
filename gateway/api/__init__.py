"""The HTTP edge. With `gateway.app`, the only code that imports FastAPI."""
