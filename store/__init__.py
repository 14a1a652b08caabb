"""The concept library: SQLite rows, photo files, learned-token blobs, export and import. No torch here."""
