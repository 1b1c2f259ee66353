"""The mesh's own token counts (``scheduler.token_counts``) and the bill made from them,
with a small BPE tokenizer trained here (the ``tokenizers`` package), no model needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from fleetwire.domain.errors import ConfigurationError
from fleetwire.v1 import job_pb2
from scheduler.result_checks import billable_usage
from scheduler.token_counts import COMPLETION_FACTOR, COMPLETION_SLACK, TokenCounter
from tests.conftest import MODEL_DIR
from tests.support.tokenizer import write_tokenizer


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def spec(prompt: str = "the fleet of nodes", max_tokens: int = 64) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model="m", prompt=prompt, sampling=job_pb2.SamplingParams(max_tokens=max_tokens)
    )


def test_the_prompt_is_counted_as_the_engine_counts_it(tokenizer_dir: Path) -> None:
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    expected = len(tokenizer.encode("the fleet of nodes", add_special_tokens=True).ids)
    counted = TokenCounter({"m": tokenizer_dir}).counted(spec(), "signed results")
    assert counted is not None
    assert counted.prompt_tokens == expected
    recount = len(tokenizer.encode("signed results", add_special_tokens=False).ids)
    assert counted.completion_bound == COMPLETION_FACTOR * recount + COMPLETION_SLACK


def test_a_model_without_a_tokenizer_is_not_counted(tokenizer_dir: Path) -> None:
    assert TokenCounter({"m": tokenizer_dir}).counted(job_pb2.JobSpec(model="other"), "x") is None


def test_a_chat_without_a_template_keeps_the_cap_for_its_prompt(tokenizer_dir: Path) -> None:
    chat = spec(prompt="")
    chat.messages.append(job_pb2.ChatMessage(role="user", content="the fleet"))
    counted = TokenCounter({"m": tokenizer_dir}).counted(chat, "signed results")
    assert counted is not None
    assert counted.prompt_tokens is None


def test_a_chat_is_counted_as_the_engine_renders_it() -> None:
    """The tiny model's chat template, rendered by the mesh, gives the count of Hugging
    Face's apply_chat_template (what the node's vLLM tokenizer runs)."""
    from transformers import AutoTokenizer

    chat = job_pb2.JobSpec(model="tiny-llama", sampling=job_pb2.SamplingParams(max_tokens=8))
    for role, content in (
        ("system", "Be brief."),
        ("user", "Name a river."),
        ("assistant", "The Nile."),
        ("user", "Another?"),
    ):
        chat.messages.append(job_pb2.ChatMessage(role=role, content=content))
    counted = TokenCounter({"tiny-llama": MODEL_DIR}).counted(chat, "The Amazon.")
    assert counted is not None
    reference = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    text = reference.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in chat.messages],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert counted.prompt_tokens == len(reference.encode(text, add_special_tokens=False))


def test_a_template_that_refuses_the_messages_leaves_the_cap(tmp_path: Path) -> None:
    directory = write_tokenizer(tmp_path / "tok")
    (directory / "chat_template.jinja").write_text(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    chat = spec(prompt="")
    chat.messages.append(job_pb2.ChatMessage(role="user", content="the fleet"))
    counter = TokenCounter({"m": directory})
    counted = counter.counted(chat, "x")
    assert counted is not None
    assert counted.prompt_tokens is not None
    chat.messages[0].role = "system"
    refused = counter.counted(chat, "x")
    assert refused is not None
    assert refused.prompt_tokens is None


def test_the_bill_uses_the_meshs_counts(tokenizer_dir: Path) -> None:
    counter = TokenCounter({"m": tokenizer_dir})
    job = spec()
    counted = counter.counted(job, "signed results")
    assert counted is not None
    assert counted.prompt_tokens is not None
    honest = billable_usage(
        job_pb2.Usage(prompt_tokens=counted.prompt_tokens, completion_tokens=3), job, counted
    )
    assert (honest.prompt_tokens, honest.completion_tokens, honest.source) == (
        counted.prompt_tokens,
        3,
        "counted",
    )
    inflated = billable_usage(
        job_pb2.Usage(prompt_tokens=counted.prompt_tokens, completion_tokens=60), job, counted
    )
    assert inflated.inflated
    assert inflated.completion_tokens == counted.completion_bound < 60
    overclaimed_prompt = billable_usage(
        job_pb2.Usage(prompt_tokens=counted.prompt_tokens + 9, completion_tokens=3), job, counted
    )
    assert overclaimed_prompt.inflated
    assert overclaimed_prompt.prompt_tokens == counted.prompt_tokens


def test_a_missing_tokenizer_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"tokenizer\.json"):
        TokenCounter({"m": tmp_path})
