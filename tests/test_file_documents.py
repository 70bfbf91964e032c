"""The snapshot's files in the training split: whole-file and FIM documents, packed with the
commits (repotune.shards.files), and nothing from after the train cutoff."""

import contextlib
import itertools
import json
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import load_from_disk
from transformers import AutoTokenizer

from repotune.config import resolve_config
from repotune.curate.table import SPLITS
from repotune.errors import InputError
from repotune.inference.infill import Gap, infill_prompt
from repotune.inference.record import RunRecord
from repotune.models import resolve_model
from repotune.shards.files import FIM_MARKERS, file_documents
from repotune.shards.fim import (
    FIM_FORMATS,
    PLAIN_FIM,
    STARCODER2_FIM,
    fim_example,
    fim_prompt,
    is_fim,
    whole_file,
)
from repotune.shards.render import TEMPLATES, get_template, render, task_for
from repotune.shards.stage import TokenizeSettings, tokenize_stage
from repotune.shards.table import IGNORE
from repotune.shards.tokenizer import EOS, TextEncoder, load_tokenizer
from repotune.shards.torch_blocks import load_blocks
from repotune.snapshot.table import SNAPSHOT
from testdata.curated import (
    STARCODER2_SPECIAL,
    commit_row,
    file_change,
    save_hub_like_tokenizer,
    synthetic_rows,
    write_curated,
)
from testdata.workflow import FAST, planned_jobs, snakemake

SEQ_LEN = 128
MARKER_IDS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file|>")


def _settings(**overrides) -> TokenizeSettings:
    section = {"seq_len": SEQ_LEN, "shard_tokens": 16 * SEQ_LEN, **overrides}
    return TokenizeSettings.from_config(resolve_config({"tokenize": section})["tokenize"])


def _module(number: int, lines: int) -> str:
    return "".join(f"def f{number}_{i}(x):\n    return x * {i}\n" for i in range(lines))


FILES = {
    **{f"pkg/m{n}.py": _module(n, 3) for n in range(12)},
    "pkg/long.py": _module(99, 60),  # far longer than a block
}


def _write_snapshot(path: Path, files: dict[str, str]) -> Path:
    rows = [
        {"path": p, "language": "Python", "size": len(c), "content": c, "blob_sha": f"{n:040x}"}
        for n, (p, c) in enumerate(sorted(files.items()))
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SNAPSHOT), path)
    return path


TINY = {"preset": "tiny", "bpe_vocab_size": 600}


def _run(root: Path, settings: TokenizeSettings, model: dict = TINY) -> dict:
    rows = synthetic_rows(40, seed=1, split="train") + synthetic_rows(8, 2, "validation")
    out = root / "out"
    return tokenize_stage(
        splits=write_curated(root / "dataset", rows),
        tokenizer_dir=out / "tokenizer",
        shard_dirs={split: out / "shards" / split for split in SPLITS},
        stats_path=out / "shards" / "stats.json",
        settings=settings,
        model=resolve_model(model),
        threads=2,
        files=_write_snapshot(root / "snapshot" / "files.parquet", FILES),
    )


def _documents(root: Path, split: str = "train") -> list[list[int]]:
    """Every document of a split's blocks (runs of increasing positions, padding dropped)."""
    shards = load_from_disk(str(root / "out" / "shards" / split))
    documents = []
    for ids, positions, length in zip(
        shards["input_ids"], shards["position_ids"], shards["length"], strict=True
    ):
        ids, positions = np.asarray(ids[:length]), np.asarray(positions[:length])
        starts = [*np.flatnonzero(positions == 0).tolist(), length]
        documents += [ids[a:z].tolist() for a, z in itertools.pairwise(starts)]
    return documents


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    return root, _run(root, _settings())


def _tokenizer(root: Path):
    return load_tokenizer(str(root / "out" / "tokenizer"))


def test_plain_markers_are_single_special_ids_in_tokenizer_and_shards(stage):
    root, stats = stage
    tokenizer = _tokenizer(root)
    ids = [tokenizer.convert_tokens_to_ids(m) for m in MARKER_IDS]
    encoded = TextEncoder(tokenizer, PLAIN_FIM.markers)(["".join(MARKER_IDS)])[0]
    assert encoded == ids and tokenizer.unk_token_id not in ids
    in_train = {t for d in _documents(root) for t in d}
    assert set(ids) <= in_train
    assert stats["fim"] == {
        "format": "plain", "special": True, "files": True, "rate": 0.5, "spm_rate": 0.5,
    }  # fmt: skip


def test_complete_asks_in_the_format_a_trained_bpe_learnt(stage):
    root, _ = stage
    record = RunRecord.read(root / "out" / "shards" / "stats.json")
    assert record.fim == PLAIN_FIM and record.fim_special
    assert set(PLAIN_FIM.markers) <= set(record.stops)


@pytest.mark.parametrize(
    ("special", "template", "expected", "native"),
    [
        (("<|endoftext|>",), "plain", PLAIN_FIM, False),
        (STARCODER2_SPECIAL, "starcoder2", STARCODER2_FIM, True),
    ],
    ids=["gpt2-like", "starcoder2-like"],
)
def test_complete_asks_a_hub_model_in_the_format_its_shards_hold(
    tmp_path, special, template, expected, native
):
    """GPT-2 has no FIM tokens: its file documents spell the plain markers as text, and
    `repotune complete` asks it in that same text (from stats.json), not as a plain
    continuation; StarCoder2 is trained and asked with its own tokens."""
    hub = save_hub_like_tokenizer(tmp_path / "hub", special)
    model = {"name": "hub", "base": str(hub), "template": template}
    stats = _run(tmp_path, _settings(), model)
    assert stats["fim"]["format"] == expected.name and stats["fim"]["special"] is native
    tokenizer = _tokenizer(tmp_path)
    record = RunRecord.read(tmp_path / "out" / "shards" / "stats.json")
    assert record.fim == expected and record.fim_special is native
    text = "".join(
        tokenizer.backend_tokenizer.decode(d, skip_special_tokens=False)
        for d in _documents(tmp_path)
    )
    assert expected.middle in text and expected.file + "pkg/m1.py\n" in text
    gap = Gap("def f(x):\n", "    return x\n", "pkg/a.py")
    prompt = infill_prompt(gap, record, tokenizer, 10_000)
    question = fim_prompt(gap.prefix, gap.suffix, expected, path="pkg/a.py")
    assert list(prompt.ids) == TextEncoder(tokenizer, expected.markers)([question])[0]
    assert question.startswith(expected.file + "pkg/a.py\n" + expected.prefix)


@pytest.mark.parametrize(
    ("special", "template", "expected"),
    [(("<|endoftext|>",), "plain", None), (STARCODER2_SPECIAL, "starcoder2", STARCODER2_FIM)],
    ids=["gpt2-like", "starcoder2-like"],
)
def test_without_file_documents_a_model_is_asked_in_its_native_format_or_plainly(
    tmp_path, special, template, expected
):
    """No FIM documents: StarCoder2 was pre-trained on its FIM tokens and is asked with them;
    a tokenizer without FIM tokens continues the prefix."""
    hub = save_hub_like_tokenizer(tmp_path / "hub", special)
    model = {"name": "hub", "base": str(hub), "template": template}
    stats = _run(tmp_path, _settings(files=False), model)
    assert stats["fim"]["files"] is False
    record = RunRecord.read(tmp_path / "out" / "shards" / "stats.json")
    assert record.fim == expected


def test_each_file_document_is_its_fim_or_whole_file_text_then_eos(stage):
    root, stats = stage
    tokenizer = _tokenizer(root)
    settings = _settings()
    eos = tokenizer.eos_token_id
    decoded = {
        tokenizer.backend_tokenizer.decode(d, skip_special_tokens=False) for d in _documents(root)
    }
    for path, content in FILES.items():
        if path == "pkg/long.py":
            continue
        if is_fim(settings.seed, path, settings.fim_rate):
            example = fim_example(path, content, PLAIN_FIM, settings.seed, 0.5, path)
            text = example.prompt + example.middle
        else:
            text = whole_file(path, content, PLAIN_FIM)
        assert text + tokenizer.eos_token in decoded, path
    # every file document ends with the one EOS it holds
    file_id = tokenizer.convert_tokens_to_ids("<|file|>")
    file_documents = [d for d in _documents(root) if file_id in d]
    assert len(file_documents) == stats["splits"]["train"]["files"]["documents"]
    for document in file_documents:
        assert document[-1] == eos and eos not in document[:-1]
    counts = stats["splits"]["train"]["files"]
    assert counts["fim_psm"] + counts["fim_spm"] + counts["whole_file"] == counts["documents"]
    assert counts["fim_psm"] > 0 and counts["fim_spm"] > 0 and counts["whole_file"] > 0


def test_no_fim_document_answers_with_a_marker(stage):
    """After the middle marker comes code: a marker there (the file header of an SPM
    document, as once) teaches the model to answer with a stop string, i.e. nothing."""
    root, stats = stage
    tokenizer = _tokenizer(root)
    middle = tokenizer.convert_tokens_to_ids("<|fim_middle|>")
    specials = set(tokenizer.all_special_ids) | {
        tokenizer.convert_tokens_to_ids(m) for m in MARKER_IDS
    }
    fim = [d for d in _documents(root) if middle in d]
    counts = stats["splits"]["train"]["files"]
    assert len(fim) == counts["fim_psm"] + counts["fim_spm"] and counts["fim_spm"] > 0
    for document in fim:
        assert document.count(middle) == 1
        assert document[document.index(middle) + 1] not in specials, tokenizer.decode(document)


def test_labels_start_each_fim_document_afresh(stage):
    """The training batches (repotune.shards.torch_blocks.collate) mask the label of a FIM
    document's first token (its file header's marker), so it is never predicted from the
    document before it; the rest of the document, its EOS included, is learnt."""
    root, _ = stage
    tokenizer = _tokenizer(root)
    file_id = tokenizer.convert_tokens_to_ids("<|file|>")
    prefix_id = tokenizer.convert_tokens_to_ids("<|fim_prefix|>")
    blocks = load_blocks(root / "out" / "shards" / "train")
    batch = blocks.batch(list(range(len(blocks))))
    ids, positions, labels = batch["input_ids"], batch["position_ids"], batch["labels"]
    starts = (ids == file_id) & (positions == 0)
    assert int(starts.sum()) > 0
    assert bool((labels[starts] == IGNORE).all())
    assert bool((ids == file_id).eq(starts).all())  # the marker only ever opens a document
    assert bool((labels[ids == prefix_id] == prefix_id).all())  # learnt after the header
    after = torch.roll(starts, 1, dims=1) & (positions > 0)
    assert bool((labels[after] == ids[after]).all())


def test_a_long_file_is_cut_at_lines_each_piece_with_its_header(stage):
    root, stats = stage
    tokenizer = _tokenizer(root)
    counts = stats["splits"]["train"]["files"]
    assert counts["long_files"] == 1 and counts["pieces_from_long_files"] > 2
    encode = TextEncoder(tokenizer, PLAIN_FIM.markers)
    settings = _settings(fim_rate=0.0)
    made = file_documents("pkg/long.py", FILES["pkg/long.py"], PLAIN_FIM, encode, settings)
    header = whole_file("pkg/long.py", "", PLAIN_FIM)
    pieces = [document.text.removeprefix(header) for document, _ in made]
    assert all(document.text.startswith(header) for document, _ in made)
    assert "".join(pieces) == FILES["pkg/long.py"]
    assert all(piece.endswith("\n") for piece in pieces)
    assert all(len(ids) <= SEQ_LEN - 1 for _, ids in made)
    room = SEQ_LEN - 1 - len(encode([header])[0]) - FIM_MARKERS
    content_tokens = len(encode([FILES["pkg/long.py"]])[0])
    assert len(made) >= content_tokens / room


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Fail what runs longer than ``seconds`` (SIGALRM: a loop in Python is interrupted)."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


FORMATTER = "def format_upper(value):\n    text = str(value).rstrip()\n    return text.upper()\n\n"


def test_a_file_whose_fim_markers_are_text_and_do_not_fit_gets_whole_file_documents(tmp_path):
    """A tokenizer without the FIM markers as tokens spells each as a dozen tokens of text:
    with 64-token blocks no piece of this file fits a FIM document, and cutting it again with
    half the room went on for ever. It gets whole-file documents, cut to fit, instead."""
    hub = AutoTokenizer.from_pretrained(save_hub_like_tokenizer(tmp_path / "hub", (EOS,)))
    encode = TextEncoder(hub, PLAIN_FIM.markers)
    assert min(len(ids) for ids in encode(list(PLAIN_FIM.markers))) > 1  # markers are text
    path, content = "pkg/format_b.py", FORMATTER * 6
    settings = _settings(seq_len=64, fim_rate=0.5)
    with _deadline(10):
        made = file_documents(path, content, PLAIN_FIM, encode, settings)
    assert made is not None and len(made) > 1
    assert {document.kind for document, _ in made} == {"whole_file"}
    header = whole_file(path, "", PLAIN_FIM)
    assert "".join(document.text.removeprefix(header) for document, _ in made) == content
    assert all(len(ids) <= 63 for _, ids in made)
    # Blocks long enough for the markers as text: FIM documents as before.
    roomy = file_documents(path, content, PLAIN_FIM, encode, _settings(seq_len=128))
    assert {document.kind for document, _ in roomy} == {"whole_file", "fim"}


def test_same_settings_give_the_same_shard_bytes(stage, tmp_path):
    root, _ = stage
    _run(tmp_path, _settings())
    for split in SPLITS:
        first = sorted((root / "out" / "shards" / split).glob("*.arrow"))
        again = sorted((tmp_path / "out" / "shards" / split).glob("*.arrow"))
        assert [f.read_bytes() for f in first] == [f.read_bytes() for f in again]


def test_validation_and_test_stay_commits_only(stage):
    root, stats = stage
    tokenizer = _tokenizer(root)
    file_id = tokenizer.convert_tokens_to_ids("<|file|>")
    assert all(file_id not in d for d in _documents(root, "validation"))
    assert "files" not in stats["splits"]["validation"]


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_fim_rate_zero_and_one(tmp_path, rate):
    stats = _run(tmp_path, _settings(fim_rate=rate))
    counts = stats["splits"]["train"]["files"]
    fim = counts["fim_psm"] + counts["fim_spm"]
    assert fim == (counts["documents"] if rate else 0)
    assert counts["whole_file"] == (0 if rate else counts["documents"])
    tokenizer = _tokenizer(tmp_path)
    middle = tokenizer.convert_tokens_to_ids("<|fim_middle|>")
    with_middle = sum(middle in d for d in _documents(tmp_path))
    assert with_middle == fim
    assert stats["splits"]["train"]["tokens_by_kind"]["fim"] > 0 if rate else True


def _history(root: Path):
    """Ten commits; the last two (validation and test) rewrite pkg/core.py with a marker."""
    from testdata.gitrepo import GitRepo

    repo = GitRepo(root / "data")
    for number in range(8):
        body = "".join(f"def f{i}():\n    return {number * i}\n" for i in range(number + 2))
        files = {f"pkg/m{number}.py": body}
        if number == 0:
            files["pkg/core.py"] = "def core():\n    return 'TRAIN_TIME_CORE'\n"
        repo.commit(f"Add module number {number} with its functions", files)
    for number in range(2):
        repo.commit(
            f"Rewrite the core function, step {number}",
            {"pkg/core.py": f"def core():\n    return 'AFTER_CUTOFF_{number}_SECRET'\n"},
        )
    return repo


CUTOFF_CONFIG = {
    **FAST,
    "curate": {"split": {"test_size": 1, "validation_size": 1}},
    "snapshot": {"near_duplicates": False},
}
SHARD_STATS = "results/tiny/shards/stats.json"


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    """The workflow run up to tokenize (no training) on :func:`_history`."""
    root = tmp_path_factory.mktemp("cutoff")
    repo = _history(root)
    workdir = root / "work"
    workdir.mkdir()
    config = {"repo": str(repo.path), **CUTOFF_CONFIG}
    run = snakemake(workdir, SHARD_STATS, config=config)
    assert run.returncode == 0, run.stderr[-3000:]
    return workdir, config


@pytest.mark.slow
def test_no_file_content_from_after_the_cutoff_reaches_training(tokenized):
    workdir, _ = tokenized
    stats = json.loads((workdir / SHARD_STATS).read_text())
    assert stats["splits"]["train"]["files"]["files"] >= 9
    tokenizer = load_tokenizer(str(workdir / "results/tiny/tokenizer"))
    shards = load_from_disk(str(workdir / "results/tiny/shards/train"))
    text = "".join(
        tokenizer.backend_tokenizer.decode(ids[:length], skip_special_tokens=False)
        for ids, length in zip(shards["input_ids"], shards["length"], strict=True)
    )
    assert "<|file|>pkg/core.py\n" in text and "TRAIN_TIME_CORE" in text
    assert "AFTER_CUTOFF" not in text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, {}),
        ({"tokenize": {**FAST["tokenize"], "fim_rate": 0.9}}, {"tokenize": 1}),
        ({"tokenize": {**FAST["tokenize"], "files": False}}, {"tokenize": 1}),
        ({"snapshot": {"enabled": False}}, {"tokenize": 1}),
    ],
    ids=["nothing", "fim_rate", "files-off", "snapshot-off"],
)
def test_file_settings_rerun_tokenize_only(tokenized, change, expected):
    """A dry run after the run above plans exactly tokenize when a file setting changes;
    with file documents off, tokenize no longer waits for the snapshot."""
    workdir, config = tokenized
    jobs = planned_jobs(snakemake(workdir, "-n", SHARD_STATS, config=config | change))
    assert jobs == expected


def test_a_snapshot_without_content_is_a_one_line_error(tmp_path):
    rows = synthetic_rows(5, seed=1, split="train")
    broken = tmp_path / "files.parquet"
    pq.write_table(pa.table({"path": ["a.py"], "blob_sha": ["0" * 40]}), broken)
    with pytest.raises(InputError, match=r"snapshot '.*files.parquet': lacks column\(s\) content"):
        tokenize_stage(
            splits=write_curated(tmp_path / "dataset", rows),
            tokenizer_dir=tmp_path / "tokenizer",
            shard_dirs={split: tmp_path / split for split in SPLITS},
            stats_path=tmp_path / "stats.json",
            settings=_settings(),
            model=resolve_model(TINY),
            files=broken,
        )
    assert not (tmp_path / "tokenizer").exists()


ALL_MARKERS = tuple(
    dict.fromkeys(
        [EOS]
        + [m for template in TEMPLATES.values() for m in template.markers]
        + [m for fmt in FIM_FORMATS.values() for m in fmt.markers]
    )
)
QUOTE = "".join(ALL_MARKERS)


def _quoting_history() -> tuple[list[dict], dict[str, str]]:
    """Commits (one per task direction) and a snapshot file whose subject, body, paths, patch
    and content quote every marker string of every template and FIM format."""
    hunk = f"@@ -1,2 +1,3 @@\n x = 1\n-y = 2\n+MARKERS = {QUOTE!r}\n z = 3\n"
    rows = [
        commit_row(
            f"quote-{n}",
            f"Quote {QUOTE} in code",
            [file_change(f"src/{QUOTE}.py", hunk), file_change("src/plain.py", hunk)],
            body=f"Markers {QUOTE} are text here.",
        )
        for n in range(8)
    ]
    return rows, {f"docs/{QUOTE}.md": f"# {QUOTE}\n\nx = '{QUOTE}'\n", "pkg/m.py": "y = 1\n"}


@pytest.mark.parametrize(
    ("model", "template_name", "fmt"),
    [
        ({"preset": "tiny", "bpe_vocab_size": 600}, "plain", PLAIN_FIM),
        ("starcoder2", "starcoder2", STARCODER2_FIM),
    ],
    ids=["tiny", "starcoder2-like"],
)
def test_marker_strings_in_repository_text_are_text_not_marker_ids(
    tmp_path, model, template_name, fmt
):
    """Only the markers the template and the FIM format put in are marker ids: every document
    holds exactly those, and decodes to its text, the quoted markers included."""
    if model == "starcoder2":
        hub = save_hub_like_tokenizer(tmp_path / "hub", STARCODER2_SPECIAL)
        model = {"name": "hub", "base": str(hub), "template": "starcoder2"}
    rows, files = _quoting_history()
    out = tmp_path / "out"
    settings = _settings(seq_len=2048, shard_tokens=4 * 2048, fim_rate=0.5)
    stats = tokenize_stage(
        splits=write_curated(tmp_path / "dataset", rows),
        tokenizer_dir=out / "tokenizer",
        shard_dirs={split: out / "shards" / split for split in SPLITS},
        stats_path=out / "shards" / "stats.json",
        settings=settings,
        model=resolve_model(model),
        threads=2,
        files=_write_snapshot(tmp_path / "snapshot" / "files.parquet", files),
    )
    template = get_template(stats["template"]["name"])
    assert template.name == template_name and stats["fim"]["format"] == fmt.name
    tokenizer = _tokenizer(tmp_path)
    special = {tokenizer.convert_tokens_to_ids(m): m for m in ALL_MARKERS}
    special = {i: m for i, m in special.items() if i != tokenizer.unk_token_id}
    assert set(special.values()) >= {*template.markers, *fmt.markers, EOS}
    expected: list[tuple[str, Counter]] = []  # (a document's text, the markers put in it)
    for row in rows:
        task = task_for(row["sha"], settings.message_to_change, settings.seed)
        put = Counter(template.markers)  # plain: <|message|> and <|diff|>, once each
        if template_name == "starcoder2":  # and a <pr_file> and <pr_diff_hunk> per file
            put = Counter({"<pr>": 1, "<pr_diff>": 1, "<pr_file>": 2, "<pr_diff_hunk>": 2})
        expected.append((render(row, task, template) + EOS, put + Counter({EOS: 1})))
    for path, content in files.items():
        if is_fim(settings.seed, path, settings.fim_rate):
            example = fim_example(path, content, fmt, settings.seed, settings.fim_spm_rate, path)
            text, put = example.prompt + example.middle, Counter(fmt.markers)
        else:
            text, put = whole_file(path, content, fmt), Counter({fmt.file: 1})
        expected.append((text + EOS, put + Counter({EOS: 1})))
    documents = _documents(tmp_path)
    assert len(documents) == len(expected)
    for ids in documents:
        found = (
            tokenizer.backend_tokenizer.decode(ids, skip_special_tokens=False),
            Counter(special[i] for i in ids if i in special),
        )
        assert found in expected, found
        expected.remove(found)
    assert not expected
    kinds = stats["splits"]["train"]["tasks"]
    assert kinds["message_to_change"] and kinds["change_to_message"]
    assert (
        stats["splits"]["train"]["files"]["fim_psm"] + stats["splits"]["train"]["files"]["fim_spm"]
    )
