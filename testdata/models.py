"""Tiny models of each preset family, built from config (random weights, real architectures),
for tests that need one of each: LoRA targets, packed-document isolation."""

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PhiConfig,
    PhiForCausalLM,
    Starcoder2Config,
    Starcoder2ForCausalLM,
)

SMALL = {"vocab_size": 128, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}


def gpt2() -> torch.nn.Module:
    return GPT2LMHeadModel(
        GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    )


def starcoder2() -> torch.nn.Module:
    config = Starcoder2Config(**SMALL, intermediate_size=64, num_key_value_heads=2)
    return Starcoder2ForCausalLM(config)


def phi() -> torch.nn.Module:
    return PhiForCausalLM(PhiConfig(**SMALL, intermediate_size=64))
