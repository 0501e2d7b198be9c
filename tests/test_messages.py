"""`install_warning_format`: every Python warning prints as one `emofuse: warning: ...` line."""

from __future__ import annotations

import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from emofuse.data.labels import check_score_range
from emofuse.messages import format_warning, install_warning_format, show_warning


@pytest.fixture
def fresh_warnings():
    """An 'always' filter inside; on the way out the printing pytest had is back."""
    with warnings.catch_warnings():  # restores showwarning, formatwarning and the filters after
        warnings.resetwarnings()
        warnings.simplefilter("always")
        yield


@pytest.fixture
def thirdlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A package outside emofuse that warns about its caller (stacklevel=2), as libraries do."""
    package = tmp_path / "thirdlib"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent("""
        import warnings

        def old_api():
            warnings.warn("old_api is deprecated;\\n  use new_api", UserWarning, stacklevel=2)
            return 1

        def going_away():
            warnings.warn("going_away goes in 2.0", FutureWarning, stacklevel=2)
            return 2
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import thirdlib

    yield thirdlib
    sys.modules.pop("thirdlib", None)


def clipped_labels() -> dict:
    # a statement over several lines, like the one whose opening line Python's format printed
    datasets = {
        "train": check_score_range(np.array([5.0]), "data.pkl", lambda i: f"row {i}", clip=True,
                                   stacklevel=2),
    }
    return datasets


def test_an_emofuse_warning_is_one_line_without_its_source_line(fresh_warnings, capsys) -> None:
    with warnings.catch_warnings(record=True) as caught:
        clipped_labels()
    w = caught[0]
    before = warnings._formatwarning_orig(w.message, w.category, w.filename, w.lineno)  # type: ignore[attr-defined]
    # Python's own format: path, line, category, then the source line the warning points at
    assert (
        "UserWarning" in before and '"train": check_score_range(' in before and len(before.splitlines()) == 2
    )

    install_warning_format()
    clipped_labels()
    after = capsys.readouterr().err
    assert after == ("emofuse: warning: data.pkl: 1 sentiment label(s) outside [-3, 3]: row 0 = 5; "
                     "clipped to [-3, 3]\n")


def test_a_third_party_warning_keeps_its_category_and_names_its_package(fresh_warnings, thirdlib,
                                                                          capsys) -> None:
    install_warning_format()
    # stacklevel=2 points the warning at this file; it is still thirdlib's
    thirdlib.old_api()
    thirdlib.going_away()
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["emofuse: warning: UserWarning from thirdlib: old_api is deprecated; use new_api",
                     "emofuse: warning: FutureWarning from thirdlib: going_away goes in 2.0"]


def test_numpy_s_own_words_keep_their_category(fresh_warnings, capsys) -> None:
    install_warning_format()
    np.log(np.zeros(1))
    err = capsys.readouterr().err
    assert err.startswith("emofuse: warning: RuntimeWarning from ") and err.endswith(
        ": divide by zero encountered in log\n") and err.count("\n") == 1


def test_installing_twice_changes_nothing(fresh_warnings, thirdlib, capsys) -> None:
    install_warning_format()
    install_warning_format()
    assert warnings.showwarning is show_warning and warnings.formatwarning is format_warning
    thirdlib.going_away()
    assert (
        capsys.readouterr().err == "emofuse: warning: FutureWarning from thirdlib: going_away goes in 2.0\n"
    )
    # the filters still decide what prints: only the printing changed
    warnings.simplefilter("ignore", FutureWarning)
    thirdlib.going_away()
    assert capsys.readouterr().err == ""


def test_format_warning_names_the_module_of_the_file(thirdlib) -> None:
    import emofuse.data.labels as labels

    # logging.captureWarnings and other callers of formatwarning get the same one line
    assert format_warning("clipped", UserWarning, labels.__file__, 54, "    warnings.warn(") == (
        "emofuse: warning: clipped\n")
    assert format_warning(FutureWarning("going"), FutureWarning, thirdlib.__file__, 9) == (
        "emofuse: warning: FutureWarning from thirdlib: going\n")
    assert format_warning("x", UserWarning, "/nowhere/some_script.py", 1) == (
        "emofuse: warning: UserWarning from some_script: x\n")
