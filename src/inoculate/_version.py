"""The installed package's version (ground floor: what the run folder, cache keys and manifests record).

Modules below the package face read it from here: `import inoculate` would make every one of them
import the face (whose TYPE_CHECKING imports name the top of the package). `inoculate.__version__`
reads the same metadata itself, so `import inoculate` loads no submodule.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("inoculate")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"
