"""
The C{--help} of the twistd plugins in plain text, made from the epytext of
their modules' docstrings, which pydoctor renders.
"""

from __future__ import annotations

import inspect
import re

from twisted.python import usage

#: Inline markup: code, links, italics, bold, ...: a capital and braces.
_INLINE = re.compile(r"\b[A-Z]\{([^{}]*)\}")


def plain_text(docstring: str) -> str:
    """
    The text of an epytext docstring for a terminal: dedented, its inline
    markup reduced to the text marked, a literal block's double colon to one,
    its lines kept.
    """
    text = _INLINE.sub(r"\1", inspect.cleandoc(docstring))
    return re.sub(r"::$", ":", text, flags=re.M)


class Options(usage.Options):
    """
    Options whose C{--help} ends with L{description} as written, where
    Twisted would re-wrap a C{longdesc} into one paragraph and lose the
    lines of a synopsis.
    """

    #: Plain text, printed after the options.
    description = ""
    #: Twisted's long description, left empty: L{description} replaces it.
    longdesc = ""

    def getUsage(self, width: int | None = None) -> str:
        return f"{super().getUsage(width)}\n{self.description}\n"
