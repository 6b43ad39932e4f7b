"""Search-space files and the sizes the papers quote."""

from __future__ import annotations

import pytest

from optuna_nas.darts.space import SearchSpace, load_search_space
from optuna_nas.errors import NasError
from optuna_nas.ops import PAPER_ACTIVATIONS
from optuna_nas.resources import shipped_file, shipped_names

SHIPPED = ("darts", "a_darts", "pc_darts", "a_darts_groups")
GROUPS = """
operators: [none, skip_connect]
operator_groups:
  conv: [sep_conv, dil_conv]
  kernel: [3x3, 5x5]
operator_template: "{conv}_{kernel}"
activations: [relu, selu]
activation_mode: factorized
"""


def test_darts_space_has_about_1_1e18_architectures() -> None:
    space = load_search_space(str(shipped_file("spaces", "darts")))
    assert space.choices_per_edge() == 7
    assert f"{space.architecture_count():.1e}" == "1.1e+18"


def test_factorised_space_has_about_9_3e29_architectures() -> None:
    space = load_search_space("a_darts")
    assert space.choices_per_edge() == 4 * 9 + 3
    assert f"{space.architecture_count():.1e}" == "9.3e+29"
    assert str(space.activation_mode) == "factorized" and space.activation_mode.searches_beta


@pytest.mark.parametrize(("text", "message"), [
    ("operators: [none, conv_4x4]\n", "unknown operator 'conv_4x4'"),  # generic kernels are odd, 1..11
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


def test_operator_groups_expand_to_every_combination_first_group_slowest(tmp_path) -> None:
    path = tmp_path / "groups.yaml"
    path.write_text(GROUPS)
    space = load_search_space(str(path))
    assert space.operators == ("none", "skip_connect")  # the plain operators, as written
    assert space.grouped_operators == ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
    assert space.all_operators == space.operators + space.grouped_operators
    assert space.grouped_operator_choices()[2] == ("dil_conv_3x3", (1, 0))
    assert space.groups == {"conv": ("sep_conv", "dil_conv"), "kernel": ("3x3", "5x5")}
    assert space.grouped_parameterized
    assert space.choices_per_edge() == 1 + 4 * 2  # grouped operators count like plain ones


def test_groups_may_use_generic_kernel_sizes_and_any_template_text() -> None:
    space = SearchSpace("big", operators=("none", "skip_connect"), operator_template="{kind}_conv_{k}x{k}",
                        operator_groups={"kind": ["sep", "dil"], "k": ["7", "9"]})
    assert space.grouped_operators == ("sep_conv_7x7", "sep_conv_9x9", "dil_conv_7x7", "dil_conv_9x9")


def test_a_group_named_twice_is_refused() -> None:
    with pytest.raises(NasError, match="'operator_groups' names a group twice"):
        SearchSpace("twice", operator_template="{k}", operator_groups=(("k", ("conv_1x1",)), ("k", ("conv_3x3",))))


def test_the_same_space_with_and_without_groups_has_the_same_size() -> None:
    flat = SearchSpace("flat", activations=PAPER_ACTIVATIONS, activation_mode="factorized")
    grouped = SearchSpace("grouped", operators=("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"),
                          operator_groups={"conv": ["sep_conv", "dil_conv"], "kernel": ["3x3", "5x5"]},
                          operator_template="{conv}_{kernel}", activations=PAPER_ACTIVATIONS,
                          activation_mode="factorized")
    assert sorted(grouped.all_operators) == sorted(flat.operators)
    assert grouped.architecture_count() == flat.architecture_count()
    assert f"{grouped.architecture_count():.1e}" == "9.3e+29"


@pytest.mark.parametrize(("groups", "mode", "factorised", "flat"), [
    # Σ vs Π: the family takes 1 α slot + Σ|g| group logits instead of Π|g| α columns
    ({"conv": ["sep_conv", "dil_conv", "conv"], "kernel": ["3x3", "5x5", "7x7"]}, "fixed:relu", 2 + 1 + 6, 2 + 9),
    ({"conv": ["sep_conv", "dil_conv", "conv"], "kernel": ["1x1", "3x3", "5x5", "7x7", "9x9", "11x11"]},
     "fixed:relu", 2 + 1 + 9, 2 + 18),
    # with A-DARTS's β on top: 9 activation logits; flat, every (operator, activation) is one α column
    ({"conv": ["sep_conv", "dil_conv", "conv"], "kernel": ["3x3", "5x5", "7x7"]}, "factorized", 2 + 1 + 6 + 9,
     2 + 9 * 9),
    # non-factorised: α has the plain operators and one family slot per activation
    ({"conv": ["sep_conv", "dil_conv", "conv"], "kernel": ["3x3", "5x5", "7x7"]}, "non_factorized",
     2 + 9 + 6, 2 + 9 * 9),
])
def test_factorised_architecture_parameters_per_edge(groups: dict[str, list[str]], mode: str, factorised: int,
                                                     flat: int) -> None:
    space = SearchSpace("s", operators=("none", "skip_connect"), operator_groups=groups,
                        operator_template="{conv}_{kernel}", activations=PAPER_ACTIVATIONS, activation_mode=mode)
    assert space.architecture_parameters_per_edge() == factorised
    assert space.architecture_parameters_per_edge(factorized=False) == flat
    sizes = [len(c) for c in groups.values()]
    if mode == "fixed:relu":
        assert factorised - flat == 1 + sum(sizes) - sizes[0] * sizes[1]


def test_architecture_parameters_per_edge_of_the_papers_spaces() -> None:
    darts, a_darts = load_search_space("darts"), load_search_space("a_darts")
    assert darts.architecture_parameters_per_edge() == darts.architecture_parameters_per_edge(False) == 8
    assert a_darts.architecture_parameters_per_edge() == 8 + 9  # α and β
    assert a_darts.architecture_parameters_per_edge(factorized=False) == 40  # the paper's 4 x 9 + 4
    assert a_darts.architecture_parameters_per_edge(activation_mode="non_factorized") == 40


@pytest.mark.parametrize(("edit", "key", "reason"), [
    ({"operator_groupz": 1}, "unknown key", "operator_groupz"),
    ({"operator_template": "{conv}_{size}"}, "'operator_template'", "names group 'size'"),
    ({"operator_template": "{conv}"}, "'operator_template'", "does not use group(s) kernel"),
    ({"operator_template": "{conv}_{kernel!r}"}, "'operator_template'", "without a conversion or format spec"),
    ({"operator_template": "{conv}_{kernel"}, "'operator_template'", "not a format string"),
    ({"operator_template": 3}, "'operator_template'", "must be a string"),
    ({"operator_template": None}, "'operator_groups'", "needs an 'operator_template'"),
    ({"operator_groups": None}, "'operator_template'", "needs 'operator_groups'"),
    ({"operator_groups": {}}, "'operator_groups'", "must be a mapping"),
    ({"operator_groups": {"conv": [], "kernel": ["3x3"]}}, "'operator_groups'", "group 'conv' is empty"),
    ({"operator_groups": {"conv": "sep_conv", "kernel": ["3x3"]}}, "'operator_groups'", "list of string choices"),
    ({"operator_groups": {"conv": ["sep_conv"], "kernel": [3]}}, "'operator_groups'", "list of string choices"),
    ({"operator_groups": {"conv": ["sep_conv", "sep_conv"], "kernel": ["3x3"]}}, "'operator_groups'",
     "repeats a choice"),
    ({"operator_groups": {"conv": ["sep_conv"], "kernel": ["4x4"]}}, "'operator_template'",
     "unknown operator 'sep_conv_4x4'"),
    ({"operator_groups": {"conv": ["sep_conv", "max_pool"], "kernel": ["3x3"]}}, "'operator_template'",
     "parameterised and non-parameterised"),
    ({"operators": ["none", "sep_conv_3x3"]}, "'operator_template'", "'sep_conv_3x3', which is also in operators"),
    ({"operator_groups": {"conv-type": ["sep_conv"], "kernel": ["3x3"]}}, "'operator_groups'", "'conv-type'"),
    ({"partial_channels": 0}, "'partial_channels'", "must be an integer >= 1"),
    ({"partial_channels": "four"}, "'partial_channels'", "must be an integer"),
])
def test_bad_operator_groups_name_file_key_and_reason(tmp_path, edit: dict[str, object], key: str,
                                                       reason: str) -> None:
    import yaml

    data = {**yaml.safe_load(GROUPS), **edit}
    data = {k: v for k, v in data.items() if v is not None}
    if edit.get("operator_groups", 0) is None:
        data.pop("operator_groups", None)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(NasError) as info:
        load_search_space(str(path))
    message = str(info.value)
    assert str(path) in message and key in message and reason in message, message
    assert "\n" not in message


def test_partial_channels_default_and_file_value(tmp_path) -> None:
    assert load_search_space("darts").partial_channels == 1
    pc = load_search_space("pc_darts")
    assert pc.partial_channels == 4  # PC-DARTS's CIFAR-10 K
    assert (pc.operators, str(pc.activation_mode)) == (load_search_space("darts").operators, "fixed:relu")
    assert f"{pc.architecture_count():.1e}" == "1.1e+18"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_files_load(name: str) -> None:
    space = load_search_space(name)
    assert space.name == name and shipped_file("spaces", name) is not None


def test_every_darts_family_file_in_the_space_directory_loads() -> None:
    """randgrow_*.yaml are RandGrow spaces, read by optuna_nas.randgrow.space, not DARTS-family ones."""
    names = {name for name in shipped_names("spaces") if not name.startswith("randgrow")}
    assert set(SHIPPED) <= names
    for name in names:
        load_search_space(name)


def test_a_darts_groups_space_size() -> None:
    space = load_search_space("a_darts_groups")
    assert len(space.grouped_operators) == 9 and "conv_7x7" in space.grouped_operators
    assert space.choices_per_edge() == 3 + 9 * 9
    assert f"{space.architecture_count():.1e}" == "2.0e+35"  # quoted in the file
    assert space.architecture_parameters_per_edge() == 20 and space.architecture_parameters_per_edge(False) == 85
