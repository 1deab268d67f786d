"""Help text shared by the ``manifests``, ``extract`` and ``distill`` command lines.

argparse's ``ArgumentDefaultsHelpFormatter`` appends ``(default: X)`` to every option, also where
X says nothing: ``None`` for an option that is simply absent unless given, ``False`` (or, for a
``--no-...`` switch, ``True``) for a switch, ``[]`` for a repeatable one, and a second default after a
help text that already names it.
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default only when it is a value a reader can use."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        says_nothing = default is None or default is False or default is argparse.SUPPRESS or default == []
        switch = action.nargs == 0  # --flag / --no-flag: being given is the whole of it
        if says_nothing or switch or "default" in text:
            return text
        return super()._get_help_string(action)


class RawHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`HelpFormatter`, with the description and epilog kept as written (examples, lists)."""
