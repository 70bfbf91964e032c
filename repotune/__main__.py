"""``python -m repotune``: the ``repotune`` command (repotune.cli)."""

from repotune.cli.main import run

run()
