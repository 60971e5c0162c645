"""The run engine: one experiment from a validated config to its run directory.

``experiment`` is the orchestrator (read it top to bottom); ``prepare`` builds and checks
everything before any file is written; ``stages`` holds the steps it calls; ``rundir`` is the
only module that writes or reads a run directory; ``inputs`` and ``feature_cache`` feed the
training loop; ``shared_training`` lets a grid's runs that differ only in their defence share
one trained model.
"""
