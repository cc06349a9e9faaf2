"""Ingest: load, chunk, embed and sync documents into the local index."""
