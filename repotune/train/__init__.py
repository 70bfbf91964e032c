"""Stage ``train``: packed shards -> a LoRA / QLoRA adapter.

Reads: ``results/{model}/shards/{train,validation}/`` and the tokenizer.
Writes: ``results/{model}/adapter/`` (adapter, tokenizer, training log, summary, model card),
``results/{model}/base/`` (what the adapter sits on) and, outside Snakemake's outputs, the
resumable state in ``results/{model}/train_state/``.

Modules: ``trainer`` (the recipe: setup, train, save), ``data`` (block order; blocks are read
with ``repotune.shards.table``), ``checkpoint`` (resume), ``memory`` (micro-batch that fits),
``schedule`` (epochs, learning rate), ``lora`` (adapter targets), ``launch`` (multi-GPU),
``model_card``.
"""
