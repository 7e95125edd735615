"""The model zoo: spec strings, architectures, training recipes, inference and the checkpoint store."""

from .checkpoint import checkpoint_name, load_checkpoint, save_checkpoint
from .ensemble import Ensemble
from .external import LoadedModel, check_outputs, load_user_model, load_weights
from .spec import VALID_FORMS, ModelSpec, parse_spec
from .store import TrainedModel, evaluate, load_model, train
from .inference import error_rate, predict, predict_logits
from .train import Recipe, default_recipe, fit
from .zoo import build_model

__all__ = ["ModelSpec", "parse_spec", "VALID_FORMS", "build_model", "Recipe", "default_recipe", "fit",
           "predict", "predict_logits", "error_rate", "train", "load_model", "evaluate", "TrainedModel", "checkpoint_name",
           "load_checkpoint", "save_checkpoint", "LoadedModel", "load_user_model", "load_weights",
           "check_outputs", "Ensemble"]
