"""Familiar's machine learning: model loading, concept tokens, prompts, images, chat and generation.

Importing this package is cheap: torch is only imported by the submodules that need it.
"""
