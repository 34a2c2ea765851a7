"""Prompt languages: the rules that turn values into prompt names.

Each language is one module with one class following
L{media.server.languages.base.Language}; L{LANGUAGES} maps the language
code (also the prompt directory name) to an instance.  A new language is a
new module plus one line here.
"""

from __future__ import annotations

from media.server.languages.base import CURRENCY_DIGITS, Language
from media.server.languages.de import German
from media.server.languages.en import English

__all__ = ["CURRENCY_DIGITS", "LANGUAGES", "Language", "get_language"]

#: The languages the media server can speak, by code.
LANGUAGES: dict[str, Language] = {language.code: language for language in (English(), German())}


def get_language(code: str) -> Language:
    """Return the language called C{code}.

    @raise KeyError: with the known codes in the message, for an unknown one.
    """
    try:
        return LANGUAGES[code]
    except KeyError:
        raise KeyError(f"no prompt language {code!r} (known: {', '.join(sorted(LANGUAGES))})")\
            from None
