"""Nook: ask questions about your own documents, entirely on your own machine."""

__version__ = "0.1.0"
