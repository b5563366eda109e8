"""Request models: the edge where text that is not valid Unicode is refused."""

from __future__ import annotations

import pytest
from fastapi import params
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.main import create_app
from app.schemas import GenerateRequest, JobCreate, RequestModel
from app.serving import get_generator


def test_every_json_body_is_a_request_model(settings) -> None:
    app = create_app(settings)
    json_bodies = {
        route.path: route.body_field.field_info.annotation
        for route in app.routes
        if isinstance(route, APIRoute)
        and route.body_field is not None
        and not isinstance(route.body_field.field_info, params.Form)  # File is a Form
    }
    assert {"/generate", "/train"} <= set(json_bodies)
    for path, model in json_bodies.items():
        assert issubclass(model, RequestModel), path


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"meeting": "\ud800 hello"}, "meeting"),
        ({"meeting": [{"text": "ok"}, {"speaker": "\udfff", "text": "x"}]}, "meeting[1].speaker"),
        ({"meeting": "hello", "adapter": "a\ud800"}, "adapter"),
    ],
)
def test_generate_request_refuses_lone_surrogates(body: dict, where: str) -> None:
    with pytest.raises(ValidationError) as info:
        GenerateRequest.model_validate(body)
    (error,) = info.value.errors()
    assert error["type"] == "string_unicode" and error["msg"].startswith(f"{where}: not valid")


def test_job_create_refuses_lone_surrogates_in_nested_specs() -> None:
    body = {"dataset_id": "ds_x", "hyperparameters": {"lora": {"target_modules": ["\ud800"]}}}
    with pytest.raises(
        ValidationError, match=r"hyperparameters\.lora\.target_modules\[0\]: not valid"
    ):
        JobCreate.model_validate(body)
    assert JobCreate.model_validate({"dataset_id": "ds_회의"}).dataset_id == "ds_회의"


class _UnusedGenerator:
    async def generate(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("a body with a lone surrogate reached the engine")


def test_generate_answers_422_before_the_engine(settings) -> None:
    app = create_app(settings)
    app.dependency_overrides[get_generator] = _UnusedGenerator
    with TestClient(app) as client:
        response = client.post(
            "/generate",
            content=b'{"meeting": "\\ud800 hello"}',  # the JSON escape, as a client sends it
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["detail"][0]["message"].startswith("meeting: not valid Unicode")
