"""Small helpers for rich Dagster metadata (plots, tables)."""


import base64
import math
import re

import dagster as dg


def png_markdown(png: bytes, title: str = "plot") -> dg.MetadataValue:
    """Embed a PNG in markdown metadata so the Dagster UI shows the plot inline."""
    data = base64.b64encode(png).decode("ascii")
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{data})")


def md_escape(value) -> str:
    """A Markdown table cell: `|` escaped (an unescaped one starts a new cell and shifts the row),
    line breaks as spaces."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def md_table(frame, floatfmt: str = ".4g") -> str:
    """A frame as a Markdown table whose text cells are escaped (`md_escape`); NaN as an empty cell."""
    def cell(value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else format(value, floatfmt)
        return md_escape(value)

    lines = ["| " + " | ".join(md_escape(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def metadata_key(text: str) -> str:
    """A readable, stable metadata key from a quantity's name ("KS los_hours" -> "ks_los_hours")."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "value"


def gate_figures(rows: list[dict]) -> dict[str, dg.MetadataValue]:
    """Each compared quantity's measured value, threshold and real-test baseline as float metadata
    (what the UI's plots panel draws across runs); figures that are not finite (held back, not
    measured) are left out."""
    out = {}
    for row in rows:
        key = metadata_key(row["quantity"])
        for name, field in (("measured", "measured"), ("threshold", "threshold"), ("baseline", "real_test_baseline")):
            value = row.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[f"{key}/{name}"] = dg.MetadataValue.float(float(value))
    return out


def figure_png(fig) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def histogram_png(values, title: str, xlabel: str, bins: int = 40) -> bytes:
    """An aggregate histogram (counts per bin only: no individual record is drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(values, bins=bins, color="#3b6ea8")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return figure_png(fig)


class Progress:
    """Structured progress of a long-running asset, as `AssetObservation`s of that asset.

    Each observation carries `progress` (0-1), `elapsed_seconds`, `eta_seconds` (from the rate so
    far; None until something is done) and the caller's fields (step, epoch, losses; patients done
    and total). They appear on the asset's page as they arrive (Events, and Plots for the numbers),
    and the CLI's console logger draws them as a progress bar (orchestration/run_logging.py).
    At most one every `every_seconds`, except when forced (a validation, the end).
    """

    def __init__(self, context: dg.AssetExecutionContext, every_seconds: float = 10.0):
        import time

        self._context = context
        self._every = float(every_seconds)
        self._clock = time.perf_counter
        self._started = self._clock()
        self._last: float | None = None
        self.emitted = 0

    def report(self, fraction: float, force: bool = False, **fields) -> bool:
        now = self._clock()
        if not force and self._last is not None and now - self._last < self._every:
            return False
        fraction = min(max(float(fraction), 0.0), 1.0)
        elapsed = now - self._started
        eta = elapsed * (1.0 - fraction) / fraction if fraction > 0 else None
        metadata = {"progress": round(fraction, 4), "elapsed_seconds": round(elapsed, 1),
                    "eta_seconds": None if eta is None else round(eta, 1)}
        metadata.update({k: v for k, v in fields.items() if v is not None})
        self._context.log_event(dg.AssetObservation(asset_key=self._context.asset_key, metadata=metadata))
        self._last = now
        self.emitted += 1
        return True
