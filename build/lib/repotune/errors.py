"""The one exception type users see.

Every problem with user input (a path, a repository, a config value) raises ``InputError``
with a single line that names the input, says what is wrong and what to do. Entry points
print that line and exit non-zero instead of showing a traceback.
"""


class InputError(ValueError):
    """Bad user input, described in one actionable line."""

    def __init__(self, subject: str, problem: str, remedy: str) -> None:
        self.subject = subject
        self.problem = problem
        self.remedy = remedy
        super().__init__(f"{subject}: {problem}; {remedy}")
