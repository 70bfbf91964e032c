"""Inference: how a trained model is asked, for evaluation and for the ``repotune`` command.

Everything that turns a question into prompt ids and a continuation into an answer lives here,
once, so that what evaluation measures is what ``repotune suggest`` and ``repotune complete``
(and anything serving the model) do:

* ``record``: what the run trained with (template, block length, FIM format, prompt budget,
  stop strings), written once by the tokenize stage into ``stats.json`` and read back by
  :meth:`repotune.inference.record.RunRecord.read`;
* ``budget``: how many prompt and new tokens fit the training block and the model's context;
* ``prompts``: the commit-message and code-change prompts of a commit, and plain text prompts;
* ``infill``: fill-in-the-middle prompts of a gap in a file;
* ``stops``: where a continuation ends;
* ``decoding``: batched generation and the candidates of one prompt (imports torch).

Only ``decoding`` imports torch; the other modules are light enough for the command line.
"""
