"""Errors the store raises; each message is meant for the user."""


class StoreError(Exception):
    """Base class for library errors the user can act on."""
