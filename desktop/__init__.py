"""The application: the `familiar` command line, the Qt GUI and the services joining store and engine."""

__version__ = "0.1.0"
