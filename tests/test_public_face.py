"""`import inoculate` is light, and its main nouns resolve lazily (PEP 562)."""

from __future__ import annotations

import subprocess
import sys

import inoculate

FACE = {
    "apply_inoculation": "inoculate.transform",
    "neutralize": "inoculate.transform",
    "screen": "inoculate.screen",
    "train": "inoculate.train",
    "get_backend": "inoculate.generate",
    "get_scorer": "inoculate.scorers",
    "load_experiment": "inoculate.experiment",
    "run_experiment": "inoculate.experiment",
    "write_report": "inoculate.report",
}


def test_every_face_name_resolves_to_its_function() -> None:
    assert set(inoculate.__all__) == {"__version__", *FACE}
    for name, module in FACE.items():
        obj = getattr(inoculate, name)
        assert callable(obj) and obj.__name__ == name, name
        assert obj.__module__.startswith(module), (name, obj.__module__)
    assert set(FACE) <= set(dir(inoculate))


def test_train_and_screen_stay_functions_once_their_modules_are_imported() -> None:
    import inoculate.screen  # noqa: F401
    import inoculate.train  # noqa: F401
    from inoculate import screen, train
    from inoculate.train import TrainConfig

    assert train is sys.modules["inoculate.train"].train
    assert screen is sys.modules["inoculate.screen"].screen
    assert TrainConfig.__module__ == "inoculate.train"


def test_import_inoculate_is_light() -> None:
    code = (
        "import sys, inoculate; inoculate.__version__; "
        "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'scipy') if m in sys.modules)); "
        "print(sorted(m for m in sys.modules if m.startswith('inoculate.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy, ours = out.stdout.splitlines()
    assert heavy == "[]" and ours == "[]"
    try:
        inoculate.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
