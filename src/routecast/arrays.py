"""The array aliases every numeric module shares: one name per dtype.

``FloatArray`` holds qualities, costs, scores and weights; ``IntArray`` column or row
indices; ``BoolArray`` masks. Shapes are documented where the arrays are used.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
