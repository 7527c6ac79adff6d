"""``python -m taskdeck.monitor {monitor,status,top,rebuild-rollups}`` (needs DJANGO_SETTINGS_MODULE)."""

import sys

from taskdeck.monitor.cli import main

sys.exit(main())
