"""An Ollama ``Modelfile``: the merged GGUF with our training prompt as its template.

Ollama fills ``{{ .Prompt }}`` with what the user sends; the template wraps it in the markers
the model was trained with in the ``change_to_message`` direction (the diff between the
opening marker and the message marker), so ``ollama run`` with a diff answers with a commit
message. The run's stop strings (its record, :mod:`repotune.inference.record`) are Ollama's, as
in evaluation: a model that writes one has started a new document. Greedy decoding by default,
as evaluation scored it.
"""

from repotune.inference.record import RunRecord


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def modelfile(gguf_name: str, record: RunRecord) -> str:
    """The Modelfile text; ``gguf_name`` is the model's GGUF path relative to the Modelfile."""
    template = record.template
    lines = [
        "# Ollama: `ollama create NAME -f Modelfile`, then pipe a diff to `ollama run NAME`.",
        f"# The prompt is laid out as in training (template '{template.name}', change_to_message).",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template.c2m_open}{{{{ .Prompt }}}}{template.c2m_sep}"""',
        *(f"PARAMETER stop {_quoted(stop)}" for stop in record.stops),
        "PARAMETER temperature 0",
        f"PARAMETER num_ctx {record.seq_len}",
    ]
    return "\n".join(lines) + "\n"
