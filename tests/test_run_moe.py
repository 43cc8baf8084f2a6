"""A mixture of experts run for real on 2 gloo ranks: data parallel, and expert parallel (each rank computes half
the experts; tokens travel by torch.distributed all-to-all and back, the backward through the same collectives).
Loss and every gradient equal one process."""

import pytest

from xpusim.parallel.real.launch import launch
from xpusim.parallel.real.spec import ModelSpec, RunSpecError, make_spec

MOE = "moe:h=64,l=2,a=4,e=4,k=2"


@pytest.mark.slow
@pytest.mark.parametrize("plan", ["dp=2", "ep=2"])
def test_gradients_equal_single_process(plan: str) -> None:
    spec = make_spec(model=MOE, plan=plan, micro_batches=2, micro_batch=2, steps=2, check_grads=True, timeout_s=60)
    assert spec.plan.dp == 2 and spec.plan.ep == (2 if plan == "ep=2" else 1)
    check = launch(spec)["check"]
    assert check["loss_abs_error"] < 1e-5
    assert check["max_grad_rel_error"] < 1e-4, check["worst_param"]
    # every expert of every layer was compared: the ranks reported their own experts' gradients
    experts = {n for n in check["params_compared"] if ".moe.experts." in n}
    assert {n.split(".moe.experts.")[1].split(".")[0] for n in experts} == {"0", "1", "2", "3"}


def test_moe_spec_round_trips() -> None:
    m = ModelSpec.parse(MOE)
    assert (m.experts, m.top_k, m.hidden, m.ffn) == (4, 2, 64, 256)
    assert ModelSpec.parse(m.text()) == m


@pytest.mark.parametrize(("model", "plan", "message"), [
    ("gpt:h=64,l=2,a=4,s=16,V=1024", "ep=2", "use --model moe:"),
    ("moe:h=64,l=2,a=4,e=3,k=2", "ep=2", "valid ep: 1, 3"),
    (MOE, "ep=2,tp=2", "dp = ep, no tp, pp or FSDP"),
    ("moe:h=64,l=2,a=4,e=4,k=5", "dp=2", "k at most e"),
    ("moe:h=64,a=4,e=4", "dp=2", "missing l, k"),
])
def test_bad_moe_runs(model: str, plan: str, message: str) -> None:
    with pytest.raises(RunSpecError, match=message):
        make_spec(model=model, plan=plan)
