"""Systematic studies: a grid of experiments declared in YAML, run once each, resumable.

A grid spec (``spec``) names a ``base`` experiment, the dotted keys to vary
(``grid``: a cartesian product; ``zip``: groups varied together), ``repeats`` with
seeds derived from ``seed``, and optionally a rate-0 ``clean_baseline`` for every
cell. ``plan`` expands it into runs with content-hashed ids, ``store`` keeps the
manifest and the runs on disk, ``executors`` run them (here, in worker processes,
on Ray; ``slurm``: as Slurm job arrays), and ``runner`` ties these together
(``run_grid``). ``failures`` names why a run did not finish, and ``status`` says
where each run of a grid stands.
"""
