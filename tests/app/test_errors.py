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
