"""The export rule: write the formats the ``export`` config turns on into results/{model}/export/.

Layout (each part only when its setting is on; SERVING.md and export.json always)::

    export/
      merged/                      export.merged: safetensors, config, tokenizer, generation config
      gguf/{model}-{dtype}.gguf    export.gguf.enabled: the merged model for llama.cpp
      gguf/{model}-base-{dtype}.gguf, gguf/{model}-lora.gguf
                                   export.gguf.lora: the base and the adapter as a GGUF LoRA
      Modelfile                    export.ollama: Ollama, FROM the merged GGUF
      SERVING.md                   the commands for transformers, vLLM, llama.cpp and Ollama
      export.json                  what was written, from which adapter, with which settings

The whole directory is written beside its final place and renamed into it (repotune.atomic), so
an interrupted export leaves no half-written model.
"""

import json
import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

from repotune.atomic import atomic_path
from repotune.errors import InputError
from repotune.inference.record import RunRecord

log = logging.getLogger(__name__)
GGUF_DTYPES = ("f16", "f32")


@dataclass(frozen=True)
class ExportSettings:
    """The ``export`` config section (defaults in config/schema.yaml)."""

    merged: bool
    gguf: bool
    gguf_dtype: str
    gguf_lora: bool
    ollama: bool

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> "ExportSettings":
        settings = cls(
            merged=section["merged"],
            gguf=section["gguf"]["enabled"],
            gguf_dtype=section["gguf"]["dtype"],
            gguf_lora=section["gguf"]["lora"],
            ollama=section["ollama"],
        )
        if settings.ollama and not settings.gguf:
            raise InputError(
                "config export.ollama",
                "needs the GGUF model (Ollama runs GGUF files)",
                "set export.gguf.enabled: true as well, or export.ollama: false",
            )
        return settings


@dataclass(frozen=True)
class ExportRequest:
    """Inputs and output of one model's export."""

    model: str
    adapter_dir: str
    tokenizer_dir: str
    shard_stats: str
    output_dir: str
    settings: ExportSettings


def export(request: ExportRequest) -> dict[str, Any]:
    """Write results/{model}/export/; return (and write as export.json) what it holds."""
    from repotune.export import gguf, merged, ollama, serving
    from repotune.shards.tokenizer import load_tokenizer

    settings = request.settings
    record = RunRecord.read(request.shard_stats)
    tokenizer = load_tokenizer(request.tokenizer_dir)
    name = request.model
    files = serving.ServedFiles(None, None, None, None, None)
    with atomic_path(request.output_dir) as temporary:
        temporary.mkdir()
        if settings.merged or settings.gguf:
            model = merged.merge(request.adapter_dir)
            if settings.merged:
                merged.save_merged(model, tokenizer, temporary / "merged")
                files = replace(files, merged="merged")
                log.info("merged model written (%s)", model.dtype)
            if settings.gguf:
                (temporary / "gguf").mkdir()
                dtype = settings.gguf_dtype
                model_file = f"gguf/{name}-{dtype}.gguf"
                gguf.write_model(model, tokenizer, temporary / model_file, name, dtype)
                files = replace(files, gguf_model=model_file)
                if settings.gguf_lora:
                    base_file, lora_file = (
                        f"gguf/{name}-base-{dtype}.gguf",
                        f"gguf/{name}-lora.gguf",
                    )
                    base = merged.lora_base(request.adapter_dir)
                    gguf.write_model(base, tokenizer, temporary / base_file, f"{name}-base", dtype)
                    gguf.write_lora(
                        request.adapter_dir, base.config.to_dict(), temporary / lora_file, name
                    )
                    files = replace(files, gguf_base=base_file, gguf_lora=lora_file)
                log.info("GGUF written: %s", files)
            if settings.ollama and files.gguf_model:
                text = ollama.modelfile(files.gguf_model, record)
                (temporary / "Modelfile").write_text(text, encoding="utf-8")
                files = replace(files, modelfile="Modelfile")
        markdown = serving.serving_markdown(name, record, files, request.output_dir)
        (temporary / "SERVING.md").write_text(markdown, encoding="utf-8")
        summary = {
            "model": name,
            "adapter": request.adapter_dir,
            "template": record.template_name,
            "context": record.seq_len,
            "stops": list(record.stops),
            "files": {key: value for key, value in asdict(files).items() if value},
            "settings": asdict(settings),
        }
        (temporary / "export.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    return summary
