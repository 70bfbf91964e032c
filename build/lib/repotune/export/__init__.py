"""The export rule: the trained model in the formats people serve models with.

``merged`` (a plain Hugging Face model), ``gguf`` (llama.cpp: the merged model and the adapter
as a GGUF LoRA), ``ollama`` (a Modelfile) and ``serving`` (SERVING.md, the commands for each
engine). :mod:`repotune.export.stage` runs the ones the ``export`` config turns on.
"""
