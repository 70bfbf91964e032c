"""SERVING.md: the exact commands to run the exported model in each engine.

Written for the files this export holds (merged model, GGUF, Modelfile), with the prompt
formats spelled out from the run's record (:mod:`repotune.inference.record`): every engine gets
the same text training rendered, the same prompt budget and the same stop strings evaluation,
``repotune suggest`` and ``repotune complete`` use.
"""

import json
from dataclasses import dataclass

from repotune.inference.record import RunRecord
from repotune.shards.fim import fim_prompt


@dataclass(frozen=True)
class ServedFiles:
    """Paths, relative to the export directory, of what was written (None: not exported)."""

    merged: str | None
    gguf_model: str | None
    gguf_base: str | None
    gguf_lora: str | None
    modelfile: str | None


def _python_literal(text: str) -> str:
    return json.dumps(text)


def _fim_section(record: RunRecord) -> list[str]:
    """How to ask for code at a cursor: the run's FIM prompt, or a plain continuation."""
    fmt = record.fim
    if fmt is None:
        return [
            "The model was not trained to fill in the middle: for code, send the text before "
            "the cursor and let it continue (EOS alone for an empty file).",
            "",
        ]
    how = "single special tokens" if record.fim_special else "plain text, as training wrote them"
    return [
        f"For code at a cursor (fill in the middle), the prompt is, with the markers as {how}:",
        "",
        "```text",
        fim_prompt("PREFIX", "SUFFIX", fmt, path="PATH"),
        "```",
        "",
        "where `PATH` is the file's path in the repository, `PREFIX` the text before the cursor "
        "and `SUFFIX` the text after it; the answer is the middle. `repotune complete` builds "
        "this prompt exactly (whole lines dropped from the prefix's start and the suffix's end "
        "beyond the budget).",
        "",
    ]


def serving_markdown(model: str, record: RunRecord, files: ServedFiles, export_dir: str) -> str:
    """The SERVING.md of one model's export."""
    template, context = record.template, record.seq_len
    prompt = f"{template.c2m_open}DIFF{template.c2m_sep}"
    stop_json = json.dumps(list(record.stops))
    out = [
        f"# Serving `{model}`",
        "",
        f"Files are relative to `{export_dir}/`. The model answers a diff with a commit message "
        f"when prompted as in training (template `{template.name}`, change to message):",
        "",
        "```text",
        prompt,
        "```",
        "",
        "where `DIFF` is the change laid out as `git diff` prints it, without the `index` "
        "lines (training never saw them): `git diff --cached | grep -v '^index '`. "
        "`repotune suggest` builds this prompt exactly (curate filters, per-file headers, the "
        f"prompt budget of {record.max_prompt_tokens} tokens, a longer change cut as training "
        "cut it) and is the reference. Stop at EOS or at any of "
        f"`{stop_json}`; greedy decoding is what evaluation scored.",
        "",
        *_fim_section(record),
    ]
    # $(...) drops trailing newlines; the x keeps the marker's newline, then goes.
    diff_prompt = (
        f"prompt=$(printf '%b' {_shell(template.c2m_open)}; git diff --cached | grep -v '^index '; "
        f"printf '%b' {_shell(template.c2m_sep + 'x')}); prompt=${{prompt%x}}"
    )
    if files.merged:
        out += [
            "## transformers",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{export_dir}/{files.merged}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{export_dir}/{files.merged}")',
            f"prompt = {_python_literal(template.c2m_open)} + diff + "
            f"{_python_literal(template.c2m_sep)}",
            "ids = tokenizer(prompt, return_tensors='pt')",
            "out = model.generate(**ids, max_new_tokens=64, do_sample=False,",
            f"                     stop_strings={list(record.stops)!r}, tokenizer=tokenizer)",
            "print(tokenizer.decode(out[0, ids['input_ids'].shape[1]:], skip_special_tokens=True))",
            "```",
            "",
            "Base + adapter without merging: `PeftModel.from_pretrained(base, "
            f'"results/{model}/adapter")` (peft), as evaluation loads it.',
            "",
            "## vLLM",
            "",
            "```sh",
            f"vllm serve {export_dir}/{files.merged} --served-model-name {model} "
            f"--max-model-len {context}",
            f"{diff_prompt}",
            f'jq -n --arg p "$prompt" \'{{model: "{model}", prompt: $p, max_tokens: 64, '
            f"temperature: 0, stop: {stop_json}}}' \\",
            "  | curl -s localhost:8000/v1/completions -H 'Content-Type: application/json' -d @-",
            "```",
            "",
            "vLLM serves LoRA adapters for many architectures (`--enable-lora --lora-modules "
            f"{model}=results/{model}/adapter` on the base), but not for StarCoder2: serve "
            "`merged/` there.",
            "",
        ]
    if files.gguf_model:
        out += [
            "## llama.cpp (`llama-server`)",
            "",
            "```sh",
            f"llama-server -m {export_dir}/{files.gguf_model} --ctx-size {context} --port 8080",
            f"{diff_prompt}",
            'jq -n --arg p "$prompt" \'{prompt: $p, n_predict: 64, temperature: 0, '
            f"stop: {stop_json}}}' \\",
            "  | curl -s localhost:8080/completion -d @- | jq -r .content",
            "```",
            "",
        ]
        if files.gguf_lora and files.gguf_base:
            out += [
                "Or the adapter as a GGUF LoRA over the base model (the same model unmerged; a "
                "small file to swap):",
                "",
                "```sh",
                f"llama-server -m {export_dir}/{files.gguf_base} "
                f"--lora {export_dir}/{files.gguf_lora} --ctx-size {context}",
                "```",
                "",
            ]
    if files.modelfile:
        out += [
            "## Ollama",
            "",
            "```sh",
            f"cd {export_dir} && ollama create {model} -f {files.modelfile}",
            f"git diff --cached | grep -v '^index ' | ollama run {model}",
            "```",
            "",
            "The Modelfile's `TEMPLATE` wraps what you send in the training markers and sets "
            "the stop strings above.",
            "",
        ]
    if not (files.merged or files.gguf_model):
        out += [
            "No format was exported: turn on `export.merged`, `export.gguf.enabled` or "
            "`export.ollama` in config/config.yaml and run the workflow again.",
            "",
        ]
    return "\n".join(out)


def _shell(text: str) -> str:
    """``text`` as a single-quoted printf argument (newlines written as ``\\n``)."""
    return "'" + text.replace("'", "'\\''").replace("\n", "\\n") + "'"
