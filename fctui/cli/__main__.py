"""``python -m fctui.cli``: the same as the ``fctui`` command (the agent is started this way)."""

import sys

from . import main

sys.exit(main())
