"""The loaded model and the one lock every question takes.

Each request is answered by the command it stands for, through the same functions:

* a completion builds its prompt with :func:`repotune.cli.complete.completion_prompt` (the
  budget, then :func:`repotune.inference.infill.infill_prompt`) and decodes it with
  :func:`repotune.inference.decoding.greedy` (``repotune complete``'s answer) or, at a
  temperature above 0, :func:`repotune.inference.decoding.samples`; the request's ``stop``
  strings join the run's own;
* a commit message is :func:`repotune.cli.suggest.suggestions` of the change after the run's
  curate filters (:func:`repotune.cli.suggest.change_commit`), as ``repotune suggest`` prints.

Questions run one at a time (a lock around prompt building and decoding): the tokenizer and
the model are shared, decoding already uses every core, and a request's answer then depends
on nothing another request does.
"""

import threading
from dataclasses import replace

from repotune.cli.complete import check_gap, completion_prompt
from repotune.cli.diff import parse_diff
from repotune.cli.run import FinishedRun, LoadedModel
from repotune.cli.suggest import change_commit, suggestions
from repotune.errors import InputError
from repotune.inference.decoding import Decoding, greedy, samples
from repotune.inference.infill import Gap
from repotune.serve.protocol import (
    ApiError,
    Choice,
    CompletionRequest,
    MessageRequest,
)


def _finish_reason(finish: str) -> str:
    """OpenAI's reasons: ``length`` when the budget ran out, else ``stop`` (EOS or a stop)."""
    return "length" if finish == "length" else "stop"


class Engine:
    """A finished run's model, answering completion and commit-message requests."""

    def __init__(self, run: FinishedRun, loaded: LoadedModel) -> None:
        self.run = run
        self.loaded = loaded
        self.lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.run.model

    def complete(self, request: CompletionRequest) -> tuple[list[Choice], int]:
        """The choices of every prompt (``n`` each, in order) and the prompt tokens seen."""
        choices: list[Choice] = []
        prompt_tokens = 0
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        with self.lock:
            for prefix, suffix in request.gaps:
                gap = Gap(prefix, suffix, request.path)
                try:
                    check_gap(gap)
                    prompt, new_tokens = completion_prompt(self.loaded, gap, request.max_tokens)
                except InputError as error:
                    raise ApiError(400, str(error), param="prompt") from None
                prompt = replace(prompt, stops=(*prompt.stops, *request.stops))
                if request.temperature == 0:
                    generations = [greedy(model, tokenizer, prompt, new_tokens)] * request.n
                else:
                    decoding = Decoding(
                        max_new_tokens=new_tokens,
                        temperature=request.temperature,
                        top_p=request.top_p,
                        seed=request.seed,
                    )
                    generations = samples(model, tokenizer, prompt, request.n, decoding)
                prompt_tokens += len(prompt.ids)
                choices += [
                    Choice(g.text, _finish_reason(g.finish), g.new_tokens) for g in generations
                ]
        return choices, prompt_tokens

    def commit_messages(self, request: MessageRequest) -> list[str]:
        """``repotune suggest``'s candidates for the change (greedy first; empty ones left
        out)."""
        if request.diff is not None:
            files, where = parse_diff(request.diff), "the diff"
        else:
            files, where = [dict(record) for record in request.files or ()], "the files"
        decoding = Decoding(
            candidates=request.candidates,
            max_new_tokens=request.max_tokens,
            temperature=request.temperature,
            seed=request.seed,
        )
        try:
            commit = change_commit(files, self.run, where)
            with self.lock:
                return suggestions(self.loaded, commit, decoding)
        except InputError as error:
            param = "diff" if request.diff is not None else "files"
            raise ApiError(400, str(error), param=param) from None
