"""``python -m repotune``: the ``repotune`` command (repotune.cli)."""

import sys

from repotune.cli.main import main

sys.exit(main())
