"""GET /adapters, GET /adapters/{name}, POST /adapters/{name}/activate, DELETE /adapters/active."""

from __future__ import annotations

import uuid

from tests.utils.serving import register_adapter


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_list_show_activate_and_deactivate(vllm_client, serving_settings, tiny_adapters) -> None:
    first, second = unique("one"), unique("two")
    for name, folder in ((first, tiny_adapters[0]), (second, tiny_adapters[1])):
        register_adapter(serving_settings, name, folder, base_model=serving_settings.base_model)
    vllm_client.delete("/adapters/active")

    listing = vllm_client.get("/adapters").json()
    names = [a["name"] for a in listing["data"]]
    assert {first, second} <= set(names)
    assert listing["count"] == len(names)
    assert listing["active"] is None
    assert listing["base_model"] == serving_settings.base_model

    shown = vllm_client.get(f"/adapters/{first}").json()
    assert shown["name"] == first and shown["rank"] == 8
    # Where the server keeps its files is not the client's business: DATA_DIR/..., not /tmp/...
    assert shown["path"] == f"DATA_DIR/models/adapters/{first}"
    assert str(serving_settings.data_dir) not in vllm_client.get("/adapters").text
    assert shown["compatible"] is True and shown["is_active"] is False

    activated = vllm_client.post(f"/adapters/{second}/activate")
    assert activated.status_code == 200, activated.text
    assert activated.json()["is_active"] is True
    listing = vllm_client.get("/adapters").json()
    assert listing["active"] == second
    assert [a["name"] for a in listing["data"] if a["is_active"]] == [second]
    assert vllm_client.get("/ready").json()["active_adapter"] == second

    # Switching the default needs no restart: the next default request uses the new one.
    assert vllm_client.post(f"/adapters/{first}/activate").status_code == 200
    response = vllm_client.post("/generate", json={"meeting": "Alice writes the spec."})
    assert response.status_code == 200, response.text
    assert response.json()["adapter"] == first

    cleared = vllm_client.delete("/adapters/active")
    assert cleared.status_code == 200 and cleared.json()["active"] is None


def test_unknown_adapter_is_404(vllm_client) -> None:
    assert vllm_client.get("/adapters/nope-404").status_code == 404
    response = vllm_client.post("/adapters/nope-404/activate")
    assert response.status_code == 404
    assert "nope-404" in response.json()["error"]["message"]


def test_activating_an_adapter_for_another_base_is_409(
    vllm_client, serving_settings, tiny_adapters
) -> None:
    name = unique("foreign")
    register_adapter(serving_settings, name, tiny_adapters[0], base_model="meta-llama/Other")
    assert vllm_client.get(f"/adapters/{name}").json()["compatible"] is False
    response = vllm_client.post(f"/adapters/{name}/activate")
    assert response.status_code == 409
    assert vllm_client.get(f"/adapters/{name}").json()["is_active"] is False


def test_base_is_reserved(vllm_client) -> None:
    response = vllm_client.post("/adapters/base/activate")
    assert response.status_code == 422
    assert "DELETE /adapters/active" in response.json()["error"]["message"]
