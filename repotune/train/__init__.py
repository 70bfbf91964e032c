"""Stage ``train``: packed shards -> a LoRA / QLoRA adapter.

Reads: ``results/{model}/shards/{train,validation}/`` and the tokenizer.
Writes: ``results/{model}/adapter/`` (adapter, tokenizer, training log, summary, model card),
``results/{model}/base/`` (what the adapter sits on) and, outside Snakemake's outputs, the
resumable state in ``results/{model}/train_state/``.

Modules: ``trainer`` (the recipe: setup, attempt, train loop), ``settings`` (typed ``train:``
settings), ``run`` (the run's values: request, batch plan, progress, session),
``bookkeeping`` (validation, best adapter, log rows and checkpoints after each step),
``outputs`` (the adapter directory and its summary), ``training_log`` (the CSV log),
``distributed`` (DDP helpers), ``data`` (block order; blocks are read with
``repotune.shards.torch_blocks``), ``checkpoint`` (resume),
``memory`` (micro-batch that fits), ``schedule`` (epochs, learning rate), ``lora`` (adapter
targets, trained embeddings), ``launch`` (multi-GPU), ``model_card``. The forward pass over
packed blocks is shared with evaluation: :mod:`repotune.packed`.
"""
