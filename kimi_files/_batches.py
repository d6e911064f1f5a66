"""The platform's Batch API: ``client.batches`` and the way from documents to answers.

Not :mod:`kimi_files._batch` (the folder upload executor behind ``ingest``). Here a ``.jsonl``
of chat requests is uploaded with purpose ``batch`` and answered later, all at once:

* the resource: ``client.batches.create / retrieve / list / cancel`` (``POST /v1/batches``,
  ``GET /v1/batches[/{id}]``, ``POST /v1/batches/{id}/cancel``);
* the helpers: ``build`` (one request per document, its extracted text as the system
  message), ``check`` (every rule of the input file, nothing sent), ``submit`` (check,
  upload or reuse, create; split over 100 MB, with a manifest), ``wait`` (poll with backoff)
  and ``results`` (download the output and error files and join them to the documents).

Every step is written once, as steps (:mod:`kimi_files._steps`), for :class:`Batches` (sync)
and :class:`AsyncBatches` (asyncio), thin twins over the client's ``run``. The decisions
(the rules, the split, the join, the poll delay) are pure, in :mod:`kimi_files._batch_input`
and here (:func:`poll_delay`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from ._batch_build import BuildReport, build_steps
from ._batch_flow import (
    Manifest,
    _check_steps,
    cancel_batch_steps,
    create_batch_steps,
    list_batches_steps,
    raise_for_batches,
    resolve_target,
    retrieve_batch_steps,
    submit_steps,
    wait_steps,
)
from ._batch_input import (
    CHAT_ENDPOINT,
    InputChecker,
)
from ._batch_models import (
    DEFAULT_COMPLETION_WINDOW,
    Batch,
    BatchList,
)
from ._batch_results import ResultsReport, results_steps

if TYPE_CHECKING:
    from ._client import AsyncKimiFiles, KimiFiles


__all__ = ["AsyncBatches", "Batches"]

#: (the resource classes have a method named ``list``, which hides the builtin inside them)
_Batches = list[Batch]


# --- the resource ---------------------------------------------------------------------------------


class Batches:
    """``client.batches``: the Batch API for :class:`~kimi_files.KimiFiles`."""

    def __init__(self, client: KimiFiles) -> None:
        self._client = client

    def create(self, *, input_file_id: str, endpoint: str = CHAT_ENDPOINT,
               completion_window: str = DEFAULT_COMPLETION_WINDOW,
               metadata: Mapping[str, str] | None = None) -> Batch:
        """Create a batch of an uploaded input file (purpose ``batch``).

        Raises:
            APIStatusError: the platform refused it. After a lost answer it is not sent
                again (a batch may exist: ``list`` shows it).
        """
        c = self._client
        return c.run(create_batch_steps(c.retry_policy, input_file_id, endpoint=endpoint,
                                        completion_window=completion_window, metadata=metadata))

    def retrieve(self, batch_id: str) -> Batch:
        """Raises:
            NotFoundError: no such batch.
        """
        return self._client.run(retrieve_batch_steps(self._client.retry_policy, batch_id))

    def list(self, *, limit: int | None = None, after: str | None = None) -> BatchList:
        """Raises:
            APIStatusError: the platform refused it.
        """
        return self._client.run(list_batches_steps(self._client.retry_policy, limit=limit,
                                                   after=after))

    def cancel(self, batch_id: str) -> Batch:
        """Raises:
            NotFoundError: no such batch.
        """
        return self._client.run(cancel_batch_steps(self._client.retry_policy, batch_id))

    def build(self, paths: Iterable[str | os.PathLike[str]], *, model: str, prompt: str,
              output: str | os.PathLike[str], body: Mapping[str, object] | None = None,
              strict: bool = False, force: bool = False,
              any_model: bool = False) -> BuildReport:
        """One request per document: see :func:`build_steps`.

        Raises:
            KimiError: as :func:`build_steps`.
        """
        return self._client.run(build_steps(self._client, paths, model=model, prompt=prompt,
                                            output=output, body=body, strict=strict,
                                            force=force, any_model=any_model))

    def check(self, path: str | os.PathLike[str], *, any_model: bool = False) -> InputChecker:
        """Every rule of an input file, nothing sent (no request at all).

        Raises:
            BatchInputError: the file breaks a rule (``.violations`` lists them all).
        """
        return self._client.run(_check_steps(path, any_model))

    def submit(self, path: str | os.PathLike[str], *,
               completion_window: str = DEFAULT_COMPLETION_WINDOW,
               metadata: Mapping[str, str] | None = None, force: bool = False,
               any_model: bool = False) -> Manifest:
        """Check, upload (or reuse) and create, resuming an earlier submit of this input:
        see :func:`submit_steps`.

        Raises:
            KimiError: as :func:`submit_steps`.
        """
        return self._client.run(submit_steps(self._client, path,
                                             completion_window=completion_window,
                                             metadata=metadata, force=force,
                                             any_model=any_model))

    def wait(self, target: str | os.PathLike[str] | Manifest | Batch, *,
             on_update: Callable[[_Batches], None] | None = None,
             timeout: float | None = None) -> _Batches:
        """Poll until done: see :func:`wait_steps`; a batch that failed, expired or was
        cancelled raises.

        Raises:
            BatchError: a batch did not complete (``.errors``: the platform's).
        """
        ids = resolve_target(target).ids
        batches = self._client.run(wait_steps(self._client, ids, on_update=on_update,
                                              timeout=timeout))
        raise_for_batches(batches)
        return batches

    def results(self, target: str | os.PathLike[str] | Manifest | Batch,
                output: str | os.PathLike[str], *, ids: Mapping[str, str] | None = None,
                map_file: str | os.PathLike[str] | None = None,
                cleanup: bool = False) -> ResultsReport:
        """The answers joined to the documents: see :func:`results_steps`.

        Raises:
            KimiError: as :func:`results_steps`.
        """
        return self._client.run(results_steps(self._client, target, output, ids=ids,
                                              map_file=map_file, cleanup=cleanup))


class AsyncBatches:
    """``client.batches`` of :class:`~kimi_files.AsyncKimiFiles`: :class:`Batches`, awaited."""

    def __init__(self, client: AsyncKimiFiles) -> None:
        self._client = client

    async def create(self, *, input_file_id: str, endpoint: str = CHAT_ENDPOINT,
                     completion_window: str = DEFAULT_COMPLETION_WINDOW,
                     metadata: Mapping[str, str] | None = None) -> Batch:
        """:meth:`Batches.create`, awaited.

        Raises:
            APIStatusError: as :meth:`Batches.create`.
        """
        c = self._client
        return await c.run(create_batch_steps(c.retry_policy, input_file_id, endpoint=endpoint,
                                              completion_window=completion_window,
                                              metadata=metadata))

    async def retrieve(self, batch_id: str) -> Batch:
        """Raises:
            NotFoundError: no such batch.
        """
        return await self._client.run(retrieve_batch_steps(self._client.retry_policy, batch_id))

    async def list(self, *, limit: int | None = None, after: str | None = None) -> BatchList:
        """Raises:
            APIStatusError: the platform refused it.
        """
        return await self._client.run(list_batches_steps(self._client.retry_policy, limit=limit,
                                                         after=after))

    async def cancel(self, batch_id: str) -> Batch:
        """Raises:
            NotFoundError: no such batch.
        """
        return await self._client.run(cancel_batch_steps(self._client.retry_policy, batch_id))

    async def build(self, paths: Iterable[str | os.PathLike[str]], *, model: str, prompt: str,
                    output: str | os.PathLike[str], body: Mapping[str, object] | None = None,
                    strict: bool = False, force: bool = False,
                    any_model: bool = False) -> BuildReport:
        """:meth:`Batches.build`, awaited.

        Raises:
            KimiError: as :func:`build_steps`.
        """
        return await self._client.run(build_steps(self._client, paths, model=model,
                                                  prompt=prompt, output=output, body=body,
                                                  strict=strict, force=force,
                                                  any_model=any_model))

    async def check(self, path: str | os.PathLike[str], *,
                    any_model: bool = False) -> InputChecker:
        """:meth:`Batches.check`, off the event loop.

        Raises:
            BatchInputError: as :meth:`Batches.check`.
        """
        return await self._client.run(_check_steps(path, any_model))

    async def submit(self, path: str | os.PathLike[str], *,
                     completion_window: str = DEFAULT_COMPLETION_WINDOW,
                     metadata: Mapping[str, str] | None = None,
                     force: bool = False, any_model: bool = False) -> Manifest:
        """:meth:`Batches.submit`, awaited.

        Raises:
            KimiError: as :func:`submit_steps`.
        """
        return await self._client.run(submit_steps(self._client, path,
                                                   completion_window=completion_window,
                                                   metadata=metadata, force=force,
                                                   any_model=any_model))

    async def wait(self, target: str | os.PathLike[str] | Manifest | Batch, *,
                   on_update: Callable[[_Batches], None] | None = None,
                   timeout: float | None = None) -> _Batches:
        """:meth:`Batches.wait`, awaited.

        Raises:
            BatchError: as :meth:`Batches.wait`.
        """
        ids = resolve_target(target).ids
        batches = await self._client.run(wait_steps(self._client, ids, on_update=on_update,
                                                    timeout=timeout))
        raise_for_batches(batches)
        return batches

    async def results(self, target: str | os.PathLike[str] | Manifest | Batch,
                      output: str | os.PathLike[str], *, ids: Mapping[str, str] | None = None,
                      map_file: str | os.PathLike[str] | None = None,
                      cleanup: bool = False) -> ResultsReport:
        """:meth:`Batches.results`, awaited.

        Raises:
            KimiError: as :func:`results_steps`.
        """
        return await self._client.run(results_steps(self._client, target, output, ids=ids,
                                                    map_file=map_file, cleanup=cleanup))


