"""The API's requests and answers: JSON checked into plain values, and the JSON sent back.

Two kinds of question, each the JSON twin of a command:

* ``POST /v1/completions`` (OpenAI's completions API, which editor plugins speak):
  ``prompt`` is the text before the cursor and ``suffix`` the text after it, asked as
  ``repotune complete`` asks (the run's fill-in-the-middle format, else a plain continuation);
  ``path`` (an extension: the file's path in the repository) goes before the FIM markers as
  ``complete --path`` puts it. An editor that can only send one text (Continue's prompt
  templates) marks the cursor in it and names the marker in ``cursor`` (an extension, as
  ``complete --cursor``): the prompt is split there into prefix and suffix. ``max_tokens``
  (default 16, as OpenAI), ``stop`` (up to 4 strings, besides the run's own stops), ``n``,
  and ``temperature``: absent or 0 is the greedy answer (``repotune complete``'s, and what
  evaluation scored; unlike OpenAI's default of 1), above 0 seeded samples (``seed``, default
  0; ``top_p``). ``stream`` answers the same text as one server-sent event per choice.
  ``echo``, ``logprobs`` and ``best_of`` are refused, not ignored.
* ``POST /repotune/commit-message``: ``diff`` (``git diff`` text, as ``suggest --stdin``
  reads it) or ``files`` (the staged change's file records, as ``suggest`` reads the index),
  ``n`` candidates (greedy first, then samples at ``temperature``, default 0.8), ``max_tokens``
  (default 64) and ``seed``: ``repotune suggest``'s options and answers.

Every bad request is a 4xx with OpenAI's error body (``{"error": {"message", "type", "param",
"code"}}``), one line that names the field and what to send.
"""

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_TOKENS = 1024
"""The most new tokens a request may ask for (the model's context bounds them further)."""
MAX_CHOICES = 16
"""The most answers one request may ask for (prompts times ``n``)."""
MAX_STOPS = 4
OPENAI_DEFAULT_MAX_TOKENS = 16
SUGGEST_DEFAULT_MAX_TOKENS = 64
SUGGEST_DEFAULT_TEMPERATURE = 0.8
FILE_FIELDS: Mapping[str, tuple[type, ...]] = {
    "path": (str,),
    "old_path": (str, type(None)),
    "change_type": (str,),
    "old_mode": (str, type(None)),
    "new_mode": (str, type(None)),
    "similarity": (int, type(None)),
    "is_binary": (bool,),
    "is_submodule": (bool,),
    "patch": (str, type(None)),
    "patch_bytes": (int,),
}
"""The fields of a file record (repotune.cli.diff: ``parse_diff``'s, which the staged
change's records hold too), as JSON carries them."""
STAGED_FIELDS: Mapping[str, tuple[type, ...]] = {
    "additions": (int,),
    "deletions": (int,),
    "patch_truncated": (bool,),
}
"""The fields only the staged change's records have (the extract parser's)."""


class ApiError(Exception):
    """A request the server answers with ``status`` and OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (
            status, message, param, code, kind
        )  # fmt: skip

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


def _bad(param: str, problem: str) -> ApiError:
    return ApiError(400, f"'{param}' {problem}", param=param)


def _int(body: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(key, f"must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise _bad(key, f"must be between {low} and {high} (got {value})")
    return value


def _number(body: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(key, f"must be a number, not {type(value).__name__}")
    if not low <= value <= high:
        raise _bad(key, f"must be between {low:g} and {high:g} (got {value:g})")
    return float(value)


def _optional_text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad(key, f"must be a string, not {type(value).__name__}")
    return value


def check_model(body: Mapping[str, Any], served: str) -> None:
    """A request naming a model must name the one this server serves (OpenAI's 404)."""
    model = body.get("model")
    if model is not None and model != served:
        raise ApiError(
            404,
            f"model '{model}' is not served here; this server serves '{served}' (GET /v1/models)",
            param="model",
            code="model_not_found",
        )


@dataclass(frozen=True)
class CompletionRequest:
    """A checked ``/v1/completions`` request."""

    gaps: tuple[tuple[str, str], ...]
    """Each prompt's text before and after the cursor."""
    path: str | None
    max_tokens: int
    temperature: float
    top_p: float
    n: int
    stops: tuple[str, ...]
    seed: int
    stream: bool


def _prompts(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise _bad("prompt", "must be a string or a list of strings (token ids are not supported)")


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise _bad("stop", "must be a non-empty string or a list of them")
    if len(stops) > MAX_STOPS:
        raise _bad("stop", f"may hold at most {MAX_STOPS} strings (got {len(stops)})")
    return tuple(stops)


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    if body.get("echo"):
        raise _bad("echo", "is not supported; leave it out")
    if body.get("logprobs") is not None:
        raise _bad("logprobs", "is not supported; leave it out")
    if body.get("best_of") not in (None, 1):
        raise _bad("best_of", "is not supported; use n")


def completion_request(body: Any, served: str) -> CompletionRequest:
    """``body`` as a completion request of the model ``served``; ApiError when it is not one."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    check_model(body, served)
    _refuse_unsupported(body)
    if "prompt" not in body:
        raise _bad("prompt", "is missing: send the text before the cursor")
    prompts = _prompts(body["prompt"])
    suffix, cursor = _optional_text(body, "suffix"), _optional_text(body, "cursor")
    if cursor is not None and (not cursor or suffix is not None):
        raise _bad("cursor", "must be a non-empty marker, and comes without 'suffix'")
    if cursor is None:
        gaps = tuple((prompt, suffix or "") for prompt in prompts)
    else:
        gaps = tuple((before, after) for before, _, after in (p.partition(cursor) for p in prompts))
    n = _int(body, "n", 1, 1, MAX_CHOICES)
    if n * len(prompts) > MAX_CHOICES:
        raise _bad("n", f"times the prompts ({n * len(prompts)}) exceeds {MAX_CHOICES} answers")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream", "must be true or false")
    return CompletionRequest(
        gaps=gaps,
        path=_optional_text(body, "path"),
        max_tokens=_int(body, "max_tokens", OPENAI_DEFAULT_MAX_TOKENS, 1, MAX_TOKENS),
        temperature=_number(body, "temperature", 0.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 1e-6, 1.0),
        n=n,
        stops=_stops(body.get("stop")),
        seed=_int(body, "seed", 0, 0, 2**63 - 1),
        stream=stream,
    )


@dataclass(frozen=True)
class MessageRequest:
    """A checked ``/repotune/commit-message`` request: the change as ``git diff`` text or as
    file records, and ``repotune suggest``'s options."""

    diff: str | None
    files: tuple[dict[str, Any], ...] | None
    candidates: int
    max_tokens: int
    temperature: float
    seed: int


def _files(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list):
        raise _bad("files", "must be a list of file records")
    fields = {**FILE_FIELDS, **STAGED_FIELDS}
    for index, record in enumerate(value):
        if not isinstance(record, dict) or not set(FILE_FIELDS) <= set(record) <= set(fields):
            raise _bad(
                f"files[{index}]",
                f"must be an object with {sorted(FILE_FIELDS)} (and optionally "
                f"{sorted(STAGED_FIELDS)})",
            )
        for key, value_of in record.items():
            if type(value_of) not in fields[key]:
                raise _bad(f"files[{index}].{key}", f"must not be {type(value_of).__name__}")
    return tuple(value)


def message_request(body: Any, served: str) -> MessageRequest:
    """``body`` as a commit-message request; ApiError when it is not one."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    check_model(body, served)
    diff = _optional_text(body, "diff")
    files = _files(body["files"]) if body.get("files") is not None else None
    if (diff is None) == (files is None):
        raise _bad("diff", "or 'files' must be given, and only one of them")
    return MessageRequest(
        diff=diff,
        files=files,
        candidates=_int(body, "n", 1, 1, MAX_CHOICES),
        max_tokens=_int(body, "max_tokens", SUGGEST_DEFAULT_MAX_TOKENS, 1, MAX_TOKENS),
        temperature=_number(body, "temperature", SUGGEST_DEFAULT_TEMPERATURE, 1e-6, 2.0),
        seed=_int(body, "seed", 0, 0, 2**63 - 1),
    )


@dataclass(frozen=True)
class Choice:
    """One answer: its text, why it ended (OpenAI's ``stop`` or ``length``), its tokens."""

    text: str
    finish: str
    new_tokens: int


def models_body(served: str, created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": served, "object": "model", "created": created, "owned_by": "repotune"}],
    }


def completion_body(served: str, choices: Sequence[Choice], prompt_tokens: int) -> dict[str, Any]:
    """OpenAI's ``text_completion`` object."""
    completion_tokens = sum(choice.new_tokens for choice in choices)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": served,
        "choices": [
            {"index": index, "text": choice.text, "logprobs": None, "finish_reason": choice.finish}
            for index, choice in enumerate(choices)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def stream_events(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A completion as server-sent events: one chunk per choice holding its whole text (the
    server decodes before it answers), as a streaming client reads them."""
    return [
        {key: body[key] for key in ("id", "object", "created", "model")} | {"choices": [choice]}
        for choice in body["choices"]
    ]


def message_body(served: str, messages: Sequence[str]) -> dict[str, Any]:
    return {"object": "repotune.commit_message", "model": served, "messages": list(messages)}
