"""The audit plan (SPEC 3 v1.1): drawn with the indices, Fiat-Shamir rows offline."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hashcloud.errors import ProofError
from hashcloud.params import DEFAULT_AUDIT_ROWS
from hashcloud.poc.plan import AuditPlan, draw_plan, offline_plan, offline_rows, rows_per_sample

ROOT = bytes(range(32))


@given(
    indices=st.lists(st.integers(0, 10**6), min_size=1, max_size=40, unique=True),
    data=st.data(),
    n=st.sampled_from([64, 128, 1024]),
    k=st.integers(1, 80),
    seed=st.integers(0, 2**32),
)
def test_draw_plan_shape(indices, data, n, k, seed):
    m = data.draw(st.integers(1, len(indices)))
    plan = draw_plan(indices, m, n, k=k, rng=random.Random(seed))
    assert plan.mode == "rows" and len(plan.audited) == m
    assert plan.audited == sorted(plan.audited) and set(plan.audited) <= set(indices)
    assert all(len(rows) == min(n, k) == len(set(rows)) for rows in plan.rows)
    assert all(0 <= r < n for rows in plan.rows for r in rows)
    plan.check_fits(indices, n)
    assert draw_plan(indices, m, n, k=k, rng=random.Random(seed)) == plan  # seeded: repeatable


def test_full_plan_has_no_rows():
    plan = draw_plan([3, 7, 9], 2, 64, mode="full", rng=random.Random(1))
    assert plan.mode == "full" and plan.rows == []


def test_default_k_is_16_and_capped_by_n():
    assert DEFAULT_AUDIT_ROWS == 16 and rows_per_sample(64, 16) == 16
    assert rows_per_sample(64, 100) == 64
    with pytest.raises(ProofError):
        rows_per_sample(64, 0)


@pytest.mark.parametrize(
    "fields",
    [
        {"mode": "rows", "audited": [2, 1], "rows": [[0], [1]]},  # not ascending
        {"mode": "rows", "audited": [1, 1], "rows": [[0], [1]]},  # duplicate
        {"mode": "rows", "audited": [1], "rows": []},  # rows missing
        {"mode": "rows", "audited": [1], "rows": [[3, 3]]},  # repeated row
        {"mode": "rows", "audited": [1], "rows": [[]]},  # no row
        {"mode": "full", "audited": [1], "rows": [[0]]},  # rows in full mode
        {"mode": "half", "audited": [1], "rows": []},
        {"mode": "rows", "audited": [], "rows": []},
    ],
)
def test_malformed_plans_are_refused(fields):
    with pytest.raises(ValidationError):
        AuditPlan(**fields)


def test_plan_must_fit_the_round():
    plan = AuditPlan(mode="rows", audited=[5], rows=[[0, 63]])
    plan.check_fits([5, 9], 64)
    with pytest.raises(ProofError, match="not drawn"):
        plan.check_fits([4, 9], 64)
    with pytest.raises(ProofError, match="outside"):
        plan.check_fits([5], 32)


def test_offline_rows_follow_the_spec_formula():
    n, k, index = 64, 16, 123
    expected: list[int] = []
    t = 0
    while len(expected) < k:
        text = f"hc-fs-rows:0x{ROOT.hex()}:{index}:{t}"
        row = int.from_bytes(hashlib.sha256(text.encode("ascii")).digest(), "big") % n
        if row not in expected:
            expected.append(row)
        t += 1
    assert offline_rows(ROOT, index, n, k) == expected


def test_offline_rows_take_every_row_when_k_exceeds_n():
    assert sorted(offline_rows(ROOT, 0, 64, 1000)) == list(range(64))


def test_offline_plan_audits_every_sample():
    plan = offline_plan(ROOT, [9, 2, 5], 64, 4)
    assert plan.audited == [2, 5, 9]
    assert plan.rows == [offline_rows(ROOT, i, 64, 4) for i in (2, 5, 9)]
    with pytest.raises(ProofError):
        offline_rows(ROOT[:31], 0, 64, 4)
