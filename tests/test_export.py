"""The export rule: merged model, GGUF read back with llama.cpp's gguf library, GGUF LoRA,
Ollama Modelfile and SERVING.md, on a finished run of the workflow."""

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from repotune.atomic import current_umask
from repotune.cli.diff import staged_files
from repotune.config import resolve_config
from repotune.errors import InputError
from repotune.export.gguf import ARCHITECTURES, write_model
from repotune.export.merged import base_model, merge
from repotune.export.stage import ExportSettings
from repotune.inference.record import RunRecord
from repotune.modeling import load_adapted
from repotune.shards.fim import PLAIN_FIM, fim_prompt
from repotune.shards.render import CHANGE_TO_MESSAGE, get_template, render_prompt
from repotune.shards.tokenizer import load_tokenizer, special_tokens
from testdata.gitrepo import GitRepo
from testdata.workflow import FAST, snakemake
from tests.run_fixtures import MODEL

pytestmark = pytest.mark.slow
# fp32 on the CPU: merging reorders additions, nothing more.
LOGIT_TOLERANCE = 1e-4
TRANSPOSED = ARCHITECTURES["gpt2"].transposed


@pytest.fixture
def in_run(shared_run):
    """Work from the session's finished run's directory: it records its paths relative to it."""
    with contextlib.chdir(shared_run.workdir):
        yield shared_run


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def strong_adapter(adapter: Path, target: Path) -> Path:
    """A copy of ``adapter`` whose update is large: a few training steps barely move B."""
    shutil.copytree(adapter, target)
    path = target / "adapter_model.safetensors"
    generator = torch.Generator().manual_seed(0)
    tensors = {
        name: torch.randn(tensor.shape, generator=generator) * 0.2 if "lora_B" in name else tensor
        for name, tensor in load_file(str(path)).items()
    }
    save_file(tensors, str(path))
    return target


def test_merged_logits_equal_base_plus_adapter(in_run, tmp_path):
    adapter = strong_adapter(Path("results/tiny/adapter"), tmp_path / "adapter")
    ids = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(1))
    base = logits(base_model(adapter, torch.float32), ids)
    adapted_model = PeftModel.from_pretrained(base_model(adapter, torch.float32), str(adapter))
    adapted = logits(adapted_model.eval(), ids)
    merged = logits(merge(adapter, torch.float32), ids)
    assert (adapted - base).abs().max() > 0.1  # the adapter really changes the model
    assert torch.allclose(merged, adapted, atol=LOGIT_TOLERANCE, rtol=0)


def test_exported_merged_directory_is_a_plain_model(in_run):
    directory = in_run.export / "merged"
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= {
        path.name for path in directory.iterdir()
    }
    plain = AutoModelForCausalLM.from_pretrained(directory).eval()
    ids = torch.arange(5, 45).reshape(1, 40)
    expected = logits(load_adapted("results/tiny/adapter").eval(), ids)
    assert torch.allclose(logits(plain, ids), expected, atol=LOGIT_TOLERANCE, rtol=0)
    generation = json.loads((directory / "generation_config.json").read_text())
    assert generation["eos_token_id"] == load_tokenizer(str(directory)).eos_token_id


def gguf_tensors(path: Path) -> dict[str, np.ndarray]:
    reader = gguf.GGUFReader(str(path))
    return {tensor.name: np.array(tensor.data) for tensor in reader.tensors}


def field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


def expected_gguf_tensors(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The merged model's weights in llama.cpp's layout, by llama.cpp name."""
    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, config.n_layer)
    expected = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # the token embedding serves as the output layer too
        array = (tensor.T if name.endswith(TRANSPOSED) else tensor).numpy()
        expected[names.get_name(name, try_suffixes=(".weight", ".bias"))] = array
    return expected


def test_gguf_model_reads_back_with_its_tensors_and_tokenizer(in_run):
    path = in_run.export / "gguf" / f"{MODEL}-f32.gguf"
    merged = merge("results/tiny/adapter", torch.float32)
    expected = expected_gguf_tensors(merged)
    found = gguf_tensors(path)
    assert set(found) == set(expected)
    for name, array in expected.items():
        assert found[name].shape == array.shape, name
        np.testing.assert_array_equal(found[name], array)

    reader = gguf.GGUFReader(str(path))
    config = merged.config
    assert field(reader, "general.architecture") == "gpt2"
    assert field(reader, "gpt2.block_count") == config.n_layer
    assert field(reader, "gpt2.context_length") == config.n_positions
    assert field(reader, "gpt2.embedding_length") == config.n_embd
    assert field(reader, "gpt2.attention.head_count") == config.n_head
    tokenizer = load_tokenizer("results/tiny/tokenizer")
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert tokens == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    types = field(reader, "tokenizer.ggml.token_type")
    control = {tokens[i] for i, kind in enumerate(types) if kind == gguf.TokenType.CONTROL}
    assert control == special_tokens(tokenizer) and "<|message|>" in control
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    assert len(field(reader, "tokenizer.ggml.merges")) == len(merges)
    assert field(reader, "tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    assert field(reader, "tokenizer.ggml.add_bos_token") is False


def test_f16_gguf_keeps_norms_and_biases_in_f32(in_run, tmp_path):
    merged = merge("results/tiny/adapter", torch.float32)
    path = tmp_path / "model-f16.gguf"
    write_model(merged, load_tokenizer("results/tiny/tokenizer"), path, MODEL, "f16")
    reader = gguf.GGUFReader(str(path))
    expected = expected_gguf_tensors(merged)
    for tensor in reader.tensors:
        array = expected[tensor.name]
        kind = gguf.GGMLQuantizationType.F32 if array.ndim == 1 else gguf.GGMLQuantizationType.F16
        assert tensor.tensor_type == kind, tensor.name
        np.testing.assert_allclose(np.array(tensor.data), array, rtol=1e-3, atol=1e-4)


def test_gguf_lora_over_the_base_gguf_is_the_merged_gguf(in_run):
    folder = in_run.export / "gguf"
    base = gguf_tensors(folder / f"{MODEL}-base-f32.gguf")
    merged = gguf_tensors(folder / f"{MODEL}-f32.gguf")
    lora = gguf_tensors(folder / f"{MODEL}-lora.gguf")
    reader = gguf.GGUFReader(str(folder / f"{MODEL}-lora.gguf"))
    assert field(reader, "general.type") == "adapter"
    assert field(reader, "adapter.type") == "lora"
    config = json.loads(Path("results/tiny/adapter/adapter_config.json").read_text())
    scale = field(reader, "adapter.lora.alpha") / config["r"]
    targets = {name.removesuffix(".lora_a") for name in lora if name.endswith(".lora_a")}
    assert targets == {name for name in base if not np.array_equal(base[name], merged[name])}
    assert len(targets) == 4 * FAST["models"][0]["architecture"]["n_layer"]
    for name in targets:
        update = scale * lora[f"{name}.lora_b"] @ lora[f"{name}.lora_a"]
        np.testing.assert_allclose(base[name] + update, merged[name], rtol=0, atol=1e-5)


def sample_commit(tmp_path: Path) -> tuple[GitRepo, dict]:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("Start", {"app.py": "a = 1\nb = 2\n"})
    repo.write("app.py", "a = 1\nb = 3\n")
    repo.write("lib/new.py", "def f():\n    return 1\n")
    repo.git("add", "-A")
    return repo, {"files": staged_files(repo.path)}


def test_modelfile_template_is_the_training_prompt(in_run, tmp_path):
    text = (in_run.export / "Modelfile").read_text()
    lines = text.splitlines()
    source = next(line for line in lines if line.startswith("FROM "))
    assert (in_run.export / source.removeprefix("FROM ")).is_file()
    template_text = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    _, commit = sample_commit(tmp_path)
    template = get_template("plain")
    files_text = render_prompt(commit, CHANGE_TO_MESSAGE, template)
    files_text = files_text.removeprefix(template.c2m_open).removesuffix(template.c2m_sep)
    assert template_text.replace("{{ .Prompt }}", files_text) == render_prompt(
        commit, CHANGE_TO_MESSAGE, template
    )
    stops = [line.split(" ", 2)[2] for line in lines if line.startswith("PARAMETER stop ")]
    record = RunRecord.read(in_run.results / MODEL / "shards" / "stats.json")
    assert stops == [json.dumps(stop) for stop in record.stops]
    assert {"<|message|>", "<|diff|>", "<|endoftext|>", "<|fim_middle|>"} <= set(record.stops)


def test_serving_md_commands_build_the_training_prompt(in_run, tmp_path):
    text = (in_run.export / "SERVING.md").read_text()
    for heading in ("## transformers", "## vLLM", "## llama.cpp", "## Ollama"):
        assert heading in text
    assert "not for StarCoder2: serve `merged/`" in text
    export_dir = "results/tiny/export"
    for name in ("merged", "gguf/tiny-f32.gguf", "gguf/tiny-base-f32.gguf", "gguf/tiny-lora.gguf"):
        assert f"{export_dir}/{name}" in text
        assert (in_run.workdir / export_dir / name).exists()
    repo, commit = sample_commit(tmp_path)
    line = next(line for line in text.splitlines() if line.startswith("prompt=$("))
    shell = subprocess.run(
        ["sh", "-c", f'{line}\nprintf "%s" "$prompt"'],
        cwd=repo.path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == render_prompt(commit, CHANGE_TO_MESSAGE, get_template("plain"))
    # The fill-in-the-middle prompt, as `repotune complete` builds it.
    assert fim_prompt("PREFIX", "SUFFIX", PLAIN_FIM, path="PATH") in text


def test_manifest_hashes_the_export(in_run):
    manifest = json.loads((in_run.results / MODEL / "manifest.json").read_text())
    paths = {artifact["path"] for artifact in manifest["artifacts"]}
    for name in ("SERVING.md", "Modelfile", "gguf/tiny-f32.gguf", "merged/model.safetensors"):
        assert f"results/tiny/export/{name}" in paths


def test_every_output_has_the_mode_a_plain_write_gives(in_run):
    """safetensors writes its files 0600 (a temporary renamed into place): a model server
    running as another user, or a teammate sharing the results, must read the weights as they
    read config.json. Every file of the model's results has the mode a plain write gives."""
    plain = 0o666 & ~current_umask()
    modes = {
        path.relative_to(in_run.results).as_posix(): path.stat().st_mode & 0o777
        for path in (in_run.results / MODEL).rglob("*")
        if path.is_file()
    }
    assert "tiny/export/merged/model.safetensors" in modes
    assert {path: mode for path, mode in modes.items() if mode != plain} == {}


def test_ollama_without_gguf_is_a_one_line_error(tmp_path):
    with pytest.raises(InputError, match="needs the GGUF model"):
        ExportSettings.from_config(resolve_config({"export": {"ollama": True}})["export"])
    repo = GitRepo(tmp_path / "data")
    repo.commit("Add a module", {"m.py": "x = 1\n"})
    (tmp_path / "work").mkdir()
    config = {"repo": str(repo.path), **FAST, "export": {"ollama": True}}
    result = snakemake(tmp_path / "work", "-n", config=config)
    assert result.returncode != 0
    assert "repotune error: config export.ollama: needs the GGUF model" in result.stderr
