"""The app every kit service runs: yours (CELERYKIT_APP, as for `celery -A`) with the kit's settings.

`celery -A celerykit.app worker` loads the app named by CELERYKIT_APP (default: the demo app) and
overrides broker, serialization and reliability settings with the kit's. Routes, schedules and
anything else your app configures stay as they are.
"""

from __future__ import annotations

import os

from celery.app.utils import find_app

from celerykit import patches
from celerykit.celeryconfig import kit_settings
from celerykit.settings import Env

patches.apply()
app = find_app(os.environ.get("CELERYKIT_APP", "celerykit.demo:app"))
app.conf.update(kit_settings(Env.current()))
