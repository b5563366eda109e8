"""Every HTTP request and response model of the API, in one module.

Sections are owned by resource; SQLAlchemy models live in ``ttalkkac.store.models`` and are
converted here with ``model_validate(..., from_attributes=True)``.
"""

from __future__ import annotations

# --- datasets and training jobs --------------------------------------------------------------

# --- adapters --------------------------------------------------------------------------------

# --- generation ------------------------------------------------------------------------------

# --- health ----------------------------------------------------------------------------------
