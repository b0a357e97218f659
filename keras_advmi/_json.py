"""Plain JSON values from NumPy and report objects (a leaf module: export and the analysis report share it)."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_jsonable(obj: Any, decimals: int | None = 6) -> Any:
    """NumPy arrays/scalars -> lists/numbers, dict keys -> str, NaN/Inf -> None, floats rounded to
    ``decimals`` (None: unrounded); objects with ``to_dict`` (e.g. ``RobustnessReport``) -> their dict;
    any other object -> ``str(obj)``."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, decimals) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, decimals) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), decimals)
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        if not np.isfinite(value):
            return None
        return value if decimals is None else round(value, decimals)
    if obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict(), decimals)
    if hasattr(obj, "tolist"):
        return to_jsonable(obj.tolist(), decimals)
    return str(obj)
