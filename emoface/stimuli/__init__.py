"""Stimulus sets: the embedded generator, importers, and validated loading."""
