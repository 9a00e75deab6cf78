"""Named, reproducible training recipes: model + data + loss + a CPU and a GPU preset + an evaluation.

`core` says what a recipe is and trains one (`train_recipe`); `course` registers the course's recipes.
"""

from minilineage.recipes import (  # noqa: F401  (importing them registers every recipe)
    course,
    dit,
    recaption,
    scale,
    speed,
    video,
    video_design,
    video_text,
    vision,
)
from minilineage.recipes.core import (
    PRESETS,
    RECIPES,
    Preset,
    Recipe,
    TrainResult,
    get_recipe,
    register,
    train_recipe,
)
from minilineage.recipes.dit import study_records

__all__ = ["PRESETS", "RECIPES", "Preset", "Recipe", "TrainResult", "get_recipe", "register", "study_records", "train_recipe"]
