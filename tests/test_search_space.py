"""Search-space files and the sizes the papers quote."""

from __future__ import annotations

import pytest

from optuna_nas.errors import NasError
from optuna_nas.search_space import SPACE_DIR, load_search_space


def test_darts_space_has_about_1_1e18_architectures() -> None:
    space = load_search_space(str(SPACE_DIR / "darts.yaml"))
    assert space.choices_per_edge() == 7
    assert f"{space.architecture_count():.1e}" == "1.1e+18"


def test_factorised_space_has_about_9_3e29_architectures() -> None:
    space = load_search_space("a_darts")
    assert space.choices_per_edge() == 4 * 9 + 3
    assert f"{space.architecture_count():.1e}" == "9.3e+29"
    assert space.activation_mode == "factorized"


@pytest.mark.parametrize(("text", "message"), [
    ("operators: [none, conv_9x9]\n", "unknown operator 'conv_9x9'"),
    ("activations: [relu, gelu9]\n", "unknown activation 'gelu9'"),
    ("operatorz: [none]\n", "unknown key"),
    ("cell: {steps: four}\n", "must be an integer"),
    ("operators: [none]\n", "no operator other than 'none'"),
    ("operators: [none, skip_connect\n", "malformed YAML"),
])
def test_bad_space_files_name_file_and_reason(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(NasError, match=message) as info:
        load_search_space(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_space_file() -> None:
    with pytest.raises(NasError, match="not found"):
        load_search_space("/no/such/space.yaml")
