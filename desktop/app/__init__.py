"""Familiar's desktop window (PySide6).

Importing any module here must not import torch: the engine is imported lazily inside worker threads
(`desktop.app.engine_host`, `desktop.app.training`), so the window appears at once while the model loads
behind a status indicator.
"""
