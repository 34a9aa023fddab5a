"""Memory budget projection, cgroup limit parsing and the global buffer ledger."""

from __future__ import annotations

import pytest

from appliance.errors import ApplianceError
from appliance.resources import BufferLedger, MemoryBudget, cgroup_memory_limit_bytes, rss_bytes

MIB = 2**20


def test_budget_projects_sessions_admitted_in_a_burst():
    rss = {"now": 300 * MIB}
    budget = MemoryBudget(340 * MIB, per_session_bytes=10 * MIB, rss=lambda: rss["now"])
    budget.mark_baseline()
    for active in range(3):  # RSS has not grown yet, the projection has
        budget.admit_session(active)
    budget.admit_session(3)  # 300 + 3 x 10 reserved + 10 = 340: exactly the budget
    with pytest.raises(ApplianceError) as refused:
        budget.admit_session(4)
    assert refused.value.code == "ERR1014" and "memory_budget_bytes" in refused.value.message


def test_budget_follows_real_rss_when_it_is_higher():
    rss = {"now": 100 * MIB}
    budget = MemoryBudget(200 * MIB, per_session_bytes=1 * MIB, rss=lambda: rss["now"])
    budget.mark_baseline()
    budget.admit_session(1)
    rss["now"] = 199 * MIB + 1
    with pytest.raises(ApplianceError):
        budget.admit_session(1)


def test_no_budget_admits_everything():
    MemoryBudget(None, per_session_bytes=MIB, rss=lambda: 10**12).admit_session(10**6)


@pytest.mark.parametrize("content, expected", [("max\n", None), ("536870912\n", 512 * MIB),
                                               (str(2**63 - 4096), None), ("garbage", None)])
def test_cgroup_limit_parsing(tmp_path, content, expected):
    limit_file = tmp_path / "memory.max"
    limit_file.write_text(content)
    assert cgroup_memory_limit_bytes((tmp_path / "missing", limit_file)) == expected


def test_rss_of_this_process_is_real():
    assert rss_bytes() > 10 * MIB


def test_buffer_ledger_caps_the_total():
    ledger = BufferLedger(1000)
    ledger.apply(900)
    ledger.admit(100)
    with pytest.raises(ApplianceError) as refused:
        ledger.admit(101)
    assert refused.value.code == "ERR1014"
    ledger.apply(-900)
    ledger.admit(1000)
