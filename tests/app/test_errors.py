"""The error envelope: one shape for every failure, and an encoding that cannot fail."""

from __future__ import annotations

import json

from app.errors import EnvelopeResponse, error_body


def test_envelope_with_a_lone_surrogate_still_encodes() -> None:
    body = error_body("invalid_input", "bad name '\ud800'", request_id="r1")
    response = EnvelopeResponse(body, status_code=422)
    assert response.body.isascii()
    assert json.loads(response.body)["error"]["message"] == "bad name '\ud800'"
    # Ordinary text keeps its UTF-8 form.
    assert "회의".encode() in EnvelopeResponse(error_body("x", "회의")).body


def test_domain_errors_show_the_data_folder_as_DATA_DIR(settings) -> None:
    """An error about a managed file names it under DATA_DIR, not under the server's path."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from ttalkkac.errors import InvalidInput

    app = create_app(settings)
    folder = settings.jobs_dir / "job_x"

    @app.get("/boom")
    def boom() -> None:
        raise InvalidInput(
            f"adapter folder {folder} has no weights", detail={"path": [str(folder)]}
        )

    with TestClient(app) as client:
        response = client.get("/boom")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["message"] == "adapter folder DATA_DIR/jobs/job_x has no weights"
    assert error["detail"] == {"path": ["DATA_DIR/jobs/job_x"]}
    assert str(settings.data_dir) not in response.text
