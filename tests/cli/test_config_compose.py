"""Every config option composes, and bad values fail naming their key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sah.cli.schema import register_schema
from sah.cli.train import CONFIG_DIR

GROUPS = ["task", "data", "model", "adapter", "trainer", "logger", "callbacks", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def compose_train(overrides: list[str]):
    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


@pytest.mark.parametrize(
    "override", [f"{g}={o}" for g in GROUPS for o in options(g)], ids=lambda s: s
)
def test_every_option_composes(override: str) -> None:
    extra = ["data.manifest=/tmp/m.csv"] if override == "data=manifest" else []
    cfg = compose_train([override, *extra])
    group = override.split("=")[0]
    assert cfg.get(group) is not None or group == "experiment"
    # The composed tree converts to plain containers (no structural errors).
    assert isinstance(OmegaConf.to_container(cfg, resolve=False), dict)


@pytest.mark.parametrize("estimator", options("estimator"))
def test_every_estimator_composes_with_task_outcome(estimator: str) -> None:
    from sah.tasks.outcome.estimators import TabularModelSpec

    cfg = compose_train(["task=outcome", f"estimator={estimator}"])
    assert cfg.model is None
    assert OmegaConf.get_type(cfg.task.estimator) is TabularModelSpec
    assert isinstance(OmegaConf.to_object(cfg.task.estimator), TabularModelSpec)
    assert list(cfg.task.estimator) == ["name", "features", "params"]


def test_estimator_keys_are_checked_at_composition() -> None:
    with pytest.raises(Exception, match=r"task\.estimator\.featurs"):
        compose_train(["task=outcome", "task.estimator.featurs=all"])


@pytest.mark.parametrize("method", options("adapter"))
def test_every_adapter_option_is_an_adapter_config(method: str) -> None:
    """conf/adapter/*.yaml name their method; the rest is the schema, AdapterConfig itself."""
    from sah.adapters import AdapterConfig

    cfg = compose_train([f"adapter={method}"])
    assert OmegaConf.get_type(cfg.adapter) is AdapterConfig
    config = OmegaConf.to_object(cfg.adapter)
    assert config == AdapterConfig(method)
    assert list(cfg.adapter) == list(AdapterConfig.__dataclass_fields__)


def test_adapter_schema_is_not_an_option_of_the_group() -> None:
    from hydra.core.global_hydra import GlobalHydra as Global

    register_schema()
    Global.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        listed = Global.instance().config_loader().get_group_options("adapter")
    assert sorted(listed) == options("adapter")


@pytest.mark.parametrize(
    ("override", "key"),
    [("adapter.rank=abc", "adapter.rank"), ("adapter.fold_norm=maybe", "adapter.fold_norm")],
)
def test_adapter_wrong_type_fails_at_composition_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(Exception, match=key.replace(".", r"\.")):
        compose_train(["adapter=lora_c", override])


def test_adapter_keys_are_the_user_facing_names() -> None:
    cfg = compose_train(["adapter=cp_dora", "adapter.rank=16", "adapter.target=decoder"])
    assert (cfg.adapter.method, cfg.adapter.rank, cfg.adapter.target) == ("cp_dora", 16, "decoder")


def test_wrong_type_names_the_key() -> None:
    with pytest.raises(Exception, match="seed"):
        compose_train(["seed=abc"])


def test_unknown_option_names_the_group() -> None:
    with pytest.raises(Exception, match="model"):
        compose_train(["model=no_such_net"])


@pytest.mark.parametrize("env", [True, False], ids=["SAH_CACHE_DIR", "default"])
def test_train_and_synth_resolve_the_same_cache_folder(
    env: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cohort made with `sah-synth` is the one `sah-train` reads: both use cache_dir()."""
    from sah.data.cache import cache_dir
    from sah.data.synthetic import SynthConfig, cohort_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if env:
        monkeypatch.setenv("SAH_CACHE_DIR", str(tmp_path / "shared"))
    else:
        monkeypatch.delenv("SAH_CACHE_DIR", raising=False)
    expected = tmp_path / "shared" if env else tmp_path / "home" / ".cache" / "sah"
    assert cache_dir() == expected
    cfg = compose_train([])
    assert Path(cfg.paths.cache_dir) == expected
    # sah-synth's default (no --cache-dir) and the training config's cohort are one folder.
    config = SynthConfig(kind="sah", n_patients=6, seed=0, matrix=64, spacing_mm=2.5)
    assert cohort_dir(config, None) == cohort_dir(config, cfg.paths.cache_dir)
    # paths.cache_dir=... still wins.
    assert compose_train([f"paths.cache_dir={tmp_path}/x"]).paths.cache_dir == f"{tmp_path}/x"


def test_registering_the_schemas_imports_neither_torch_nor_sklearn() -> None:
    """sah-train registers AdapterConfig and TabularModelSpec before composing; `--help`, `--cfg`
    and a config error stay as quick as before they were schemas."""
    import subprocess
    import sys

    loaded = "print(sorted(m for m in ('torch', 'sklearn', 'lightning') if m in sys.modules))"
    code = (
        "import sys; from sah.cli.schema import register_schema; register_schema(); "
        f"{loaded}; from sah.adapters import inject; assert callable(inject); {loaded}"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Nothing heavy until a function that needs torch is asked for.
    assert done.stdout.split() == ["[]", "['torch']"]
