"""A tiny random LLaMA checkpoint built from a config (no download), for tests and benchmarks.

It exercises the exact code path of a real checkpoint: a ``LlamaForCausalLM`` folder (config, safetensors,
fast tokenizer) that the ``decoder`` provider loads with ``AutoModel`` (the LM head is dropped on load).
"""

from __future__ import annotations

from pathlib import Path

_CORPUS_WORDS = [
    "the",
    "item",
    "has",
    "following",
    "attributes",
    "name",
    "brand",
    "price",
    "features",
    "descriptions",
    "user",
    "interacted",
    "with",
    "visited",
    "items",
    "please",
    "summarise",
    "preference",
    "conclude",
    "lipstick",
    "shampoo",
    "serum",
    "cream",
    "mascara",
    "perfume",
    "lotion",
    "soap",
    "brush",
    "palette",
    "red",
    "blue",
    "green",
    "black",
    "white",
    "gold",
    "silver",
    "matte",
    "glossy",
    "organic",
    "vegan",
    "natural",
    "long",
    "lasting",
    "waterproof",
    "travel",
    "size",
    "pack",
    "of",
    "two",
    "three",
    "set",
    "kit",
    "gift",
    "for",
    "men",
    "women",
    "kids",
    "hair",
    "skin",
    "face",
    "body",
    "nails",
    "eyes",
    "lips",
    "beauty",
    "fashion",
    "shoe",
    "running",
    "leather",
    "cotton",
    "wool",
    "summer",
    "winter",
    "jacket",
    "dress",
    "shirt",
    "jeans",
    "watch",
    "ring",
    "bag",
    "restaurant",
    "pizza",
    "coffee",
    "bar",
]


def _train_tokenizer(vocab_size: int):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [" ".join(_CORPUS_WORDS[i:] + _CORPUS_WORDS[:i]) for i in range(0, len(_CORPUS_WORDS), 3)]
    tok.train_from_iterator(lines, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def save_tiny_llama(
    path: str | Path,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
) -> Path:
    """Write a random tiny LLaMA (weights fixed by ``seed``) with a byte-level BPE tokenizer to ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = _train_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
