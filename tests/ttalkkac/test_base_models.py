"""Which base models a training request may name."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttalkkac.base_models import allowed_base_models, check_base_model
from ttalkkac.demo_model import DEMO_MODEL_NAME
from ttalkkac.errors import InvalidInput
from ttalkkac.settings import Settings


def model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def test_default_allowlist_is_the_configured_models(settings: Settings) -> None:
    demo = str(settings.models_dir / DEMO_MODEL_NAME)
    assert allowed_base_models(settings) == [settings.gpu_base_model, demo]
    settings.base_model = "org/served"
    assert allowed_base_models(settings) == ["org/served", settings.gpu_base_model, demo]
    from_env = Settings(data_dir=settings.data_dir, allowed_base_models="a/b, /srv/m ,")
    assert allowed_base_models(from_env) == ["a/b", "/srv/m"]


def test_allowlisted_values_pass_as_configured(settings: Settings) -> None:
    assert check_base_model("Qwen/Qwen3-4B", settings) == "Qwen/Qwen3-4B"
    demo = str(settings.models_dir / DEMO_MODEL_NAME)
    # The demo model need not be built yet; by its name in the models folder too.
    assert check_base_model(demo, settings) == demo
    assert check_base_model(DEMO_MODEL_NAME, settings) == demo


def test_managed_model_folders_pass_by_path_or_name(settings: Settings) -> None:
    folder = model_folder(settings.models_dir / "mine")
    assert check_base_model(str(folder), settings) == str(folder.resolve())
    assert check_base_model("mine", settings) == str(folder.resolve())


@pytest.mark.parametrize(
    "value",
    [
        "someone/any-model",  # a hub download with the operator's token
        "/etc",
        "mine-without-config",
        "../datasets/ds_x/files",  # out of the models folder through ..
        "escape-link",
        ".",  # the models folder itself
        "0" * 300,  # a name no filesystem takes (found by the fuzzer: it answered 500)
        "a\x00b",
    ],
)
def test_everything_else_is_refused_naming_what_is_allowed(settings: Settings, value: str) -> None:
    (settings.models_dir / "mine-without-config").mkdir()
    model_folder(settings.datasets_dir / "ds_x" / "files")  # an upload holding a config.json
    outside = model_folder(settings.data_dir.parent / "outside")
    (settings.models_dir / "escape-link").symlink_to(outside)
    (settings.models_dir / "config.json").write_text("{}")
    with pytest.raises(InvalidInput) as info:
        check_base_model(value, settings)
    message = info.value.message
    assert "not allowed" in message and "'Qwen/Qwen3-4B'" in message
    assert f"'{DEMO_MODEL_NAME}'" in message and str(settings.data_dir) not in message
    assert info.value.detail[0]["allowed"] == ["Qwen/Qwen3-4B", DEMO_MODEL_NAME]


def test_uploaded_dataset_folder_is_not_a_model(settings: Settings) -> None:
    dataset = model_folder(settings.datasets_dir / "ds_y")
    with pytest.raises(InvalidInput):
        check_base_model(str(dataset), settings)


def test_the_setting_replaces_the_defaults(settings: Settings) -> None:
    settings.allowed_base_models = ["org/only"]
    assert check_base_model("org/only", settings) == "org/only"
    with pytest.raises(InvalidInput, match="'org/only'"):
        check_base_model("Qwen/Qwen3-4B", settings)
    folder = model_folder(settings.models_dir / "still-fine")
    assert check_base_model("still-fine", settings) == str(folder.resolve())
