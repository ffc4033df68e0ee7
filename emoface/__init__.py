"""emoface: core library of the VLM face-emotion ablation pipeline.

Backends, prompts, parsing, stores and statistics live here. Nothing in this package imports
Prefect, so a notebook can use any part of it directly; orchestration lives in ``tasks/`` and
``flows/``.
"""

__version__ = "0.1.0"
