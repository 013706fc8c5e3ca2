"""Tiny causal LMs and a locally built tokenizer for offline tests (no hub ids)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM


CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
CORPUS = [
    "The user watched Toy Story, Heat and Casino. Which movie will the user watch next?",
    "Recommend one of the following movies: Star Wars, Fargo, Titanic, Jumanji, Babe, Clueless.",
    "the quick brown fox jumps over the lazy dog 0123456789 red green blue apple banana cherry",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz (1995) (1996) -,.:;!?'\"",
]


def build_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in milliseconds on a tiny corpus, with a chat template."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|end|>",
        pad_token="<|pad|>",
        chat_template=CHAT_TEMPLATE,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, arch: str = "llama", seed: int = 0, hidden_size: int = 32):
    """A 2-layer causal LM with random weights whose vocabulary matches `tokenizer`."""
    import torch

    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    raise ValueError(f"unknown arch {arch!r}")


def save_tiny(directory: str | Path, arch: str = "llama", seed: int = 0, hidden_size: int = 64) -> Path:
    """Save a tiny model and its tokenizer to `directory` so it loads by path (e.g. as a reference model).

    The default width, 64, is the smallest that bitsandbytes' 4-bit blocks (64 values) quantize.
    """
    directory = Path(directory)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, arch=arch, seed=seed, hidden_size=hidden_size)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
