"""Property-based tests of :class:`TargetLimiter` (hypothesis): random boxes and limits, random sequences of
desired targets, measured poses (inside and outside the box, NaN/inf, 1e30) and holds. Every command must be
finite, move at most ``max_speed * dt`` from the previous one, stay in the box unless it moves back towards it or
towards where the hand was when a hold began, and (outside holds) never move away from the hand once it leads by
``max_lead``. Example counts are bounded so the module runs in seconds."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robot_rl.hardware.ros2.safety import TargetLimiter

SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
EPS = 1e-9
SPECIAL = [math.nan, math.inf, -math.inf, 1e30, -1e30]


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 3))
    low = np.array(draw(st.lists(st.floats(-2.0, 2.0), min_size=n, max_size=n)))
    width = np.array(draw(st.lists(st.floats(0.05, 2.0), min_size=n, max_size=n)))
    high = low + width
    dt = draw(st.sampled_from([0.001, 0.01, 0.1]))
    max_speed = draw(st.floats(0.05, 5.0))
    max_accel = draw(st.floats(0.5, 500.0))
    max_lead = draw(st.floats(0.005, 1.0))

    def vector(allow_special: bool):
        axis = st.floats(-2.0 - 4.0, 4.0 + 4.0)  # the box lies within [-2, 4]: well inside and well outside
        if allow_special:
            axis = st.one_of(axis, axis, axis, st.sampled_from(SPECIAL))
        return st.lists(axis, min_size=n, max_size=n).map(np.array)

    start = draw(vector(False))
    op = st.one_of(
        st.tuples(st.just("call"), vector(True), vector(True)),
        st.tuples(st.just("call"), st.just(np.zeros(n + 1)), vector(True)),  # desired of the wrong size
        st.tuples(st.just("hold"), st.none(), vector(True)),
    )
    ops = draw(st.lists(op, min_size=1, max_size=40))
    first = draw(st.sampled_from(["reset", "hold"]))
    return (low, high, max_speed, max_accel, dt, max_lead), first, start, ops


def finite(v: np.ndarray, n: int) -> bool:
    return v.shape == (n,) and bool(np.isfinite(v).all())


@SETTINGS
@given(scenarios())
def test_every_command_is_finite_rate_limited_and_stays_in_the_box_or_goes_towards_the_hand(case) -> None:
    (low, high, max_speed, max_accel, dt, max_lead), first, start, ops = case
    lim = TargetLimiter(low, high, max_speed, max_accel, dt, max_lead)
    n, step = low.shape[0], max_speed * dt
    prev = lim.reset(start) if first == "reset" else lim.hold(start)
    assert np.array_equal(prev, start)  # the first command is where the hand is, even outside the box
    anchor = start if first == "hold" else None
    for kind, desired, measured in ops:
        is_hold = kind == "hold" or not finite(desired, n) or not finite(measured, n)
        if is_hold and anchor is None:  # a hold begins: it converges to where the hand is, if plausible
            plausible = finite(measured, n) and bool((np.abs(measured - prev) <= max_lead + step).all())
            anchor = measured.copy() if plausible else prev.copy()  # else it stays put
        out = lim.hold(measured) if kind == "hold" else lim(desired, measured)
        assert out is not None and out.shape == (n,) and np.isfinite(out).all()
        assert np.abs(out - prev).max() <= step * (1 + EPS) + EPS, "moved faster than max_speed"
        assert lim.holding == is_hold
        if is_hold:
            # only towards the hold's anchor, never past it: in or out of the box, it goes where the hand was
            assert (np.abs(out - anchor) <= np.abs(prev - anchor) + EPS).all()
            assert (out >= np.minimum(prev, anchor) - EPS).all() and (out <= np.maximum(prev, anchor) + EPS).all()
        else:
            anchor = None
            # out of the box only as far as the previous command was: it may come back, never go further out
            assert (out >= np.minimum(low, prev) - EPS).all() and (out <= np.maximum(high, prev) + EPS).all()
            # never away from the hand once leading it by max_lead
            assert (np.abs(out - measured) <= np.maximum(max_lead, np.abs(prev - measured)) + EPS).all()
        prev = out


@SETTINGS
@given(scenarios(), st.lists(st.floats(-20.0, 20.0), min_size=3, max_size=3), st.integers(1, 5))
def test_a_hold_reaches_the_hand_at_max_speed_and_stays(case, offset_steps, extra) -> None:
    (low, high, max_speed, max_accel, dt, max_lead), _, start, ops = case
    lim = TargetLimiter(low, high, max_speed, max_accel, dt, max_lead)
    lim.reset(start)
    for kind, desired, measured in ops:  # wherever the random history left the command
        if kind == "call" and finite(desired, low.shape[0]) and finite(measured, low.shape[0]):
            lim(desired, measured)
    before = lim.target.copy()
    # a hand up to max_lead + max_step away (the most a tracking arm can lag), in or out of the box
    reach = 0.999 * min(max_lead + max_speed * dt, 50 * max_speed * dt)  # at most 50 holds to get there
    hand = before + np.array(offset_steps[:low.shape[0]]) / 20.0 * reach
    needed = int(math.ceil(np.abs(hand - before).max() / (max_speed * dt) - 1e-6))
    for _ in range(needed):
        assert not np.allclose(lim.target, hand, rtol=0, atol=1e-12) or needed == 0
        lim.hold(hand)
    for _ in range(extra):
        out = lim.hold(hand)
    assert np.allclose(out, hand, atol=1e-9)
    assert np.allclose(lim.hold(hand + 1.0), hand, atol=1e-9)  # anchored: it does not chase a moving arm
