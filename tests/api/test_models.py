"""The wire models (`api/models.py`): one field list with the proof file, stricter at HTTP."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hashcloud.api.models import CommitResponse, DeviceModel, RevealRequest, SampleModel
from hashcloud.poc.proof import DeviceInfo, Sample

SAMPLE = {"index": 3, "leaf": "0x" + "ab" * 32, "proof": ["0x" + "cd" * 32]}


def test_http_models_share_the_proof_files_fields_but_forbid_unknown_keys():
    assert set(SampleModel.model_fields) == set(Sample.model_fields)
    assert set(DeviceModel.model_fields) == set(DeviceInfo.model_fields)
    assert Sample.model_validate({**SAMPLE, "note": 1}).index == 3  # a file ignores it
    with pytest.raises(ValidationError, match="note"):
        SampleModel.model_validate({**SAMPLE, "note": 1})  # an HTTP body refuses it


def test_byte_fields_are_bytes_inside_and_hex_on_the_wire():
    smp = SampleModel.model_validate(SAMPLE)
    assert smp.leaf == b"\xab" * 32 and smp.proof == [b"\xcd" * 32]
    assert smp.model_dump(mode="json") == {**SAMPLE, "output": None}


def test_a_reveal_must_be_signed():
    with pytest.raises(ValidationError, match="signature"):
        RevealRequest.model_validate({"samples": [SAMPLE]})
    req = RevealRequest.model_validate({"samples": [SAMPLE], "signature": "11" * 64})
    assert req.signature == b"\x11" * 64


def test_commit_response_carries_the_signed_audit_plan():
    body = {"challenge_id": "ab" * 16, "indices": [1, 5],
            "audit": {"mode": "rows", "audited": [5], "rows": [[0, 9]]},
            "indices_signature": "0x" + "22" * 64}
    resp = CommitResponse.model_validate(body)
    assert resp.audit.rows[resp.audit.audited.index(5)] == [0, 9]
    with pytest.raises(ValidationError):
        CommitResponse.model_validate({**body, "audit": {"mode": "rows", "audited": [5],
                                                        "rows": []}})
    schema = CommitResponse.model_json_schema()
    assert "audit" in schema["required"]
