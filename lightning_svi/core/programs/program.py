"""``PyroProgram``: a user's Pyro model or guide, unchanged, as an ``nn.Module`` that takes a batch.

Pyro users write programs as plain functions with ``pyro.param``, as methods of an object that
holds networks (``pyro.module``), or as ``PyroModule``s. Lightning wants every learnable tensor to be
a parameter of the module it trains, created before the optimizer and before DDP wraps it. The
wrapper bridges the two without touching the user's code:

* Every ``pyro.param`` statement the program makes is answered by ``ParamRouter`` from the
  wrapper's own ``nn.Parameter``s instead of Pyro's global parameter store. The first call (the
  warm-up in ``SVIModule.setup``) creates them from the statement's initial value, in unconstrained
  space as Pyro's store does; ``pyro.module``'s statements adopt the network's own ``nn.Parameter``s.
  After ``freeze()`` a statement for a name never seen is an error, not a silent untrained tensor.
* A batch (a dict of columns) becomes the program's arguments through its ``Inputs``.
* With minibatches, ``MinibatchScale`` scales the sites inside the program's own data plate
  (``pyro.plate("data", len(x))``) by N / batch size, so the ELBO estimates the full-data ELBO.

Model and guide each have their own wrapper; a ``pyro.param`` read without an initial value
(the guide reading a parameter the model created, as Pyro's global store allows) is answered from
the partner program's parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from pyro.distributions import constraints
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.distributions import transform_to

from lightning_svi.core.programs.inputs import Batch, Inputs
from lightning_svi.core.programs.minibatch import MinibatchScale
from lightning_svi.errors import ConfigError


def _parameter_key(name: str) -> str:
    """A ``ParameterDict`` key for a Pyro parameter name (which may hold dots: ``pyro.module``'s names)."""
    return name.replace(".", "/")


class ParamRouter(Messenger):
    """Answers one program's ``pyro.param`` statements from its ``PyroProgram``'s parameters."""

    def __init__(self, program: PyroProgram) -> None:
        super().__init__()
        self.program = program

    def _pyro_param(self, msg: dict) -> None:
        name, *init = msg["args"]
        msg["value"] = self.program.param_value(name, init[0] if init else None, msg["kwargs"]["constraint"])
        msg["done"] = True


class PyroProgram(nn.Module):
    """A Pyro program (function, bound method or module) called with a batch of columns.

    ``side`` is ``"model"`` or ``"guide"``: it names the program in errors. ``num_rows`` is the
    size of the full data set, for scaling minibatches; ``data_plate`` the name of the plate over
    data rows when the program has several plates of the batch's size (else any such plate).
    """

    def __init__(
        self,
        program: Callable[..., Any],
        inputs: Inputs,
        side: str,
        name: str,
        num_rows: int,
        data_plate: str | None = None,
    ) -> None:
        super().__init__()
        self.program = program  # an nn.Module program is registered as a submodule by this assignment
        owner = getattr(program, "__self__", None)
        if isinstance(owner, nn.Module) and owner is not program:
            self.owner = owner  # a method of an object holding networks: they travel with the module
        self.learned = nn.ParameterDict()  # created by pyro.param statements, unconstrained
        self.constraints: dict[str, constraints.Constraint] = {}
        self._adopted: dict[str, nn.Parameter] = {}  # pyro.module's parameters, reachable through an `owner`
        self.created: set[str] = set()  # names this program gave an initial value
        self.inputs = inputs
        self.side = side
        self.name = name
        self.num_rows = num_rows
        self.data_plate = data_plate
        self.frozen = False
        self._router = ParamRouter(self)
        self._scales: dict[int, MinibatchScale] = {}
        self._partner: tuple[PyroProgram, ...] = ()  # a tuple: not registered as a submodule

    def pair_with(self, partner: PyroProgram) -> None:
        """Let this program read (not create) the parameters the other side created."""
        self._partner = (partner,)

    def freeze(self) -> None:
        """No new parameters from now on: the optimizer has been built over the existing ones."""
        self.frozen = True

    def forward(self, batch: Batch) -> Any:
        args, kwargs = self.inputs(batch)
        rows = len(batch["index"]) if "index" in batch else self.num_rows
        with self._router:
            if rows < self.num_rows:
                with self._minibatch_scale(rows):
                    return self.program(*args, **kwargs)
            return self.program(*args, **kwargs)

    def _minibatch_scale(self, rows: int) -> MinibatchScale:
        """One messenger per batch size, made once: every step of a run sees the same size or two."""
        scale = self._scales.get(rows)
        if scale is None:
            scale = self._scales[rows] = MinibatchScale(rows, self.num_rows, self.data_plate)
        return scale

    @property
    def identity(self) -> str:
        """The program's dotted path (``my_file.model``, ``my_file.VAE.guide``): what a checkpoint records."""
        program = self.program.func if isinstance(self.program, functools.partial) else self.program
        qualname = getattr(program, "__qualname__", type(program).__qualname__)
        return f"{getattr(program, '__module__', type(program).__module__)}.{qualname}"

    # -- parameters ---------------------------------------------------------------------------

    def has_param(self, name: str) -> bool:
        return name in self.constraints

    def param_value(
        self, name: str, init: torch.Tensor | Callable[[], torch.Tensor] | None, constraint: constraints.Constraint
    ) -> torch.Tensor:
        """The constrained value of parameter ``name``, created from ``init`` on first sight."""
        if name in self.constraints:
            return self._constrained(name)
        partner = self._partner[0] if self._partner else None
        if partner is not None and partner.has_param(name):
            if init is not None and name in partner.created:
                raise ConfigError(
                    f"pyro.param({name!r}) is created (given an initial value) by both the model and the guide: "
                    "in Pyro's global parameter store they would silently share one tensor. Rename one of them."
                )
            return partner._constrained(name)
        if init is None:
            raise ConfigError(
                f"the {self.side} reads pyro.param({name!r}) before any program created it with an initial value."
            )
        if self.frozen:
            raise ConfigError(
                f"the {self.side} created pyro.param({name!r}) after the first step: every parameter must exist "
                "when training starts (it is created by one warm-up call of the model and the guide). "
                "Create it on every call, not only in some branches."
            )
        self._create(name, init() if callable(init) else init, constraint)
        return self._constrained(name)

    def _create(self, name: str, init: torch.Tensor, constraint: constraints.Constraint) -> None:
        self.created.add(name)
        self.constraints[name] = constraint
        if isinstance(init, nn.Parameter) and init.requires_grad:
            # pyro.module: the network's own parameter, trained in place.
            reachable = (self, *self._partner)
            if any(parameter is init for module in reachable for parameter in module.parameters()):
                self._adopted[name] = init
            else:
                self.learned[_parameter_key(name)] = init
            self.constraints[name] = constraints.real
            return
        with torch.no_grad():
            unconstrained = transform_to(constraint).inv(torch.as_tensor(init).detach().clone())
        self.learned[_parameter_key(name)] = nn.Parameter(unconstrained)

    def _unconstrained(self, name: str) -> nn.Parameter:
        adopted = self._adopted.get(name)
        return adopted if adopted is not None else self.learned[_parameter_key(name)]

    def _constrained(self, name: str) -> torch.Tensor:
        constraint = self.constraints[name]
        unconstrained = self._unconstrained(name)
        if constraint is constraints.real:
            return unconstrained
        return transform_to(constraint)(unconstrained)

    def named_pyro_params(self) -> dict[str, tuple[nn.Parameter, constraints.Constraint]]:
        """Each parameter a ``pyro.param`` statement created, by its Pyro name, with its constraint."""
        return {name: (self._unconstrained(name), constraint) for name, constraint in self.constraints.items()}

    # -- what the framework asks of any model --------------------------------------------------

    def log_evidence(self, data: Batch) -> torch.Tensor | None:
        """No closed form is known for a user's program."""
        return None

    def exact_posterior(self, data: Batch) -> None:
        return None


@contextmanager
def parameters_in_scope(model: nn.Module, guide: nn.Module) -> Iterator[None]:
    """``pyro.param(name)`` outside a model or guide call answered by the programs' parameters, as Pyro's
    global store answers it after ``svi.step``; a no-op where neither is a wrapped program."""
    programs = [program for program in (model, guide) if isinstance(program, PyroProgram)]
    if not programs:
        yield
        return
    with programs[0]._router:  # it reads the partner's parameters too
        yield
