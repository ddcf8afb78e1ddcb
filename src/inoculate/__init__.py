"""inoculate: inoculation prompting for LLM fine-tuning (Tan et al. 2025; Wichers et al. 2025)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("inoculate")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
