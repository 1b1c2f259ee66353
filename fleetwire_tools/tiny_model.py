"""Build fleetwire's own tiny random-weight Llama model, offline and reproducibly.

No small generative model with weights can be downloaded where fleetwire is built and
tested, so the project makes one: a ``LlamaForCausalLM`` with random float32 weights and a
byte-level BPE tokenizer trained on a pseudo-random word corpus that this module generates
from the seed. The result is a normal Hugging Face model directory that vLLM and
transformers load like any other model. Its output is gibberish, which is fine: the mesh
moves tokens, it does not judge them.

Guarantees:

- **Deterministic.** The same seed, with the same versions of ``tokenizers``, ``torch``,
  ``transformers`` and ``safetensors``, gives byte-identical files. Each weight tensor is
  drawn from its own ``torch.Generator`` seeded from (seed, tensor name), so the weights do
  not depend on the order in which transformers creates or initialises modules.
- **Atomic.** Files are written and fsynced in a temporary sibling directory that is then
  renamed into place; an interrupted build never leaves a half-written model at ``out_dir``.
- **Idempotent.** A directory already holding a complete model built with the same
  parameters and seed (checked against the hashes recorded in its marker file) is returned
  at once without rebuilding.

``torch``, ``transformers``, ``tokenizers`` and ``safetensors`` are imported inside the
functions that need them, so importing this module costs nothing and the core package
imports without them.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["MARKER_FILE", "build_tiny_model"]

# Bump when the build procedure changes the files it produces for a given seed.
_FORMAT_VERSION: Final = 1

MARKER_FILE: Final = ".fleetwire-model.json"
"""Name of the file recording the build parameters and the sha256 of every model file."""

_VOCAB_SIZE: Final = 4096
_HIDDEN_SIZE: Final = 128
_INTERMEDIATE_SIZE: Final = 256
_NUM_LAYERS: Final = 2
_NUM_HEADS: Final = 4
_NUM_KV_HEADS: Final = 2
_MAX_POSITION_EMBEDDINGS: Final = 2048
_ROPE_THETA: Final = 10000.0
_RMS_NORM_EPS: Final = 1e-6
# Hugging Face's default init (std 0.02 everywhere) makes a tied-embedding model whose
# residual stream is dominated by the current token's embedding, so greedy decoding repeats
# the last token forever. Larger layer weights let attention and MLP outputs dominate, which
# gives varied text, and larger embeddings give greedy decoding clear top-1 margins (robust to
# the small numeric differences between batched and single-sequence kernels).
_EMBEDDING_STD: Final = 1.0
_LAYER_STD: Final = 0.3

_BOS: Final = "<s>"
_EOS: Final = "</s>"
_PAD: Final = "<pad>"
_ROLE_TOKENS: Final = ("<|system|>", "<|user|>", "<|assistant|>")
# Special tokens take the first ids in this order: <s>=0, </s>=1, <pad>=2, roles 3..5.
_SPECIAL_TOKENS: Final = (_BOS, _EOS, _PAD, *_ROLE_TOKENS)
_BOS_ID: Final = 0
_EOS_ID: Final = 1
_PAD_ID: Final = 2

_CHAT_TEMPLATE: Final = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

_CORPUS_LEXICON_SIZE: Final = 6000
_CORPUS_SENTENCES: Final = 40_000

_MODEL_FILES: Final = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def build_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    """Build the tiny random Llama model into ``out_dir`` and return ``out_dir``.

    Returns at once when ``out_dir`` already holds a complete model built by this function
    with the same parameters and seed (every file present with the recorded sha256).
    Otherwise builds into a temporary sibling directory and renames it into place; a
    previous fleetwire model or an empty directory at ``out_dir`` is replaced. Concurrent
    builds of the same directory are safe: one wins, the others return its result.

    Raises:
        FileExistsError: ``out_dir`` exists and is not a fleetwire model directory (a file,
            or a directory with other content and no marker); it is never deleted.
        RuntimeError: the trained tokenizer did not reach the model's vocabulary size.
        ImportError: torch, transformers, tokenizers or safetensors is not installed.

    """
    out_dir = Path(out_dir)
    build_key = _build_key(seed)
    if _is_complete(out_dir, build_key):
        return out_dir
    _check_replaceable(out_dir)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=out_dir.parent))
    try:
        tokenizer = _train_tokenizer(_generate_corpus(seed))
        _write_tokenizer_files(tmp_dir, tokenizer)
        _write_model_files(tmp_dir, seed)
        _write_marker(tmp_dir, seed, build_key)
        _seal(tmp_dir)
        _install(tmp_dir, out_dir, build_key)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir


def _build_parameters(seed: int) -> dict[str, Any]:
    return {
        "format_version": _FORMAT_VERSION,
        "seed": seed,
        "vocab_size": _VOCAB_SIZE,
        "hidden_size": _HIDDEN_SIZE,
        "intermediate_size": _INTERMEDIATE_SIZE,
        "num_hidden_layers": _NUM_LAYERS,
        "num_attention_heads": _NUM_HEADS,
        "num_key_value_heads": _NUM_KV_HEADS,
        "max_position_embeddings": _MAX_POSITION_EMBEDDINGS,
        "init_std": [_EMBEDDING_STD, _LAYER_STD],
        "special_tokens": list(_SPECIAL_TOKENS),
        "chat_template": _CHAT_TEMPLATE,
        "corpus": [_CORPUS_LEXICON_SIZE, _CORPUS_SENTENCES],
    }


def _build_key(seed: int) -> str:
    canonical = json.dumps(_build_parameters(seed), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((directory / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _is_complete(directory: Path, build_key: str) -> bool:
    """Whether ``directory`` holds every model file with the hashes its marker records."""
    marker = _read_marker(directory)
    if marker is None or marker.get("build_key") != build_key:
        return False
    files = marker.get("files")
    if not isinstance(files, dict) or set(files) != set(_MODEL_FILES):
        return False
    try:
        return all(_sha256_file(directory / name) == files[name] for name in _MODEL_FILES)
    except OSError:
        return False


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    is_real_dir = out_dir.is_dir() and not out_dir.is_symlink()
    if is_real_dir and (_read_marker(out_dir) is not None or not any(out_dir.iterdir())):
        return
    raise FileExistsError(
        f"{out_dir} exists and is not a fleetwire model directory; refusing to replace it"
    )


def _generate_corpus(seed: int) -> list[str]:
    """Pseudo-random sentences over a Zipf-distributed lexicon of made-up words."""
    rng = random.Random(f"fleetwire-tiny-model-corpus:{seed}")
    onsets = [*"bcdfghjklmnprstvwz", "br", "ch", "dr", "gl", "kr", "pl", "sh", "st", "th", "tr"]
    nuclei = [*"aeiou", "ai", "au", "ea", "ee", "ei", "io", "oo", "ou"]
    codas = ["", "", "", *"lmnrstkx", "nd", "ng", "rk", "st"]

    lexicon: list[str] = []
    seen: set[str] = set()
    while len(lexicon) < _CORPUS_LEXICON_SIZE:
        syllables = rng.choices((1, 2, 3, 4), weights=(3, 5, 3, 1))[0]
        word = "".join(
            rng.choice(onsets) + rng.choice(nuclei) + rng.choice(codas) for _ in range(syllables)
        )
        if word not in seen:
            seen.add(word)
            lexicon.append(word)
    cum_weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(lexicon))))

    sentences: list[str] = []
    for _ in range(_CORPUS_SENTENCES):
        words = rng.choices(lexicon, cum_weights=cum_weights, k=rng.randint(3, 16))
        if rng.random() < 0.15:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 9999)))
        if rng.random() < 0.2:
            words[rng.randrange(len(words))] += ","
        text = " ".join(words)
        sentences.append(text[0].upper() + text[1:] + rng.choice(".....?!"))
    return sentences


def _train_tokenizer(corpus: list[str]) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{_BOS} $A",
        pair=f"{_BOS} $A {_BOS} $B",
        special_tokens=[(_BOS, _BOS_ID)],
    )
    if tokenizer.get_vocab_size() != _VOCAB_SIZE:
        raise RuntimeError(
            f"tokenizer vocabulary has {tokenizer.get_vocab_size()} tokens, "
            f"expected {_VOCAB_SIZE}; the generated corpus is too small"
        )
    for expected_id, token in enumerate(_SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != expected_id:
            raise RuntimeError(f"special token {token!r} did not get id {expected_id}")
    return tokenizer


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_tokenizer_files(directory: Path, tokenizer: Tokenizer) -> None:
    tokenizer.save(str(directory / "tokenizer.json"), pretty=True)
    added_tokens_decoder = {
        str(token_id): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token_id, token in enumerate(_SPECIAL_TOKENS)
    }
    _write_json(
        directory / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": _BOS,
            "eos_token": _EOS,
            "pad_token": _PAD,
            "unk_token": None,
            "additional_special_tokens": list(_ROLE_TOKENS),
            "added_tokens_decoder": added_tokens_decoder,
            "chat_template": _CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "model_max_length": _MAX_POSITION_EMBEDDINGS,
            "padding_side": "left",
        },
    )
    _write_json(
        directory / "special_tokens_map.json",
        {
            "bos_token": _BOS,
            "eos_token": _EOS,
            "pad_token": _PAD,
            "additional_special_tokens": list(_ROLE_TOKENS),
        },
    )


def _tensor_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"fleetwire-tiny-model-weights:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _tensor_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the checkpoint tensors, in Hugging Face Llama naming.

    ``lm_head.weight`` is absent: the output projection is tied to the embeddings.
    """
    head_dim = _HIDDEN_SIZE // _NUM_HEADS
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("model.embed_tokens.weight", (_VOCAB_SIZE, _HIDDEN_SIZE)),
        ("model.norm.weight", (_HIDDEN_SIZE,)),
    ]
    for layer in range(_NUM_LAYERS):
        prefix = f"model.layers.{layer}"
        shapes += [
            (f"{prefix}.input_layernorm.weight", (_HIDDEN_SIZE,)),
            (f"{prefix}.post_attention_layernorm.weight", (_HIDDEN_SIZE,)),
            (f"{prefix}.self_attn.q_proj.weight", (_NUM_HEADS * head_dim, _HIDDEN_SIZE)),
            (f"{prefix}.self_attn.k_proj.weight", (_NUM_KV_HEADS * head_dim, _HIDDEN_SIZE)),
            (f"{prefix}.self_attn.v_proj.weight", (_NUM_KV_HEADS * head_dim, _HIDDEN_SIZE)),
            (f"{prefix}.self_attn.o_proj.weight", (_HIDDEN_SIZE, _NUM_HEADS * head_dim)),
            (f"{prefix}.mlp.gate_proj.weight", (_INTERMEDIATE_SIZE, _HIDDEN_SIZE)),
            (f"{prefix}.mlp.up_proj.weight", (_INTERMEDIATE_SIZE, _HIDDEN_SIZE)),
            (f"{prefix}.mlp.down_proj.weight", (_HIDDEN_SIZE, _INTERMEDIATE_SIZE)),
        ]
    return sorted(shapes)


def _write_model_files(directory: Path, seed: int) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=_VOCAB_SIZE,
        hidden_size=_HIDDEN_SIZE,
        intermediate_size=_INTERMEDIATE_SIZE,
        num_hidden_layers=_NUM_LAYERS,
        num_attention_heads=_NUM_HEADS,
        num_key_value_heads=_NUM_KV_HEADS,
        max_position_embeddings=_MAX_POSITION_EMBEDDINGS,
        rms_norm_eps=_RMS_NORM_EPS,
        rope_parameters={"rope_type": "default", "rope_theta": _ROPE_THETA},
        initializer_range=_LAYER_STD,
        tie_word_embeddings=True,
        bos_token_id=_BOS_ID,
        eos_token_id=_EOS_ID,
        pad_token_id=_PAD_ID,
        dtype="float32",
        architectures=["LlamaForCausalLM"],
    )
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in _tensor_shapes():
        if name.endswith("norm.weight"):
            tensors[name] = torch.ones(shape, dtype=torch.float32)
            continue
        generator = torch.Generator(device="cpu").manual_seed(_tensor_seed(seed, name))
        std = _EMBEDDING_STD if name == "model.embed_tokens.weight" else _LAYER_STD
        tensors[name] = torch.empty(shape, dtype=torch.float32).normal_(
            mean=0.0, std=std, generator=generator
        )
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})

    config.save_pretrained(str(directory))
    _write_json(
        directory / "generation_config.json",
        {"bos_token_id": _BOS_ID, "eos_token_id": _EOS_ID, "pad_token_id": _PAD_ID},
    )


def _write_marker(directory: Path, seed: int, build_key: str) -> None:
    _write_json(
        directory / MARKER_FILE,
        {
            "build_key": build_key,
            "parameters": _build_parameters(seed),
            "files": {name: _sha256_file(directory / name) for name in _MODEL_FILES},
        },
    )


def _seal(directory: Path) -> None:
    """Make the build world-readable (mkdtemp and safetensors use 0o600) and durable."""
    os.chmod(directory, 0o755)
    for path in sorted(directory.iterdir()):
        os.chmod(path, 0o644)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _install(tmp_dir: Path, out_dir: Path, build_key: str) -> None:
    """Rename the finished ``tmp_dir`` to ``out_dir``, replacing a stale model there."""
    stale: Path | None = None
    if out_dir.exists():
        _check_replaceable(out_dir)
        stale = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.stale-", dir=out_dir.parent))
        with contextlib.suppress(FileNotFoundError):  # another builder moved it first
            os.replace(out_dir, stale / "model")
    try:
        os.rename(tmp_dir, out_dir)
    except OSError:
        # Another builder installed its result between our check and the rename.
        if not _is_complete(out_dir, build_key):
            raise
    finally:
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    _fsync_directory(out_dir.parent)
