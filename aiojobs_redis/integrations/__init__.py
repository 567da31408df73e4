"""Glue for web frameworks: open the engine (and optionally a worker) for an app's lifetime."""
