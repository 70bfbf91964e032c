"""``python -m repotune.cli``: the ``repotune`` command."""

import sys

from repotune.cli.main import main

sys.exit(main())
