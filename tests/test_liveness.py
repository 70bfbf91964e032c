"""Every result-shaping config key changes what the stage that reads it writes (issue 25).

A key that changes nothing is a dead knob: switched off inside the trainer, the recency
curriculum (``train.weighted_sampling``) passed every other test. Here each key of
config/schema.yaml that is a rule param (not ``x-bookkeeping``), and each key of a ``models:``
entry, is changed from the fixture's value to another valid one; the stages whose params or
inputs that changes (as rules/*.smk wire them) run again on the fixture, and one of them must
write something else than with the fixture's value (tests/liveness.py says how runs are made
and compared). A new key is covered without a new test: its other value comes from the schema
(enum, type, bounds) or, where the schema cannot say, from :data:`ALTERNATIVES`.
"""

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from repotune.errors import InputError
from repotune.evaluate import sandbox
from repotune.shards.fim import PLAIN_FIM
from repotune.train import trainer
from repotune.train.data import BlockOrder
from testdata.curated import save_hub_like_tokenizer
from testdata.pretrain import TINY_SIZE
from testdata.workflow import data_repository
from tests.liveness import (
    BEHAVIOUR_TESTS,
    RUN_ORDER,
    STAGES,
    Config,
    Echo,
    Key,
    NoAlternative,
    Outcome,
    Ran,
    Where,
    checked,
    describe,
    differences,
    fixture_repository,
    outcome_differences,
    plan,
    readers,
    result_keys,
    run_stage,
    schema_alternative,
    value_at,
    wiring,
    with_value,
)


class _Unset:
    """A key the config does not set (a model entry's ``tokenize:``, say)."""

    def __repr__(self) -> str:
        return "unset"


MISSING = _Unset()


@dataclass
class Fixture:
    """The fixture's config, its default run of every stage and what each wrote, and the
    facts that differ between two default runs (timings), which are never compared."""

    root: Path
    config: Config
    default: dict[str, Ran] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    volatile: dict[str, set[Where]] = field(default_factory=dict)
    bases: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    runs: int = 0

    def workdir(self, label: str) -> Path:
        self.runs += 1
        return self.root / "runs" / f"{self.runs:03d}-{label}"

    def run_base(
        self,
        stage: str,
        config: Config,
        label: str,
        patches: Callable[[], contextlib.AbstractContextManager[Any]] | None,
    ) -> Outcome:
        """``stage`` run with ``config``, a key's base other than the fixture's: once for the
        keys that share it (those of the pretrain size the fixture does not choose), unless
        patched."""
        memo = (stage, json.dumps(config, sort_keys=True))
        if patches is not None or memo not in self.bases:
            ran = run_stage(stage, config, self.workdir(label), self.default, patches)
            if patches is not None:
                return ran
            self.bases[memo] = ran
        return self.bases[memo]


# The base pretrain_base builds on the fixture: tiny (under a second), on four files of the
# standard library's curses package (19 kB of real code: text enough for a vocabulary over
# the schema's smallest), one of them for validation, evaluated on two blocks so that "0 =
# all" differs. The cuda size differs in its schedule only, so choosing it changes the base.
PRETRAIN_SIZE = {**TINY_SIZE, "bpe_vocab_size": 600, "eval_max_blocks": 2}
PRETRAIN = {
    "corpus": {"include": ["{stdlib}/curses/*.py"], "exclude": ["{stdlib}/curses/panel.py"]},
    "sizes": {
        "cpu": PRETRAIN_SIZE,
        "cuda": {**PRETRAIN_SIZE, "max_steps": 4, "eval_interval": 2},
    },
}


def fixture_config(root: Path) -> Config:
    """Small, and with every switch on that other keys only matter under (sampling, GGUF):
    sizes and thresholds at the fixture's scale, so that the schema's next value matters."""
    return {
        "repo": str(root / "repo"),
        "models": [
            {
                "preset": "tiny",  # its train: keys the config leaves at their default apply
                "name": "tiny",
                "family": "gpt2",
                "base": None,
                "tokenizer": "train-bpe",
                "template": "plain",
                "bpe_vocab_size": 1024,
                # n_embd 64: at 32, nf4 on a CPU fails inside bitsandbytes' 4-bit matmul
                "architecture": {"n_layer": 1, "n_head": 2, "n_embd": 64, "n_positions": 64},
            }
        ],
        "curate": {
            "filters": {"max_patch_bytes": 4000},  # the word list's patch is oversized
            "split": {"test_size": 3, "validation_size": 3},
            "recency_half_life_days": 0.25,  # commits an hour apart: weights 1 down to 0.05
        },
        "tokenize": {"seq_len": 64, "shard_tokens": 2048},
        "train": {
            "batch_size": 2,
            "max_steps": 4,
            "max_epochs": 2,
            "warmup_ratio": 0.5,
            "eval_interval": 0,
            "eval_max_blocks": 2,
        },
        "evaluate": {
            "generation": {"do_sample": True},
            "commit_messages": {"samples": 2, "max_new_tokens": 6},
            "code_changes": {"samples": 2, "max_new_tokens": 6},
            "fim": {"samples": 2, "max_new_tokens": 6},
            "behaviour": {"tests": str(root / "behaviour.yaml"), "max_new_tokens": 6},
            "examples": 1,
        },
        "export": {"gguf": {"enabled": True}},
        "pretrain": PRETRAIN,
    }


@dataclass(frozen=True)
class Alt:
    """How to vary a key the schema cannot vary by itself, or cannot vary visibly on the
    fixture: the other ``value``, ``base`` (other keys' values under which the key matters,
    set in both runs) and ``patches``, a context both runs happen in. A value may be a
    function of the fixture."""

    value: Any
    base: dict[str, Any] = field(default_factory=dict)
    patches: Callable[[], contextlib.AbstractContextManager[Any]] | None = None


def given(value: Any, fixture: "Fixture") -> Any:
    return value(fixture) if callable(value) else value


def other_repository(fixture: Fixture) -> str:
    path = fixture.root / "other-repo"
    if not path.exists():
        data_repository(path)
    return str(path)


def local_base(fixture: Fixture) -> str:
    """A GPT-2 saved where a hub model would be cached: a local base path."""
    path = fixture.root / "local-base"
    if not path.exists():
        tokenizer = AutoTokenizer.from_pretrained(
            fixture.default["tokenize"].workdir / "results/tiny/tokenizer"
        )
        torch.manual_seed(0)
        config = GPT2Config(
            vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=64
        )
        GPT2LMHeadModel(config).save_pretrained(path)
    return str(path)


def local_tokenizer(fixture: Fixture) -> str:
    """A hub-like tokenizer with the plain template's FIM markers as tokens. (Without them
    each marker is a dozen tokens of text: with 64-token blocks no FIM document fits, and the
    files become whole-file documents only.)"""
    path = fixture.root / "local-tokenizer"
    if not path.exists():
        save_hub_like_tokenizer(path, ("<|endoftext|>", *PLAIN_FIM.markers))
    return str(path)


REMOTE_CODE = """
from transformers import GPT2LMHeadModel


class HalvedGPT2(GPT2LMHeadModel):
    \"\"\"GPT-2 with its logits halved: code that runs only with trust_remote_code.\"\"\"

    def forward(self, *args, **kwargs):
        output = super().forward(*args, **kwargs)
        output.logits = output.logits * 0.5
        return output
"""


def remote_code_base(fixture: Fixture) -> str:
    """:func:`local_base` with code of its own, as hub models with ``auto_map`` ship it:
    without trust_remote_code transformers loads its own GPT-2 class instead."""
    path = fixture.root / "remote-code-base"
    if not path.exists():
        shutil.copytree(local_base(fixture), path)
        (path / "halved_gpt2.py").write_text(REMOTE_CODE, encoding="utf-8")
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        config["auto_map"] = {"AutoModelForCausalLM": "halved_gpt2.HalvedGPT2"}
        (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return str(path)


def under_the_largest_corpus_file(fixture: Fixture) -> int:
    """A size limit that leaves the largest file of the pretraining corpus out."""
    files = fixture.outcomes["pretrain_base"].facts["manifest"]["corpus"]["files"]
    return max(item["bytes"] for item in files) - 1


def all_but_one_for_test(fixture: Fixture) -> int:
    """A test split that leaves one curated commit: too few for train and validation."""
    return fixture.outcomes["curate"].facts["report"]["kept_commits"] - 1


@contextlib.contextmanager
def without_bubblewrap() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sandbox, "bubblewrap_available", lambda: False)
        yield


# Keys whose other value the schema cannot give (strings, mappings) or that matter only under
# another setting; keep it short: a key the schema can vary belongs here only when the fixture
# cannot show its effect otherwise.
ALTERNATIVES: dict[str, Alt] = {
    "repo": Alt(other_repository),
    # As long as "tiny": the GGUF files hold the name, and then only its bytes differ.
    "models[].name": Alt("mini"),
    "models[].preset": Alt("gpt2"),  # the fixture entry sets the preset's model keys itself
    "models[].family": Alt("phi"),  # LoRA targets by family: phi's names are not GPT-2's
    "models[].base": Alt(local_base),
    "models[].tokenizer": Alt(local_tokenizer),
    "models[].tokenize": Alt({"seed": 1}),
    "models[].train": Alt({"seed": 1}),
    "models[].architecture.n_embd": Alt(32),  # the schema's 1 does not divide into n_head
    "models[].architecture.n_positions": Alt(128),  # the schema's 1 is shorter than a block
    "train.lora_targets": Alt(["c_attn"]),
    "train.warmup_steps_min": Alt(3),  # above round(warmup_ratio * steps) = 2
    "train.min_epochs": Alt(3),  # above the 2 epochs max_epochs allows
    "train.max_steps": Alt(2),  # the schema's 0 lifts the cap: 146 steps
    # Code of the base's own runs only when trusted.
    "train.trust_remote_code": Alt(True, base={"models[].base": remote_code_base}),
    "curate.filters.max_patch_bytes": Alt(20000),  # keeps the word list's (the schema's 1: none)
    # Only when too few commits survive to split.
    "curate.split.allow_empty_validation": Alt(
        False, base={"curate.split.test_size": all_but_one_for_test}
    ),
    "evaluate.device": Alt("cpu" if torch.cuda.is_available() else "cuda"),
    # Only where bubblewrap cannot run python tests the config allows.
    "evaluate.behaviour.allow_unisolated_execution": Alt(
        True,
        base={"evaluate.behaviour.allow_code_execution": True},
        patches=without_bubblewrap,
    ),
    "pretrain.corpus.include": Alt(["{stdlib}/curses/[ah]*.py"]),  # ascii.py and has_key.py
    "pretrain.corpus.max_file_bytes": Alt(under_the_largest_corpus_file),  # 1: no file at all
    # Two or three files of four (none holds half the bytes); at the schema's next value,
    # 0.001, validation keeps the one file it always takes, as at the default, 0.01.
    "pretrain.validation_share": Alt(0.5),
    **{
        f"pretrain.sizes.{size}.{name}": alt
        for size in ("cpu", "cuda")
        for name, alt in {
            "n_embd": Alt(16),  # the schema's 1 does not divide into n_head
            "seq_len": Alt(32),  # at the schema's 16 a file's header leaves a block no room
        }.items()
    },
}

# Keys that shape a result only under other keys' values, by how their path starts: those
# values are set in both runs (as an Alt's base).
UNDER: dict[str, dict[str, Any]] = {
    "pretrain.sizes.cuda.": {"pretrain.size": "cuda"},  # the fixture's size is cpu
}

# Keys that change nothing a stage writes, each with why; strict: once one does, this fails
# and the entry goes.
INERT: dict[str, str] = {
    "models[].name": "names the {model} folder and the model in reports: a label",
    "tokenize.batch_commits": "commits per tokenizer call; the shards do not depend on it",
    "evaluate.perplexity.batch_size": "blocks per forward pass; the losses do not depend on it",
}


def keys() -> list[Any]:
    return [
        pytest.param(
            key,
            marks=pytest.mark.xfail(
                strict=True, raises=pytest.fail.Exception, reason=INERT[key.path]
            ),
        )
        if key.path in INERT
        else key
        for key in result_keys()
    ]


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    """The fixture repository, run once through every stage with the fixture config, and once
    more to tell apart what varies by itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains and decodes faster on one thread
    root = tmp_path_factory.mktemp("liveness")
    fixture_repository(root / "repo")
    (root / "behaviour.yaml").write_text(BEHAVIOUR_TESTS, encoding="utf-8")
    fixture = Fixture(root=root, config=checked(fixture_config(root)))
    for stage in RUN_ORDER:
        if not STAGES[stage].enabled(fixture.config):
            continue
        workdir = fixture.workdir(stage)
        first = run_stage(stage, fixture.config, workdir, fixture.default)
        assert first.error is None, f"{stage} refused the fixture: {first.error}"
        second = run_stage(
            stage, fixture.config, fixture.workdir(f"{stage}-again"), fixture.default
        )
        fixture.default[stage] = Ran(workdir, fixture.config)
        fixture.outcomes[stage] = first
        varied = set(outcome_differences(first, second, set(), None))
        fixture.volatile[stage] = varied | STAGES[stage].records
    yield fixture
    torch.set_num_threads(threads)


def other_value(fixture: Fixture, key: Key, config: Config) -> tuple[Any, Any]:
    """``key``'s value in ``config`` (MISSING when unset) and the other value it is given."""
    try:
        current = value_at(config, key.path)
    except KeyError:
        current = MISSING
    alt = ALTERNATIVES.get(key.path)
    if alt is not None:
        return current, given(alt.value, fixture)
    try:
        return current, schema_alternative(key.schema, current)
    except NoAlternative:
        pytest.fail(
            f"{key.path}: the schema gives no other value than {current!r}: add one to "
            "ALTERNATIVES in tests/test_liveness.py"
        )


def vary(fixture: Fixture, key: Key) -> tuple[Config, Config, Any, Any, Alt | None]:
    """The config the key is changed in, the changed config, and the key's two values."""
    alt = ALTERNATIVES.get(key.path)
    settings = {
        path: setting
        for start, under in UNDER.items()
        if key.path.startswith(start)
        for path, setting in under.items()
    }
    base = fixture.config
    for path, setting in (settings | (alt.base if alt is not None else {})).items():
        base = checked(with_value(base, path, given(setting, fixture)))
    current, value = other_value(fixture, key, base)
    try:
        variant = checked(with_value(base, key.path, value))
    except InputError as error:
        pytest.fail(f"{key.path}: {value!r} is refused ({error}): fix its ALTERNATIVES entry")
    return base, variant, current, value, alt


def dead(
    fixture: Fixture,
    key: Key,
    patches: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> str | None:
    """Why ``key`` is a dead knob, or None when changing it changes what a stage that reads
    it writes. ``patches``: a context both runs happen in (the default run is then redone)."""
    base, variant, current, value, alt = vary(fixture, key)
    stages = readers(base, variant)
    if not stages:
        return (
            f"{key.path}: no rule reads it (no params or inputs change with it): mark it "
            "x-bookkeeping in config/schema.yaml or pass it to the rule that uses it"
        )
    patches = patches or (alt.patches if alt is not None else None)
    echo = Echo(key.path.rsplit(".", 1)[-1], current, value) if current is not MISSING else None
    for stage in stages:
        if base is fixture.config and patches is None:
            before = fixture.outcomes[stage]
        else:
            before = fixture.run_base(stage, base, f"{stage}-{key.path}-base", patches)
        workdir = fixture.workdir(f"{stage}-{key.path}")
        after = run_stage(stage, variant, workdir, fixture.default, patches)
        changed = outcome_differences(before, after, fixture.volatile[stage], echo)
        if changed:
            shown = after.error or ", ".join(map(describe, changed[:4]))
            print(f"{key.path}: {stage} wrote otherwise: {shown}")
            return None
    return (
        f"{key.path}: changing it from {current!r} to {value!r} changes nothing that "
        f"{', '.join(stages)} write{'s' if len(stages) == 1 else ''} (a dead knob?)"
    )


@pytest.mark.parametrize("key", keys(), ids=lambda key: key.path)
def test_key_changes_what_its_stage_writes(fixture: Fixture, key: Key) -> None:
    failure = dead(fixture, key)
    if failure is not None:
        pytest.fail(failure)


@contextlib.contextmanager
def curriculum_off() -> Iterator[None]:
    """The trainer with the recency curriculum switched off whatever the config says."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            trainer, "BlockOrder", lambda weights, seed, weighted: BlockOrder(weights, seed, False)
        )
        yield


def test_a_dead_knob_is_named(fixture: Fixture) -> None:
    """Issue 25's dead knob: with ``BlockOrder(..., weighted=False)`` in the trainer, every
    other test passed; here the key is named."""
    (key,) = [key for key in result_keys() if key.path == "train.weighted_sampling"]
    assert dead(fixture, key) is None
    assert dead(fixture, key, curriculum_off) == (
        "train.weighted_sampling: changing it from True to False changes nothing that train "
        "writes (a dead knob?)"
    )


def layout(config: Config) -> dict[str, list[str] | None]:
    """Which stages run and which inputs each takes."""
    plans = {stage: plan(stage, config) for stage in STAGES}
    return {stage: None if wired is None else sorted(wired[1]) for stage, wired in plans.items()}


def test_stages_are_wired_as_the_workflow_wires_them(fixture: Fixture, tmp_path: Path) -> None:
    """The test's notion of which stage reads a key is the workflow's: STAGES gives each stage
    the params, inputs and outputs the Snakefile gives its rule (code hashes aside), for the
    fixture config, for one with every key at its other value (a rule that passes a constant
    in a key's place differs there) and for one with every stage and input switched off that
    a key can switch off."""
    changed, switched = fixture.config, fixture.config
    for key in result_keys():
        _, value = other_value(fixture, key, changed)
        with contextlib.suppress(InputError):  # a value refused beside the others: left out
            candidate = checked(with_value(changed, key.path, value))
            if layout(candidate) == layout(fixture.config):
                changed = candidate
            else:
                switched = checked(with_value(switched, key.path, value))
    configs = (fixture.config, changed, switched)
    files = []
    for number, config in enumerate(configs):
        files.append(tmp_path / f"config{number}.yaml")
        files[-1].write_text(yaml.safe_dump(config), encoding="utf-8")
    script = Path(__file__).with_name("workflow_params.py")
    listing = subprocess.run(
        [sys.executable, str(script), *map(str, files)],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr[-2000:]
    for config, rules in zip(configs, json.loads(listing.stdout), strict=True):
        for stage, rule in STAGES.items():
            if rule.enabled(config):
                workflow = rules[stage]
                workflow["params"].pop("code")
                mirrored = json.loads(json.dumps(wiring(stage, config)))
                assert mirrored == workflow, (
                    f"rule {stage} is wired otherwise than STAGES in tests/liveness.py says: "
                    + ", ".join(map(describe, differences(mirrored, workflow, set(), None)))
                )
