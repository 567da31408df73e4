"""Runnable examples of aiojobs-redis. Run each from the repository root, as its docstring shows."""
