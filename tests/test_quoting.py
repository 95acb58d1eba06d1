"""Paths and names reach the shell quoted: a checkout under a folder with a space, a
non-ASCII character and ``$(...)`` runs the workflow, and runs nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO, copy_workflow, snakemake


def _shell_blocks(text: str) -> list[str]:
    return re.findall(r"shell:\n((?:\s+\".*\"\n)+)", text)


def test_every_value_in_every_shell_command_is_quoted():
    rule_files = sorted((REPO / "rules").glob("*.smk"))
    assert rule_files
    for path in rule_files:
        for block in _shell_blocks(path.read_text()):
            unquoted = [x for x in re.findall(r"\{([^{}]+)\}", block) if not x.endswith(":q")]
            assert not unquoted, f"{path.name}: unquoted {unquoted}"


@pytest.mark.slow
def test_a_checkout_under_a_hostile_path_runs_and_injects_nothing(tmp_path: Path):
    parent = tmp_path / "a b" / "é$(touch PWNED)"
    workdir = copy_workflow(parent / "repo")
    target = "results/tiny/metrics/baseline/fakecam/shard-0.csv"
    config = workdir / "tiny.yaml"
    config.write_text(config.read_text().replace("epochs: 2", "epochs: 1"))
    snakemake(workdir, "--cores", "2", target, "--configfile", "tiny.yaml")
    assert (workdir / target).stat().st_size > 100
    log = (workdir / "logs" / "tiny" / "train" / "baseline.log").read_text()
    assert log.strip()  # the job ran and logged (an unquoted path left it empty)
    assert not list(tmp_path.rglob("PWNED")), "a $(...) in the checkout path was executed"


def test_one_name_pattern_in_the_schema_and_in_register(registry):
    import yaml

    from cambench.models import register_arch
    from cambench.names import NAME_PATTERN
    from cambench.saliency import register
    from cambench.specs import SCHEMA, check_schema

    schema = yaml.safe_load(SCHEMA.read_text())["properties"]
    assert schema["experiment"]["pattern"] == NAME_PATTERN
    assert schema["models"]["propertyNames"]["pattern"] == NAME_PATTERN
    assert schema["methods"]["propertyNames"]["pattern"] == NAME_PATTERN
    for bad in ("../../x", "a/b", ".hidden", "-x", "a b", "x$(y)"):
        with pytest.raises(ValueError, match="names are letters"):
            register(bad)(lambda model, images, targets, layer: images[:, 0])
        with pytest.raises(ValueError, match="names are letters"):
            register_arch(bad)(lambda num_classes: None)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    check_schema(config)  # the default's names pass
    config["methods"]["../../x"] = {}
    with pytest.raises(ValueError, match=r"config key 'methods': '\.\./\.\./x' does not match"):
        check_schema(config)
    del config["methods"]["../../x"]
    config["models"]["a/b"] = config["models"]["baseline"]
    with pytest.raises(ValueError, match="config key 'models'"):
        check_schema(config)


@pytest.mark.parametrize("kind", ["method", "arch"])
def test_a_plugin_file_registering_a_path_as_a_name_is_named(tmp_path: Path, registry, kind):
    """A plug-in registering ``../../x`` would write outside results/: loading it is
    one error naming the plug-in file, and nothing is registered."""
    from cambench.models import ARCH_FACTORIES
    from cambench.plugins import load_plugins
    from cambench.saliency import METHODS

    plugin = tmp_path / "escape.py"
    if kind == "method":
        body = (
            "from cambench.saliency import register\n\n\n"
            "@register('../../x')\n"
            "def escape(model, images, targets, layer):\n"
            "    return images[:, 0]\n"
        )
    else:
        body = (
            "from cambench.models import register_arch\n\n\n"
            "@register_arch('../../x')\n"
            "def escape(num_classes):\n"
            "    return None\n"
        )
    plugin.write_text(body)
    with pytest.raises(ValueError, match=r"'\.\./\.\./x' is not allowed") as err:
        load_plugins([str(plugin)])
    assert str(plugin) in str(err.value)
    assert "../../x" not in METHODS and "../../x" not in ARCH_FACTORIES


def test_the_default_and_example_names_match_the_pattern():
    import yaml

    from cambench.names import check_name

    configs = [REPO / "config.yaml", REPO / "tests" / "config.tiny.yaml"]
    configs += sorted((REPO / "experiments").glob("*.yaml"))
    configs += sorted((REPO / "examples").rglob("*.yaml"))
    checked = 0
    for path in configs:
        config = yaml.safe_load(path.read_text()) or {}
        if not isinstance(config, dict):
            continue
        if "experiment" in config:
            check_name(config["experiment"], f"{path.name}: experiment")
            checked += 1
        for key in ("models", "methods"):
            for name in config.get(key) or {}:
                check_name(name, f"{path.name}: {key}")
                checked += 1
    assert checked > 20
