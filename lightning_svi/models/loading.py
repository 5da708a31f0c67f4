"""Find the model class a config names, the framework's own or a user's, before any training starts."""

from __future__ import annotations

from hydra.utils import get_class

from lightning_svi.checks import unimportable_model
from lightning_svi.errors import ConfigError
from lightning_svi.models.base import SVIModel


def load_model_class(target: str) -> type[SVIModel]:
    """The ``SVIModel`` subclass at the dotted path ``target`` (``model._target_``), or ``ConfigError``."""
    try:
        model_class = get_class(target)
    except Exception as error:  # Hydra wraps import failures of every kind in its own errors
        raise unimportable_model(target, str(error.__cause__ or error).splitlines()[0]) from None
    if not (isinstance(model_class, type) and issubclass(model_class, SVIModel)):
        raise ConfigError(
            f"model._target_={target}: is not a subclass of lightning_svi.models.base.SVIModel; a model must "
            "subclass it (forward(batch), synthetic_data, table, and full_guide for guide=full)."
        )
    return model_class
