"""Run one python_test through repotune's sandbox and print its CheckResult as JSON.

tests/test_sandbox_adversarial.py runs this as an ordinary user (``runuser``) when the tests
run as root, so that each attack is also tried where bubblewrap runs unprivileged. The request
comes as JSON on stdin: ``code``, ``test``, ``timeout_s``, ``limits`` (SandboxLimits fields)
and ``guard`` (a guard file to run instead of the package's, or null).
"""

import json
import sys
from pathlib import Path

from repotune.evaluate import sandbox


def main() -> None:
    request = json.load(sys.stdin)
    if request["guard"] is not None:
        sandbox._GUARD = Path(request["guard"])
    limits = sandbox.SandboxLimits(**request["limits"])
    result = sandbox.run_python_test(request["code"], request["test"], request["timeout_s"], limits)
    print(json.dumps(vars(result)))


if __name__ == "__main__":
    main()
