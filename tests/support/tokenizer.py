"""A small byte-level BPE tokenizer trained on the spot (the ``tokenizers`` package), for
tests of the mesh's own token counts without a model on disk."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

WORDS = ["the fleet of nodes", "signed results", "a mesh for inference", "scripted output"]


def write_tokenizer(directory: Path) -> Path:
    """Trains one and writes ``directory/tokenizer.json`` (a BOS on every prompt, as the
    tiny model's); returns ``directory``."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>"])
    tokenizer.train_from_iterator(WORDS * 20, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory
