"""When an ICU stay ends, relative to its last measurement row.

The tokens carry a stay's measurement rows but not its `outtime`: a real stay ends some time after
its last charted row (the patient leaves between two rounds), and in some datasets every stay has
the same length (a fixed 48-hour window). Two learned, k-anonymous quantile lists describe this:

* `last_row_hours`: hours from `intime` to a stay's last measurement row. The sampler lets a stay
  close once its clock reaches the lowest of these (docs/tokens.md §5): the length of stay itself
  is too strict a floor when every stay lasts exactly its window, since the rows end before it.
* `last_row_to_outtime_hours`: hours from the last row to `outtime`.

Decoding draws a stay's end as its last row plus a drawn tail, then passes that length through the
train LOS distribution, x -> Q(F(x)) (`stay_length`). Where the LOS distribution is continuous this
is the identity; at its ends it snaps onto a value many patients share, so a dataset whose stays
all last 48 h decodes to stays of 48 h, not 47.6 h.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from synehrgy_assets.core.tokens.relations import _cdf, _quantile

STAY_END = ("last_row_hours", "last_row_to_outtime_hours")


def fit_stay_end(visits: pd.DataFrame, measurements: pd.DataFrame,
                 quantiles: Callable[[np.ndarray, np.ndarray], list | None]) -> dict[str, list | None]:
    """The two quantile lists over train visits that have measurement rows and a known LOS.

    `quantiles(values, patients)` is the vocabulary's k-anonymous quantile function (None when too
    few patients hold the values). A tail below 0 (a row charted after `outtime`) counts as 0.
    """
    if measurements.empty:
        return {name: None for name in STAY_END}
    last = measurements.groupby("icustay_id", sort=False)["hours"].max()
    stays = visits[["icustay_id", "subject_id", "los_hours"]].drop_duplicates("icustay_id").set_index("icustay_id")
    stays = stays.join(last.rename("last_row"), how="inner")
    los = pd.to_numeric(stays["los_hours"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    last_row = stays["last_row"].to_numpy(dtype=float)
    patients = stays["subject_id"].to_numpy()
    known = ~np.isnan(los) & ~np.isnan(last_row)
    # The floor a stay must reach before it may close counts stays with a row inside the stay only:
    # a stay whose rows all precede intime would license stays without any event.
    inside = known & (last_row > 0)
    return {"last_row_hours": quantiles(last_row[inside], patients[inside]),
            "last_row_to_outtime_hours": quantiles(np.maximum(los[known] - last_row[known], 0.0), patients[known])}


def stay_length(last_row: np.ndarray, tail: np.ndarray, los_quantiles) -> np.ndarray:
    """LOS hours of stays whose last measurement row is at `last_row`, given drawn `tail` hours.

    Never shorter than the last row. Without stored LOS quantiles it is last row + tail."""
    end = last_row + np.maximum(tail, 0.0)
    if los_quantiles is None or len(los_quantiles) < 2 or len(end) == 0:
        return end
    table = np.broadcast_to(np.asarray(los_quantiles, dtype=float), (len(end), len(los_quantiles)))
    return np.maximum(_quantile(table, _cdf(table, end)), last_row)
