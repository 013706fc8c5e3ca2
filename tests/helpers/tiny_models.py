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


# Tiny configs of the decoder-only architectures the packed layout is checked on: name -> (config class, settings).
# Windows of 4 tokens are shorter than the test prompts, so sliding-window layers really cut what a token sees.
_DECODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512)
_GQA = dict(_DECODER, intermediate_size=64, num_key_value_heads=2, head_dim=8)
_MOE = dict(output_router_logits=True, router_aux_loss_coef=0.1, num_experts_per_tok=2)
ARCHITECTURES = {
    "llama": ("LlamaConfig", _GQA),
    "qwen2": ("Qwen2Config", _GQA),
    "qwen2-sliding": ("Qwen2Config", dict(_GQA, use_sliding_window=True, sliding_window=4, max_window_layers=1)),
    "qwen3": ("Qwen3Config", _GQA),
    "mistral": ("MistralConfig", dict(_GQA, sliding_window=4)),
    "gemma": ("GemmaConfig", _GQA),
    "gemma2": ("Gemma2Config", dict(_GQA, sliding_window=4)),
    "gemma3": ("Gemma3TextConfig", dict(_GQA, sliding_window=4, layer_types=["sliding_attention", "full_attention"])),
    "phi3": ("Phi3Config", dict(_GQA, sliding_window=4)),
    "gpt-neox": ("GPTNeoXConfig", dict(_DECODER, intermediate_size=64)),
    "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=2, n_head=4, n_positions=512)),
    "opt": ("OPTConfig", dict(_DECODER, ffn_dim=64, word_embed_proj_dim=32)),
    "falcon": ("FalconConfig", dict(_DECODER)),
    "falcon-alibi": ("FalconConfig", dict(_DECODER, alibi=True)),
    "bloom": ("BloomConfig", dict(hidden_size=32, n_layer=2, n_head=4)),
    "mixtral": ("MixtralConfig", dict(_GQA, num_local_experts=4, **_MOE)),
    "qwen2-moe": (
        "Qwen2MoeConfig",
        dict(_GQA, num_experts=4, moe_intermediate_size=32, shared_expert_intermediate_size=32, **_MOE),
    ),
}


def build_architecture(tokenizer: PreTrainedTokenizerFast, name: str, seed: int = 0, attn: str = "sdpa", **config):
    """A tiny random model of architecture `name` (a key of `ARCHITECTURES`) for `tokenizer`'s vocabulary; `config`
    overrides its settings."""
    import torch
    import transformers

    config_class, settings = ARCHITECTURES[name]
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        **{**settings, **config},
    )
    torch.manual_seed(seed)
    try:
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    except ValueError:  # no sdpa support (Gemma 2, Bloom): their default, eager
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()
