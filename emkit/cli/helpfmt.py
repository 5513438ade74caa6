"""The help formatter of emkit's commands: descriptions written as one paragraph are wrapped to the
terminal; text with line breaks (an ``examples:`` epilog, a pre-formatted description) is kept as
written, so every example stays one line that can be copied."""
from __future__ import annotations

import argparse


class ExamplesHelpFormatter(argparse.HelpFormatter):
    """Wrap single-paragraph text; keep text holding line breaks as written."""

    def _fill_text(self, text, width, indent):
        if "\n" in text.strip("\n"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)
