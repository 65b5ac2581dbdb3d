"""The kit's Python package, as shipped inside this collection (src/celerykit).

The rules, defaults and shared templates live once, in that package; the collection's plugins
import it from the collection's own copy, so the controller needs nothing but the collection.
"""

from __future__ import annotations

import sys
from pathlib import Path

# plugins/plugin_utils/kit.py -> the collection root, which is also the kit's source tree.
SOURCE = Path(__file__).resolve().parents[2]

if str(SOURCE / "src") not in sys.path:
    sys.path.insert(0, str(SOURCE / "src"))

import celerykit  # noqa: E402
from celerykit import defaults, inventory, monitoring, pki, pools, proxy, tls  # noqa: E402

__all__ = ["SOURCE", "celerykit", "defaults", "inventory", "monitoring", "pki", "pools", "proxy", "tls"]
