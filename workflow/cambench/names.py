"""The one pattern every name that becomes a path must match: experiment, model,
method and architecture names.

Names become folders and file names (``results/<experiment>/saliency/<model>/<method>/``)
and shell words, so they are restricted to letters, digits, ``_``, ``.`` and ``-``, not
starting with ``.`` or ``-``: no slash, no ``..``, nothing a shell reads specially.
The config schema (``workflow/schemas/config.schema.yaml``) holds the same pattern
(a test checks they agree).

>>> check_name("opticam_100", "method")
>>> check_name("../../x", "method")
Traceback (most recent call last):
ValueError: method name '../../x' is not allowed: names are letters, digits, '_', '.' and '-', not starting with '.' or '-'
"""

from __future__ import annotations

import re

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
_NAME = re.compile(NAME_PATTERN)


def check_name(name: object, what: str) -> None:
    """ValueError unless ``name`` is a string matching :data:`NAME_PATTERN`; ``what``
    says which kind of name it is (``method``, ``architecture``, ...)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"{what} name {name!r} is not allowed: names are letters, digits, '_', '.' "
            "and '-', not starting with '.' or '-'"
        )
