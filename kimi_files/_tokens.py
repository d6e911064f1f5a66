"""Token counts and budgets: the platform's estimate (``POST
/v1/tokenizers/estimate-token-count``), cached, and messages cut to fit a token budget.

The model counts tokens, not characters: a page of Chinese and a page of English of the same
length differ two or three times in tokens. So a budget in tokens is fitted on the counts the
platform gives, with few calls: each document's system message is estimated once per model
(the count is kept in the reuse cache beside the document's text, keyed by the messages'
hash and the model: the same document never costs a second call), the cuts are planned on
those counts by the same rule as ``max_chars`` (:func:`kimi_files._chat.fit_budget`: the
largest first), and the final list is checked once (its count cached too: a re-run makes no
request; a little more is cut, and checked again, in the rare case the estimate of the whole
differs from the parts).

Pure: :func:`context_window`, :func:`plan_cuts`, :func:`shrink`. The rest yields actions for
the shared core (:mod:`kimi_files._steps`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._chat import Messages, cut_marker, fit_budget
from ._config import DEFAULT_MODEL
from ._steps import Blocking, Say, Steps
from .errors import ConfigurationError, KimiError

if TYPE_CHECKING:
    from ._config import RetryPolicy
    from ._models import FileContent
    from ._options import UploadOptions
    from ._steps import ClientLike

__all__ = ["CONTEXT_WINDOWS", "DEFAULT_MODEL", "TokenReport", "context_window",
           "estimate_steps", "fit_tokens_steps", "plan_cuts", "shrink", "tokens_steps"]

#: Context windows in tokens, from the platform's model pages.
CONTEXT_WINDOWS: dict[str, int] = {
    "kimi-k2.5": 262_144, "kimi-k2.6": 262_144, "kimi-k2-0905-preview": 262_144,
    "kimi-k2-turbo-preview": 262_144, "kimi-k2-thinking": 262_144, "kimi-latest": 131_072,
    "moonshot-v1-8k": 8_192, "moonshot-v1-32k": 32_768, "moonshot-v1-128k": 131_072,
    "moonshot-v1-auto": 131_072,
}
#: Tokens kept free for the marker of each document cut (the marker is short; this is ample).
MARKER_TOKENS = 40
#: Rounds of "cut a little more and check again" before giving up.
ROUNDS = 4


def context_window(model: str) -> int | None:
    """The model's context window in tokens, if known. Pure."""
    return CONTEXT_WINDOWS.get(model)


def plan_cuts(counts: Sequence[int], budget: int) -> list[int]:
    """How many tokens of each document to keep so the total fits ``budget``: the largest
    are cut first to a common cap, each one cut also paying :data:`MARKER_TOKENS` for its
    marker (:func:`kimi_files._chat.fit_budget`, the rule of ``max_chars``). Pure.

    Raises:
        ConfigurationError: the budget cannot hold the documents' markers.
    """
    keep = fit_budget(counts, budget, mark=MARKER_TOKENS)
    if keep is None:
        need = MARKER_TOKENS * sum(1 for n in counts if n > 0)
        raise ConfigurationError(
            f"max_tokens={budget:,} cannot hold {len(counts)} document(s): each one cut still "
            f"takes {MARKER_TOKENS} tokens for its marker, so at least {need:,} are needed "
            f"(whole, they take about {sum(counts):,})")
    return keep


def shrink(keep: Sequence[int], over: int) -> list[int]:
    """``keep`` less ``over`` tokens more, taken from the largest first. Pure."""
    fitted = fit_budget(keep, max(0, sum(keep) - over))
    return [0] * len(keep) if fitted is None else fitted


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def estimate_steps(policy: RetryPolicy, model: str,
                   messages: Sequence[Mapping[str, object]]) -> Steps[int]:
    """``POST /v1/tokenizers/estimate-token-count``: the request's estimated tokens (an
    estimate changes nothing: retried by the platform's rules).

    Raises:
        ModelNotFoundError: the platform does not know the model.
        MalformedResponseError: an answer without ``data.total_tokens``.
    """
    from ._endpoints import call_steps, json_of

    return (yield from call_steps("POST", "tokenizers/estimate-token-count",
                                  lambda response: _total(json_of(response), response.status_code),
                                  policy,
                                  json={"model": model, "messages": [dict(m) for m in messages]}))


def _total(answer: dict[str, object], status_code: int) -> int:
    """The ``data.total_tokens`` of a token estimate's answer.

    Raises:
        MalformedResponseError: an answer without it.
    """
    from .errors import MalformedResponseError

    data = answer.get("data")
    total = data.get("total_tokens") if isinstance(data, dict) else None
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise MalformedResponseError("the token estimate has no data.total_tokens",
                                     status_code=status_code, body=data)
    return total


def count_steps(client: ClientLike, model: str,
                messages: Sequence[Mapping[str, object]]) -> Steps[int]:
    """The tokens of a list of messages: from the reuse cache when these very messages were
    counted for this model before, else estimated and remembered."""
    import json

    cache = yield Blocking(client.reuse_cache)
    key = _sha(json.dumps([dict(m) for m in messages], ensure_ascii=False, sort_keys=True))
    if cache is not None:
        known = yield Blocking(cache.token_count, (key, model))
        if known is not None:
            return int(known)
    count = yield from estimate_steps(client.retry_policy, model, messages)
    if cache is not None:
        yield Blocking(cache.remember_tokens, (key, model, count))
    return count


def _check_budget(max_tokens: object, model: object) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConfigurationError(f"max_tokens must be a whole number of at least 1, not "
                                 f"{max_tokens!r}")
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(f"model must be a model's name, not {model!r}")


def _cut_message(message: Mapping[str, str], content: FileContent, keep_tokens: int,
                 count: int) -> tuple[dict[str, str], tuple[int, int]]:
    """The message with its text cut to about ``keep_tokens`` of ``count`` tokens (the same
    share of its characters) and marked; (characters, characters kept)."""
    import json

    doc = dict(content.document) if content.document is not None else None
    text = content.text if doc is not None else message["content"]
    kept = max(0, min(len(text), len(text) * keep_tokens // max(1, count)))
    part = text[:kept] + cut_marker(len(text) - kept, len(text))
    body = part if doc is None else json.dumps({**doc, "content": part}, ensure_ascii=False,
                                               separators=(",", ":"))
    return {"role": "system", "content": body}, (len(text), kept)


def fit_tokens_steps(client: ClientLike, found: Sequence[tuple[str, FileContent]],
                     messages: Messages, *, model: str, max_tokens: int) -> Steps[Messages]:
    """``messages`` (one per document of ``found``, in order) with the whole list's estimated
    tokens at most ``max_tokens``: the largest documents are cut first, each with a visible
    marker (``.cut`` says which, in characters). The bytes are the same on every run for the
    same documents and budget.

    Raises:
        ConfigurationError: a bad budget or model, or a budget too small for the documents.
        KimiError: the estimate failed (ModelNotFoundError for an unknown model).
    """
    _check_budget(max_tokens, model)
    counts: list[int] = []
    for message in messages:
        counts.append((yield from count_steps(client, model, [message])))
    if sum(counts) <= max_tokens:  # each count holds a request's overhead: the sum is over
        return messages
    keep = plan_cuts(counts, max_tokens)
    total = 0
    for _ in range(ROUNDS):
        out = Messages()
        out.failed.update(messages.failed)
        out.files.update(messages.files)
        for (path, content), message, k, n in zip(found, messages, keep, counts, strict=True):
            if k >= n:
                out.append(message)
                continue
            cut, sizes = _cut_message(message, content, k, n)
            out.cut[path] = sizes
            out.append(cut)
        total = yield from count_steps(client, model, out)
        if total <= max_tokens:
            return out
        yield Say.info("the cut messages are %d tokens, over max_tokens=%d: cutting more",
                       total, max_tokens)
        keep = shrink(keep, total - max_tokens + MARKER_TOKENS)
    raise ConfigurationError(f"max_tokens={max_tokens:,}: the documents could not be cut to fit "
                             f"(last estimate {total:,} tokens)")


@dataclass
class TokenReport:
    """Each document's tokens (``documents``: path -> tokens of its system message), the
    whole list's (``total``: one estimate of all of them together), the model and its context
    window (None if unknown), and the documents that could not be read (``failed``)."""

    model: str
    documents: dict[str, int] = field(default_factory=dict)
    total: int = 0
    context_window: int | None = None
    failed: dict[str, KimiError] = field(default_factory=dict)

    @property
    def fits(self) -> bool | None:
        """Whether the total fits the model's context window (None if the window is unknown)."""
        return None if self.context_window is None else self.total <= self.context_window


def tokens_steps(client: ClientLike, paths: Sequence[str | os.PathLike[str]], *,
                 model: str = DEFAULT_MODEL,
                 options: UploadOptions | None = None) -> Steps[TokenReport]:
    """Each document's tokens and the total (the documents as :func:`kimi_files.messages`
    puts them; a path given twice counts once), and whether they fit the model's context
    window.

    Raises:
        ConfigurationError: a bad model.
        KimiError: the estimate failed.
    """
    from ._chat import messages_steps
    from ._options import UploadOptions

    _check_budget(1, model)
    paths = list(dict.fromkeys(os.fsdecode(p) for p in paths))  # a path given twice: one row
    found = yield from messages_steps(client, paths, options or UploadOptions(progress=False))
    report = TokenReport(model, context_window=context_window(model), failed=dict(found.failed))
    readable = [os.fsdecode(p) for p in paths if os.fsdecode(p) not in found.failed]
    for path, message in zip(readable, found, strict=True):
        report.documents[path] = yield from count_steps(client, model, [message])
    if found:
        report.total = yield from count_steps(client, model, found)
    return report
