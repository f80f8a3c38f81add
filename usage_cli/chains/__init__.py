"""Chains: one command that runs several stages in order (``usage refine-psa`` = ``psa-labels``,
``train-aff`` and the walk of ``psa-walk``). A chain calls each stage's ``run`` (or, for a last step
whose folder it publishes under its own name, the stage's work function), hands them paths, and
skips a step whose folder's manifest says it is done with the same options and inputs; the stages
still talk only through files."""
