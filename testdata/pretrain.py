"""The smallest base the pretrain_base code path builds (repotune.pretrain): the keys of a
``pretrain.sizes`` entry, for tests that build a base in about a second."""

TINY_SIZE = {
    "n_layer": 1, "n_head": 2, "n_embd": 32, "seq_len": 64, "bpe_vocab_size": 512,
    "bpe_sample_bytes": 0, "corpus_bytes": 0, "batch_size": 4, "max_steps": 8,
    "learning_rate": 0.01, "warmup_steps": 1, "eval_interval": 4, "eval_max_blocks": 8,
}  # fmt: skip
"""One layer, 64-token blocks, the schema's smallest vocabulary, eight steps."""
