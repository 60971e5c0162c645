"""Defence implementations: one module per kind, each a ``run_<kind>(spec, inputs)`` that
returns a ``DefenseOutcome``; one shared evaluation (``evaluation.py``).

Each kind's parameters are declared, torch-free, in ``triggerlab.catalogue.defenses``. A
defence sees only its ``DefenseInputs``: the trained model, the task, the training set as
the model saw it and, when its kind holds data back, clean samples set aside before
poisoning; never the test set nor which samples were poisoned.
"""
