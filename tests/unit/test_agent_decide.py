"""What the agent does about each folded event (pure; given events, when one arrives, then these actions)."""

from __future__ import annotations

from taskfold.agent.decide import AcknowledgeCancel, HandBack, Rejoin, Run, Stop, held_attempt, react, resume
from taskfold.core.reports import AttemptEnd, AttemptKey, Reporter
from taskfold.core.events import Event
from taskfold.core.fold import Ledger
from taskfold.core.testing import Events

ME = "agent-1"
K1 = AttemptKey("q", "t1", 1)


def given(*events: Event) -> Ledger:
    ledger = Ledger()
    for event in events:
        ledger.apply(event)
    return ledger


def when(ledger: Ledger, event: Event, running=(), draining: bool = False) -> list:
    verdict = ledger.apply(event)
    return react(ledger.state(event.queue), event, verdict, ME, set(running), draining)


def setup(e: Events, slots: int = 1) -> Ledger:
    return given(e.join(ME, slots=slots), e.join("agent-2", slots=1), e.submit("t1"), e.submit("t2"))


def test_an_accepted_assignment_to_me_runs() -> None:
    e = Events()
    ledger = setup(e)
    (action,) = when(ledger, e.assign("t1", ME))
    assert isinstance(action, Run) and action.key == K1 and action.task.task_type == "echo"


def test_assignments_to_others_rejected_ones_and_already_running_ones_do_nothing() -> None:
    e = Events()
    ledger = setup(e)
    assert when(ledger, e.assign("t1", "agent-2")) == []
    ledger = setup(e := Events())
    assert isinstance(when(ledger, e.assign("t1", ME))[0], Run)
    assert when(ledger, e.assign("t2", ME)) == []  # beyond my one slot: rejected by the fold
    assert when(ledger, e.join(ME, slots=2), running={K1}) == []


def test_while_draining_an_assignment_is_handed_back() -> None:
    e = Events()
    (action,) = when(setup(e), e.assign("t1", ME), draining=True)
    assert isinstance(action, HandBack) and action.key == K1


def test_a_cancel_request_stops_my_running_attempt_only() -> None:
    e = Events()
    ledger = setup(e, slots=2)
    when(ledger, e.assign("t1", ME))
    assert when(ledger, e.cancel("t1"), running={K1}) == [Stop(K1, "cancel")]
    ledger = setup(e := Events(), slots=2)
    when(ledger, e.assign("t1", "agent-2"))
    assert when(ledger, e.cancel("t1"), running=set()) == []


def test_an_attempt_taken_away_by_the_log_is_revoked() -> None:
    e = Events()
    ledger = setup(e, slots=2)
    when(ledger, e.assign("t1", ME))
    assert when(ledger, e.expire("t1", ME), running={K1}) == [Stop(K1, "revoked")]
    ledger = setup(e := Events(), slots=2)
    when(ledger, e.assign("t1", ME))
    assert when(ledger, e.leave(ME, reason="lost"), running={K1}, draining=True) == [Stop(K1, "revoked")]


def test_my_completion_rejected_by_an_earlier_cancel_is_followed_by_task_cancelled() -> None:
    e = Events()
    ledger = setup(e)
    when(ledger, e.assign("t1", ME))
    when(ledger, e.start("t1", ME))
    when(ledger, e.cancel("t1"))  # lands before our completion
    completion = Reporter(ME).outcome(K1, AttemptEnd("completed"))
    (action,) = when(ledger, completion)
    assert isinstance(action, AcknowledgeCancel) and action.key == K1
    # Another agent's rejected completion, or a rejected one without a cancel, calls for nothing.
    ledger = setup(e := Events())
    when(ledger, e.assign("t1", ME))
    assert when(ledger, e.complete("t1", "agent-2")) == []


def test_declared_lost_while_alive_it_stops_what_it_held_and_joins_again() -> None:
    e = Events()
    ledger = setup(e)
    ledger.apply(e.assign("t1", ME))
    assert when(ledger, e.leave(ME, reason="lost"), running={K1}) == [Stop(K1, "revoked"), Rejoin("q")]
    assert when(ledger, e.leave("agent-2", reason="lost")) == []  # someone else's seat


def test_a_drained_leave_or_a_lost_one_while_draining_is_not_rejoined() -> None:
    e = Events()
    assert when(setup(e), e.leave(ME, reason="drained")) == []
    assert when(setup(e), e.leave(ME, reason="lost"), draining=True) == []


def test_resume_after_catching_up() -> None:
    e = Events()
    ledger = setup(e, slots=3)
    when(ledger, e.assign("t1", ME))
    when(ledger, e.assign("t2", ME))
    when(ledger, e.cancel("t2"))
    state = ledger.state("q")
    actions = resume(state, ME, running=set(), draining=False)
    assert [type(a) for a in actions] == [Run, AcknowledgeCancel]
    assert [a.key.task_id for a in actions] == ["t1", "t2"]
    assert [type(a) for a in resume(state, ME, running=set(), draining=True)] == [HandBack, AcknowledgeCancel]
    assert resume(state, ME, running={K1}, draining=False) == [actions[1]]
    assert resume(state, "stranger", running=set(), draining=False) == []


def test_held_attempt() -> None:
    e = Events()
    ledger = setup(e)
    assert held_attempt(ledger.state("q").task("t1"), ME) is None
    when(ledger, e.assign("t1", ME))
    assert held_attempt(ledger.state("q").task("t1"), ME) == K1
    assert held_attempt(ledger.state("q").task("t1"), "agent-2") is None
    assert held_attempt(None, ME) is None
