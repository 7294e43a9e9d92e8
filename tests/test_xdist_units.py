"""The work-unit scheduler (tests/helpers/xdist_units.py) against the installed pytest-xdist: it
builds xdist's own scheduler and drives it the way xdist's controller does, so an xdist that stops
grouping by our scope (a renamed or unused `_split_scope`) fails here rather than silently
building the shared workspace once per worker."""

from __future__ import annotations

from types import SimpleNamespace

from tests.helpers.xdist_units import work_unit_scheduler, xdist_work_unit

COLLECTION = [
    "tests/test_exports.py::test_a", "tests/test_model.py::test_b", "tests/test_progress.py::test_c",
    "tests/test_model.py::test_d", "tests/test_end_to_end.py::test_e", "tests/test_tokenizer.py::test_f",
]


class FakeWorker:
    """The part of xdist's WorkerController a scheduler talks to."""

    def __init__(self, name: str):
        self.gateway = SimpleNamespace(id=name)
        self.shutting_down = False
        self.sent: list[int] = []

    def send_runtest_some(self, indexes: list[int]) -> None:
        self.sent.extend(indexes)

    def shutdown(self) -> None:
        self.shutting_down = True


def scheduled(collection: list[str], make_scheduler=work_unit_scheduler) -> list[set[str]]:
    """The tests each of two workers is sent, as xdist's controller drives the scheduler."""
    config = SimpleNamespace(getvalue=lambda name: ["popen", "popen"] if name == "tx" else None,
                             option=SimpleNamespace(loadscopereorder=False))
    scheduler = make_scheduler(config)
    workers = [FakeWorker("gw0"), FakeWorker("gw1")]
    for worker in workers:
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, collection)
    scheduler.schedule()
    return [{collection[i] for i in worker.sent} for worker in workers]


def test_shared_workspace_modules_run_on_one_worker_and_modules_stay_whole():
    per_worker = scheduled(COLLECTION)
    assert set().union(*per_worker) == set(COLLECTION)  # every test is sent once
    for unit in {xdist_work_unit(n) for n in COLLECTION}:
        holders = [i for i, tests in enumerate(per_worker) if any(xdist_work_unit(n) == unit for n in tests)]
        assert len(holders) == 1, (unit, per_worker)
    shared = {n for n in COLLECTION if xdist_work_unit(n) == "shared_workspace"}
    assert len(shared) == 3 and any(shared <= tests for tests in per_worker)


def test_the_check_can_fail_plain_load_scope_splits_the_shared_modules():
    """xdist's own per-module scope sends the shared-workspace modules to both workers."""
    from xdist.scheduler import LoadScopeScheduling

    shared = {n for n in COLLECTION if xdist_work_unit(n) == "shared_workspace"}
    assert not any(shared <= tests for tests in scheduled(COLLECTION, LoadScopeScheduling))
