"""Small helpers for rich Dagster metadata (plots, tables)."""


import base64

import dagster as dg


def png_markdown(png: bytes, title: str = "plot") -> dg.MetadataValue:
    """Embed a PNG in markdown metadata so the Dagster UI shows the plot inline."""
    data = base64.b64encode(png).decode("ascii")
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{data})")


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
