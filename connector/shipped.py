"""Where the declarations that ship with the connector live: ``topics/`` and ``schemas/``.

The repository's top-level ``topics/`` and ``schemas/`` are the source of truth (a service
in any language reads them there). A wheel carries copies of both inside the package,
under ``connector/_shipped/``, written by the build hook in ``setup.py``; an installed
connector finds them there without the repository. ``BATCHBRIDGE_TOPICS_DIR`` and
``BATCHBRIDGE_SCHEMAS_DIR`` (see :class:`connector.config.Settings`) override both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Declarations = Literal["topics", "schemas"]

PACKAGE_DIR = Path(__file__).resolve().parent
#: The folder inside the installed package that setup.py's build hook fills.
SHIPPED_SUBDIR = "_shipped"


def shipped_dir(name: Declarations) -> Path:
    """The ``topics`` or ``schemas`` directory: the wheel's copy, else the checkout's."""
    packaged = PACKAGE_DIR / SHIPPED_SUBDIR / name
    if packaged.is_dir():
        return packaged
    return PACKAGE_DIR.parent / name
