"""Prefect task wrappers: read inputs, call the emoface library, validate, write outputs."""
