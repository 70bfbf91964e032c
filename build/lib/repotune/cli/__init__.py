"""The ``repotune`` command: suggest commit messages, install the commit hook, complete code."""
