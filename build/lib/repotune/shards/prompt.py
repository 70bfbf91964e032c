"""The token ids of a commit's prompt: one function for tokenize, evaluate and inference.

Provisional: the ``docs`` branch replaces this module with the version tokenize and evaluate
share. Its contract is what the ``repotune`` command relies on: the prompt is rendered by
:func:`repotune.shards.render.render_prompt`, encoded by a
:class:`repotune.shards.tokenizer.TextEncoder` (only the template's markers are special), and a
prompt over its budget keeps its **last** tokens, as evaluation's generation does: the marker
that asks for the target and the end of the change matter most.
"""

from repotune.shards.render import Commit, Template, render_prompt
from repotune.shards.tokenizer import TextEncoder


def prompt_ids(
    commit: Commit,
    task: str,
    template: Template,
    encoder: TextEncoder,
    max_tokens: int | None = None,
) -> list[int]:
    """Token ids of ``commit``'s ``task`` prompt, its beginning dropped beyond ``max_tokens``."""
    ids = encoder([render_prompt(commit, task, template)])[0]
    if max_tokens is not None and len(ids) > max_tokens:
        return ids[-max_tokens:]
    return ids
