"""The exact evaluator on cases small enough to compute by hand."""

from __future__ import annotations

import pytest

from perseus.errors import InputError
from perseus.pipeline.dag import PipelineDAG
from perseus.pipeline.evaluate import evaluate_frequencies, evaluate_plan
from perseus.plan import FrequencyPlan
from perseus.profile import parse_profile

# Two stages, two frequencies. Blocking power 10 W.
CSV = """stage,instruction,frequency,time,energy
0,forward,1000,1.0,100
0,forward,500,2.0,60
0,backward,1000,2.0,200
0,backward,500,4.0,120
1,forward,1000,1.5,150
1,forward,500,3.0,90
1,backward,1000,3.0,300
1,backward,500,6.0,180
"""


@pytest.fixture
def profile():  # type: ignore[no-untyped-def]
    return parse_profile(CSV, source="hand.csv", blocking_power=10.0)


def test_single_microbatch_chain_by_hand(profile) -> None:  # type: ignore[no-untyped-def]
    # 1F1B with one microbatch is the chain F(s0) -> F(s1) -> B(s1) -> B(s0).
    dag = PipelineDAG.build("1f1b", 2, 1)
    freq = {(n.stage, n.kind): 1000 for n in dag.nodes}
    t, e = evaluate_frequencies(profile, dag, [freq[(n.stage, n.kind)] for n in dag.nodes])
    # T = 1 + 1.5 + 3 + 2 = 7.5; instructions 750 J; idle (7.5-3) + (7.5-4.5) = 7.5 s at 10 W.
    assert t == pytest.approx(7.5)
    assert e == pytest.approx(750 + 75)
    freq[(0, "forward")] = 500
    t, e = evaluate_frequencies(profile, dag, [freq[(n.stage, n.kind)] for n in dag.nodes])
    # T = 8.5; instructions 710 J; idle (8.5-4) + (8.5-4.5) = 8.5 s.
    assert t == pytest.approx(8.5)
    assert e == pytest.approx(710 + 85)


def test_two_microbatches_overlap_by_hand(profile) -> None:  # type: ignore[no-untyped-def]
    dag = PipelineDAG.build("1f1b", 2, 2)
    # Stage 0: F0 F1 B0 B1 ; stage 1: F0 B0 F1 B1, all at 1000 MHz.
    # s0.F0 [0,1] s0.F1 [1,2]; s1.F0 [1,2.5] s1.B0 [2.5,5.5] s1.F1 [5.5,7] s1.B1 [7,10]
    # s0.B0 [5.5,7.5] s0.B1 [10,12]  -> T = 12
    t, e = evaluate_frequencies(profile, dag, [1000] * dag.num_nodes)
    assert t == pytest.approx(12.0)
    busy0, busy1 = 2 * (1 + 2), 2 * (1.5 + 3)
    assert e == pytest.approx(2 * (100 + 200 + 150 + 300) + 10 * ((12 - busy0) + (12 - busy1)))


def test_plan_round_trip_and_order_validation(profile, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from perseus.solver.baselines import max_frequency_plan

    plan = max_frequency_plan(profile, "1f1b", 2, 2)
    path = tmp_path / "p.json"
    plan.save(path)
    loaded = FrequencyPlan.load(path)
    assert evaluate_plan(profile, loaded) == pytest.approx((plan.iteration_time, plan.energy))
    data = loaded.to_dict()
    data["stages"][0][0], data["stages"][0][1] = data["stages"][0][1], data["stages"][0][0]
    with pytest.raises(InputError, match="stage 0 position 0 is forward:1, the schedule runs forward:0"):
        evaluate_plan(profile, FrequencyPlan.from_dict(data))
    data = loaded.to_dict()
    data["stages"][1][0]["frequency"] = 777
    with pytest.raises(InputError, match="no measurement at 777 MHz"):
        evaluate_plan(profile, FrequencyPlan.from_dict(data))
    with pytest.raises(InputError, match="field 'num_stages' has the wrong type"):
        FrequencyPlan.from_dict({**loaded.to_dict(), "num_stages": "two"})
