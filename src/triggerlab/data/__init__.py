"""Datasets: in-memory uint8 containers (``dataset``), one loader per on-disk format, the
preparation of a config's data (``prepare``) and fetching (``fetch``). What each dataset is
and which loader reads it is declared in ``triggerlab.catalogue.datasets``."""
