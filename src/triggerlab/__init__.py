"""triggerlab: systematic backdoor (data-poisoning) experiments on image models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("triggerlab")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
