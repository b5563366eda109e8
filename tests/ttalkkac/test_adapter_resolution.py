"""ttalkkac.adapters: registry names, the default adapter, safetensors only, managed paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.utils.serving import bin_only_copy, build_lora, register_adapter
from ttalkkac.adapters import (
    BASE,
    check_adapter_weights,
    ensure_managed,
    read_adapter_dir,
    resolve_adapter,
    resolve_local_adapter,
    same_base_model,
)
from ttalkkac.errors import Conflict, InvalidInput, NotFound
from ttalkkac.store import crud
from ttalkkac.store.db import Database


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir: Path, tmp_path_factory) -> Path:
    return build_lora(tiny_model_dir, tmp_path_factory.mktemp("lora") / "a", rank=4)


@pytest.fixture
def db(settings):
    database = Database(settings.resolved_database_url)
    database.create_all()
    yield database
    database.dispose()


def test_folder_checks(lora_dir: Path, tmp_path: Path) -> None:
    assert read_adapter_dir(lora_dir)["r"] == 4
    with pytest.raises(InvalidInput, match="does not exist"):
        read_adapter_dir(tmp_path / "missing")
    with pytest.raises(InvalidInput, match="safetensors only"):
        read_adapter_dir(bin_only_copy(lora_dir, tmp_path / "bin"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match=r"no adapter_model\.safetensors"):
        read_adapter_dir(tmp_path / "empty")
    broken = Path(shutil.copytree(lora_dir, tmp_path / "broken"))
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        read_adapter_dir(broken)
    (broken / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(InvalidInput, match="not LoRA"):
        read_adapter_dir(broken)


def test_paths_must_stay_inside_the_data_folder(settings, lora_dir: Path) -> None:
    inside = settings.models_dir / "adapters" / "a"
    shutil.copytree(lora_dir, inside)
    assert ensure_managed(inside, settings) == inside.resolve()
    with pytest.raises(InvalidInput, match="outside the managed data folder"):
        ensure_managed(lora_dir, settings)
    with pytest.raises(InvalidInput, match="outside"):
        ensure_managed(settings.data_dir / ".." / "elsewhere", settings)
    link = settings.models_dir / "adapters" / "link"
    link.symlink_to(lora_dir, target_is_directory=True)  # resolved: points outside
    with pytest.raises(InvalidInput, match="outside"):
        ensure_managed(link, settings)


def test_same_base_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert same_base_model(str(tiny_model_dir), f"{tiny_model_dir}/")
    assert same_base_model("Qwen/Qwen3-4B", "qwen/qwen3-4b")
    assert not same_base_model("Qwen/Qwen3-4B", "Qwen/Qwen3-8B")
    copy = Path(shutil.copytree(tiny_model_dir, tmp_path / "copy"))
    assert same_base_model(str(tiny_model_dir), str(copy))  # same config.json: same model
    assert not same_base_model(str(tiny_model_dir), "Qwen/Qwen3-4B")


def test_registry_resolution(settings, db, lora_dir: Path, tiny_model_dir: Path) -> None:
    served = str(tiny_model_dir)
    with db.session() as session:
        assert resolve_adapter(session, settings, name=None, served_base_model=served) is None
        with pytest.raises(NotFound, match="'nope'"):
            resolve_adapter(session, settings, name="nope", served_base_model=served)
    register_adapter(settings, "one", lora_dir, base_model=served, rank=4)
    register_adapter(settings, "two", lora_dir, base_model=served, rank=4, activate=True)
    register_adapter(settings, "alien", lora_dir, base_model="Qwen/Qwen3-8B", rank=4)
    with db.session() as session:
        ref = resolve_adapter(session, settings, name=None, served_base_model=served)
        assert ref is not None and ref.name == "two"  # the active one
        assert ref.rank == 4 and ref.path.is_relative_to(settings.data_dir)
        named = resolve_adapter(session, settings, name="one", served_base_model=served)
        assert named is not None and named.name == "one" and named.key != ref.key
        assert resolve_adapter(session, settings, name=BASE, served_base_model=served) is None
        with pytest.raises(Conflict, match="Qwen/Qwen3-8B"):
            resolve_adapter(session, settings, name="alien", served_base_model=served)
        crud.activate_adapter(session, name="one")
    with db.session() as session:
        ref = resolve_adapter(session, settings, name=None, served_base_model=served)
        assert ref is not None and ref.name == "one"


def test_local_resolution_for_cli_and_python(settings, lora_dir: Path, tiny_model_dir) -> None:
    served = str(tiny_model_dir)
    ref = resolve_local_adapter(str(lora_dir), settings, served_base_model=served)
    assert ref is not None and ref.path == lora_dir.resolve() and ref.rank == 4
    assert resolve_local_adapter(BASE, settings, served_base_model=served) is None
    assert resolve_local_adapter(None, settings, served_base_model=served) is None
    with pytest.raises(Conflict):
        resolve_local_adapter(str(lora_dir), settings, served_base_model="Qwen/Qwen3-4B")
    register_adapter(settings, "named", lora_dir, base_model=served, rank=4)
    named = resolve_local_adapter("named", settings, served_base_model=served)
    assert named is not None and named.name == "named"
    with pytest.raises(NotFound):
        resolve_local_adapter("missing", settings, served_base_model=served)


def test_weights_must_be_complete_and_fit_the_base(
    lora_dir: Path, tiny_model_dir, tmp_path
) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    base = str(tiny_model_dir)
    check_adapter_weights(str(lora_dir), "a", base)  # fits
    truncated = Path(shutil.copytree(lora_dir, tmp_path / "truncated"))
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4000])
    with pytest.raises(InvalidInput, match="unreadable"):
        check_adapter_weights(str(truncated), "b", base)

    other = Path(shutil.copytree(lora_dir, tmp_path / "other-shapes"))
    tensors = load_file(other / "adapter_model.safetensors")
    key = next(k for k in tensors if "q_proj.lora_A" in k)
    tensors[key] = torch.zeros(4, 96)  # a LoRA made for a model with hidden size 96
    save_file(tensors, other / "adapter_model.safetensors")
    with pytest.raises(InvalidInput, match="does not fit the base model"):
        check_adapter_weights(str(other), "c", base)
    check_adapter_weights(str(other), "c", "Qwen/Qwen3-4B")  # hub id: shapes unknown, no check
