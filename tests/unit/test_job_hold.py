"""A run whose output checks end after its hold is recorded at the next step past the hold: how
far it overran (which the job's tables could choose) tells a few steps, not the time taken."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.services.jobs.run import HOLD_STEP_SECONDS, release_time


@given(st.floats(0, 1e6), st.floats(0, 1e5))
def test_an_overrun_is_recorded_on_a_step_past_the_hold(not_before: float, overrun: float) -> None:
    recorded = release_time(not_before, not_before + overrun)
    steps = (recorded - not_before) / HOLD_STEP_SECONDS
    assert recorded >= not_before + overrun - 1e-6
    assert abs(steps - round(steps)) < 1e-6  # a whole number of steps: nothing finer gets out
    assert recorded - (not_before + overrun) < HOLD_STEP_SECONDS + 1e-6


def test_checks_within_the_hold_are_recorded_at_its_end() -> None:
    assert release_time(100.0, 99.0) == 100.0 == release_time(100.0, 100.0)
    assert release_time(100.0, 100.001) == release_time(100.0, 129.9) == 100.0 + HOLD_STEP_SECONDS
