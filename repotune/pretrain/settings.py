"""The pretrain_base rule's settings and plan: the ``pretrain:`` section narrowed to one size,
the trainer's settings, the model entry it builds, and the cache key of corpus and settings.

Apart from :mod:`repotune.pretrain.stage` because the workflow computes the key when it plans
(rules/common.smk): this module imports neither torch nor transformers.
"""

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from repotune.config import bookkeeping_keys, result_settings
from repotune.models import section_defaults
from repotune.pretrain.corpus import Corpus, corpus_key, list_corpus

NAME = "pretrained"
MODEL = "model"
MANIFEST = "model.json"
FORMAT = 1
"""Version of the cache entry's layout and of what the key covers."""


@dataclass(frozen=True)
class DocumentSettings:
    """What shapes the documents (repotune.shards.files.FileSettings)."""

    seq_len: int
    seed: int
    fim_rate: float
    fim_spm_rate: float


@dataclass(frozen=True)
class PretrainSettings:
    """The ``pretrain:`` section narrowed to the chosen size, and the trainer's settings."""

    corpus: dict[str, Any]
    size_name: str
    size: dict[str, Any]
    validation_share: float
    seed: int
    fim_rate: float
    fim_spm_rate: float
    train: dict[str, Any]

    @classmethod
    def from_config(
        cls, pretrain: Mapping[str, Any], config_train: Mapping[str, Any]
    ) -> "PretrainSettings":
        """From the resolved ``pretrain:`` and ``train:`` sections: the trainer gets the
        schema's train defaults, the size's schedule, and the bookkeeping keys (memory, GPUs,
        logging and checkpoint intervals) of the config's ``train:``."""
        size = dict(pretrain["sizes"][pretrain["size"]])
        tokens = size["max_steps"] * size["batch_size"] * size["seq_len"]
        schedule = {
            "batch_size": size["batch_size"],
            "max_steps": size["max_steps"],
            "learning_rate": size["learning_rate"],
            "warmup_steps_min": size["warmup_steps"],
            "warmup_steps_max": size["warmup_steps"],
            "weight_decay": size["weight_decay"],
            "eval_interval": size["eval_interval"],
            "eval_max_blocks": size["eval_max_blocks"],
            "seed": pretrain["seed"],
            "target_tokens": tokens,
            "min_epochs": 1,
            "max_epochs": size["max_steps"],  # never binds: max_steps ends the run
            "weighted_sampling": False,
            "quantization": "none",
        }
        run = {key: config_train[key] for key in bookkeeping_keys("train")}
        return cls(
            corpus=dict(pretrain["corpus"]),
            size_name=pretrain["size"],
            size=size,
            validation_share=pretrain["validation_share"],
            seed=pretrain["seed"],
            fim_rate=pretrain["fim_rate"],
            fim_spm_rate=pretrain["fim_spm_rate"],
            train={**section_defaults("train"), **schedule, **run},
        )

    def shaping(self) -> dict[str, Any]:
        """What shapes the model (the key's settings part): no size name, no bookkeeping."""
        facts = asdict(self)
        facts.pop("size_name")
        facts["train"] = result_settings("train", self.train)
        return {"format": FORMAT, **facts}

    @property
    def documents(self) -> DocumentSettings:
        return DocumentSettings(self.size["seq_len"], self.seed, self.fim_rate, self.fim_spm_rate)

    def model_entry(self) -> dict[str, Any]:
        """The model entry the trainer builds: a GPT-2 of the size's shape, our BPE."""
        size = self.size
        return {
            "name": NAME,
            "family": "gpt2",
            "base": None,
            "tokenizer": "train-bpe",
            "template": "plain",
            "bpe_vocab_size": size["bpe_vocab_size"],
            "architecture": {
                "n_layer": size["n_layer"],
                "n_head": size["n_head"],
                "n_embd": size["n_embd"],
                "n_positions": size["seq_len"],
            },
        }


def plan(
    settings: PretrainSettings,
    repo: str | None,
    places: Mapping[str, str],
    blob_cache: str | None = None,
) -> tuple[Corpus, str]:
    """The corpus and its key (what the rule's params hold, so a changed corpus reruns it)."""
    corpus = list_corpus(settings.corpus, repo, places, blob_cache)
    return corpus, corpus_key(corpus, settings.shaping())
