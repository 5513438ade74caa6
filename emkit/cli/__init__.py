"""The ``emkit`` command line: one small module per command, each a thin shell over the API."""
