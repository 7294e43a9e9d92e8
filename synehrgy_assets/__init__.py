"""synehrgy: synthetic MIMIC-III EHRs with the SynEHRgy method, as a Dagster asset graph.

`synehrgy_assets.core` is the pure core (no Dagster); `synehrgy_assets.defs` wires it as assets.
"""

__version__ = "0.1.0"
