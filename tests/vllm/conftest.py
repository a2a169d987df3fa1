import pytest

pytest.importorskip("vllm")

from attn_sched_plugin import activation  # noqa: E402
from attn_sched_plugin.adapters import vllm as adapter  # noqa: E402
from tests.reference import fa3_reference as ref  # noqa: E402
from tests.vllm import harness  # noqa: E402


@pytest.fixture
def fa3(monkeypatch):
    """This CPU process with the reference FA3 as vLLM's FA3 build (module globals)."""
    harness.fa3_in_place(monkeypatch)
    ref.COUNTERS.clear()


@pytest.fixture
def install(fa3, monkeypatch):
    """Install the adapter through the real activation path (metadata from the reference build)."""
    monkeypatch.setattr(adapter, "fa3_build", ref.vllm_build)

    def _install():
        activation.uninstrument("vllm")
        report = activation.instrument("vllm")
        assert report is not None and report.active, report
        return report

    yield _install
    activation.uninstrument("vllm")
