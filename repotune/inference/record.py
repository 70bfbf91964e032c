"""The run record: what a model was trained with, written once by tokenize, read by every user.

Evaluation, ``repotune suggest``/``complete`` and export's SERVING.md must ask the model in
exactly the layout it learnt. That layout is decided once, by the tokenize stage, and recorded
in ``results/{model}/shards/stats.json`` under :data:`STATS_KEY` by :func:`run_record`; every
reader goes through :meth:`RunRecord.read`, never through stats.json's other keys.

* ``template``: the commit template the documents were rendered with
  (:mod:`repotune.shards.render`), and ``template_layout``, the digest of how it laid them out
  (:func:`repotune.shards.render.layout`): a record whose layout is not the installed
  template's was written by another repotune, and is refused;
* ``seq_len``: the training block; ``max_prompt_tokens`` = ``seq_len - 1``, the longest prompt
  (a training document holds at most a block less its EOS, so the model never saw a longer
  one);
* ``fim_format``: the fill-in-the-middle format the model is asked in, or None (a plain
  continuation of the code before the cursor): the format of the run's file documents when
  it trained on files, else the template's native format when the tokenizer carries its
  tokens (a code model's own pre-training), else None; ``fim_special`` says whether its markers
  are single special tokens (a hub tokenizer without them reads them as text, as training did);
* ``stops``: the strings that begin a new document
  (:func:`repotune.inference.stops.document_stops`);
* ``eos_token``: the tokenizer's end of text.

This module imports nothing heavy: the command line reads the record before loading a model.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repotune.errors import InputError
from repotune.inference.stops import document_stops
from repotune.shards.fim import FIM_FORMATS, FimFormat, choose_fim_format
from repotune.shards.render import TEMPLATES, Template, get_template, layout

STATS_KEY = "inference"


@dataclass(frozen=True)
class RunRecord:
    """What a run trained with, as inference needs it (see the module docstring)."""

    template_name: str
    seq_len: int
    max_prompt_tokens: int
    fim_name: str | None
    fim_special: bool
    stops: tuple[str, ...]
    eos_token: str

    @property
    def template(self) -> Template:
        """The commit template of the run's documents."""
        return get_template(self.template_name)

    @property
    def fim(self) -> FimFormat | None:
        """The FIM format the model is asked in; None: a plain continuation of the prefix."""
        return FIM_FORMATS[self.fim_name] if self.fim_name else None

    def to_json(self) -> dict[str, Any]:
        """stats.json's ``inference`` entry."""
        return {
            "template": self.template_name,
            "template_layout": layout(self.template),
            "seq_len": self.seq_len,
            "max_prompt_tokens": self.max_prompt_tokens,
            "fim_format": self.fim_name,
            "fim_special": self.fim_special,
            "stops": list(self.stops),
            "eos_token": self.eos_token,
        }

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> "RunRecord":
        """The record of a stats.json ``inference`` entry (KeyError/ValueError when bad)."""
        record = cls(
            template_name=str(entry["template"]),
            seq_len=int(entry["seq_len"]),
            max_prompt_tokens=int(entry["max_prompt_tokens"]),
            fim_name=entry["fim_format"],
            fim_special=bool(entry["fim_special"]),
            stops=tuple(entry["stops"]),
            eos_token=str(entry["eos_token"]),
        )
        if record.template_name not in TEMPLATES or (
            record.fim_name is not None and record.fim_name not in FIM_FORMATS
        ):
            raise ValueError(f"unknown template or FIM format in {dict(entry)}")
        if entry.get("template_layout") != layout(record.template):
            raise ValueError(
                f"its documents were laid out otherwise than this repotune's template "
                f"'{record.template_name}' lays them out"
            )
        return record

    @classmethod
    def read(cls, stats_path: str | Path) -> "RunRecord":
        """The record tokenize wrote into ``stats_path``; one-line error when there is none."""
        path = Path(stats_path)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))[STATS_KEY]
            return cls.from_json(entry)
        except FileNotFoundError:
            raise InputError(
                f"tokenize statistics '{path}'", "do not exist", "rerun the tokenize rule"
            ) from None
        except (OSError, KeyError, TypeError, ValueError) as error:
            raise InputError(
                f"tokenize statistics '{path}'",
                f"hold no valid '{STATS_KEY}' record ({type(error).__name__}: {error})",
                "rerun the tokenize rule (an older repotune wrote this run)",
            ) from None


def run_record(template: Template, tokenizer: Any, seq_len: int, fim_files: bool) -> RunRecord:
    """The record of a run whose documents use ``template`` and ``tokenizer`` in blocks of
    ``seq_len`` tokens; ``fim_files``: whether its training split holds file (FIM) documents.

    The tokenize stage calls this once and writes the result into stats.json.
    """
    from repotune.shards.tokenizer import special_tokens  # transformers: load on use

    specials = special_tokens(tokenizer)
    chosen = choose_fim_format(template.name, specials)
    special = set(chosen.markers) <= specials
    fim = chosen if fim_files or special else None
    return RunRecord(
        template_name=template.name,
        seq_len=seq_len,
        max_prompt_tokens=seq_len - 1,
        fim_name=fim.name if fim else None,
        fim_special=special,
        stops=document_stops(template, fim, tokenizer.eos_token),
        eos_token=tokenizer.eos_token,
    )
