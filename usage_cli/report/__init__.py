"""``usage report --html``: one self-contained page per run.

One job per module: :mod:`.inputs` finds what was evaluated (metrics files, the artifacts they
scored, their manifests, the dataset); :mod:`.figures` draws the threshold curves and per-class bars
with matplotlib; :mod:`.gallery` picks images and renders their tiles; :mod:`.page` writes the HTML.
``usage_cli.stages.report`` only orchestrates them.
"""
