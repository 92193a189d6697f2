"""Typed config: YAML, environment variables, overrides and one-line errors."""

from pathlib import Path

import pytest
import torch

from sara.config import ConfigError, DemoConfig, Stage1Config, config_to_yaml, load_config, save_config
from sara.config.repro import ReproConfig
from sara.config.stage2 import Stage2Config
from sara.eval.rubric import Rubric
from sara.losses.alignment import TermSettings, get_alignment

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_shipped_config_loads(monkeypatch):
    for name in ("WAN22_TI2V_5B", "WAN22_T2V_A14B", "VJEPA2", "SARA_ALIGNER"):  # real-weights folders
        monkeypatch.setenv(name, f"/weights/{name.lower()}")
    schemas = {"demo": DemoConfig, "repro": ReproConfig, "stage1": Stage1Config, "stage2": Stage2Config, "eval": Rubric}
    configs = sorted((REPO / "configs").rglob("*.yaml"))
    assert len(configs) >= 5
    for path in configs:
        schema = schemas[path.parent.name if path.parent.name != "configs" else path.stem]
        assert isinstance(load_config(schema, path), schema), path


def test_precedence_command_line_over_file_over_defaults(tmp_path):
    path = write(tmp_path, "seed: 3\ntrd:\n  margin: 0.2\n")
    config = load_config(DemoConfig, path, ["trd.margin=0.3", "budget.grid=[2,4,4]"])
    assert config.seed == 3  # file
    assert config.trd.margin == 0.3  # command line
    assert config.budget.grid == [2, 4, 4]
    assert config.stage2.objective.align.routing == "or"  # default


def test_the_readmes_example_override_changes_the_term_the_demo_trains_with():
    line = next(x for x in (REPO / "README.md").read_text().splitlines() if x.startswith("sara demo --config"))
    overrides = [word for word in line.split("#")[0].split() if "=" in word]
    plain = load_config(DemoConfig, REPO / "configs" / "demo.yaml").stage2.objective.align
    changed = load_config(DemoConfig, REPO / "configs" / "demo.yaml", overrides).stage2.objective.align
    generator = torch.Generator().manual_seed(0)
    tokens, target = torch.randn(2, 1, 12, 8, generator=generator)
    saliency = (torch.rand(1, 12, generator=generator) > 0.5).float()
    terms = [
        get_alignment(align.mode).term(tokens, target, saliency, TermSettings(align.routing, align.margin), (0, 1), 1)
        for align in (plain, changed)
    ]
    assert not torch.allclose(*terms), overrides  # the Stage 2 loss of the demo's run is another


def test_environment_variables_are_interpolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SARA_TEST_ROOT", "/data/root")
    path = write(tmp_path, "out_dir: ${oc.env:SARA_TEST_ROOT}/demo\n")
    assert load_config(DemoConfig, path).out_dir == "/data/root/demo"


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        (
            "budget:\n  fg_fracton: 0.3\n",
            [],
            r"run.yaml: budget.fg_fracton: unknown key; did you mean 'budget.fg_fraction'\?",
        ),
        ("zzz: 1\n", [], "run.yaml: zzz: unknown key; valid keys here: out_dir, seed, data, grid, budget, trd"),
        ("trd:\n  margin: big\n", [], "run.yaml: trd.margin: .*'big'.* could not be converted to Float"),
        ("seed: 1.5\n", [], "run.yaml: seed: .*could not be converted to Integer"),
        (
            "out_dir: ${oc.env:SARA_SURELY_UNSET_VAR}\n",
            [],
            "run.yaml: out_dir: environment variable 'SARA_SURELY_UNSET_VAR' is not set",
        ),
        (
            "stage2:\n  objective:\n    align:\n      routing: nor\n",
            [],
            "run.yaml: stage2.objective.align.routing: must be one of and, or, xor; got 'nor'",
        ),
        ("trd:\n  margin: -1\n", [], r"run.yaml: trd.margin: must be >= 0"),
        ("budget:\n  fg_fraction: 1.0\n", [], "run.yaml: budget.fg_fraction: must be < 1"),
        ("budget:\n  grid: [8, 0, 16]\n", [], "run.yaml: budget.grid: must be >= 1"),
        ("a: [1,\n", [], "run.yaml: invalid YAML at line 2"),
        ("- 1\n- 2\n", [], "run.yaml: expected a mapping"),
        ("", ["trd.margni=0.2"], r"command line: trd.margni: unknown key; did you mean 'trd.margin'\?"),
        ("", ["seed=abc"], "command line: seed: .*could not be converted to Integer"),
        ("", ["stage2.objective.align.routing=nor"], "command line: stage2.objective.align.routing: must be one of"),
        ("", ["seed"], "command line: override 'seed' is not of the form key=value"),
    ],
)
def test_errors_are_one_line_and_name_file_and_key(tmp_path, text, overrides, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(DemoConfig, path, overrides)
    assert "\n" not in str(caught.value)


def test_a_bad_file_value_fixed_on_the_command_line_is_fine(tmp_path):
    path = write(tmp_path, "trd:\n  margin: -1\n")
    assert load_config(DemoConfig, path, ["trd.margin=0.05"]).trd.margin == 0.05


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(DemoConfig, tmp_path / "nope.yaml")


def test_resolved_config_round_trips_through_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SARA_TEST_ROOT", str(tmp_path))
    path = write(tmp_path, "out_dir: ${oc.env:SARA_TEST_ROOT}/run\n")
    config = load_config(DemoConfig, path, ["stage2.objective.align.routing=xor", "trd.chunk_size=64"])
    saved = save_config(config, tmp_path / "run")
    assert "${" not in saved.read_text()  # resolved, not the interpolation
    assert load_config(DemoConfig, saved) == config
    assert config_to_yaml(config) == saved.read_text()
