"""``python train.py`` composes its config once, where ``@hydra.main`` composes it twice.

Hydra first composes the whole config in multirun mode only to read ``hydra.mode`` (``Hydra.get_mode``), then
composes it again, in run mode, for the run: about 0.2 s of CPU each on a 2-core machine, before torch is imported
(``Hydra.compose_config`` timed with ``time.process_time`` inside a ``train.py`` launch). Without ``-m`` on the
command line, ``composed_once`` makes that first composition the run's own (run mode, sweep overrides refused as
the run refuses them) and hands it to the run. A config that sets ``hydra.mode: MULTIRUN``, a ``-m`` command line
and a composition that fails all take Hydra's own path (a failing one then reports its error there, as before).

One trace is left in the run folder's ``.hydra/hydra.yaml``: ``hydra.overrides.hydra`` lacks the
``hydra.mode=RUN`` that Hydra appends when no config sets the mode (``hydra.mode`` is ``RUN`` either way, as when a
config sets it). Hydra's internals change between releases: ``tests/test_startup_imports.py`` runs ``train.py``
with and without this and compares the config each run gets.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import hydra
from hydra.types import RunMode

# The Hydra releases whose internals this follows (and the tests check); any other takes Hydra's own path.
KNOWN_HYDRA = "1.3."


@contextmanager
def composed_once(argv: Sequence[str]) -> Iterator[None]:
    """While ``@hydra.main`` runs the command line ``argv``: the run's composition made when Hydra asks for the mode,
    and reused by the run."""
    if not hydra.__version__.startswith(KNOWN_HYDRA):
        yield
        return
    # Hydra's internals, imported only for the releases they are known in.
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import get_args_parser

    try:
        arguments, _ = get_args_parser().parse_known_args(list(argv))
    except SystemExit:  # a malformed Hydra flag: Hydra's own parser reports it
        arguments = None
    if arguments is None or arguments.multirun:
        yield
        return
    get_mode, load_configuration = Hydra.get_mode, ConfigLoaderImpl.load_configuration
    kept: dict[tuple[Any, ...], Any] = {}

    def composed_for_the_run(self: Hydra, config_name: str | None, overrides: list[str]) -> Any:
        try:
            cfg = self.compose_config(config_name=config_name, overrides=overrides, run_mode=RunMode.RUN)
        except Exception:  # Hydra's own get_mode answers, and its run reports the error
            return get_mode(self, config_name, overrides)
        if cfg.hydra.mode not in (None, RunMode.RUN):
            return cfg.hydra.mode
        kept[(config_name, tuple(overrides))] = cfg
        return RunMode.RUN  # the run then composes with the same overrides (Hydra adds hydra.mode=RUN for None)

    def kept_or_loaded(
        self: ConfigLoaderImpl,
        config_name: str | None,
        overrides: list[str],
        run_mode: RunMode,
        from_shell: bool = True,
        validate_sweep_overrides: bool = True,
    ) -> Any:
        key = (config_name, tuple(overrides))
        if run_mode == RunMode.RUN and from_shell and validate_sweep_overrides and key in kept:
            return kept.pop(key)
        return load_configuration(
            self,
            config_name=config_name,
            overrides=overrides,
            run_mode=run_mode,
            from_shell=from_shell,
            validate_sweep_overrides=validate_sweep_overrides,
        )

    Hydra.get_mode = composed_for_the_run
    ConfigLoaderImpl.load_configuration = kept_or_loaded
    try:
        yield
    finally:
        Hydra.get_mode, ConfigLoaderImpl.load_configuration = get_mode, load_configuration
