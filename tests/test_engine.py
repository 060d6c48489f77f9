"""The event engine: event order, filters, terminate, exceptions, resume, per-epoch data, and the
trainer/evaluator pattern."""
import pytest

from minis2s.engine import Engine, Events


def recorder(engine, log):
    """Register a handler on every event that appends (event name, epoch, iteration) to log."""
    for event in Events:
        if event is Events.EXCEPTION_RAISED:
            continue
        engine.add_event_handler(event, lambda e, name=event.name: log.append(
            (name, e.state.epoch, e.state.iteration)))


def collect_engine():
    """An engine whose process_fn records every batch it processes."""
    seen = []
    return Engine(lambda engine, batch: seen.append(batch) or batch * 10), seen


# ----------------------------------------------------------------------------- order of events
def test_order_of_events_for_2_epochs_of_3_iterations():
    log = []
    engine = Engine(lambda e, batch: log.append(("process", batch)) or batch)
    recorder(engine, log)
    state = engine.run([1, 2, 3], max_epochs=2)
    iteration = lambda ep, it: [("ITERATION_STARTED", ep, it), ("process", (it - 1) % 3 + 1),
                                ("ITERATION_COMPLETED", ep, it)]
    expected = [("STARTED", 0, 0),
                ("EPOCH_STARTED", 1, 0), *iteration(1, 1), *iteration(1, 2), *iteration(1, 3),
                ("EPOCH_COMPLETED", 1, 3),
                ("EPOCH_STARTED", 2, 3), *iteration(2, 4), *iteration(2, 5), *iteration(2, 6),
                ("EPOCH_COMPLETED", 2, 6),
                ("COMPLETED", 2, 6)]
    assert log == expected
    assert (state.epoch, state.iteration, state.epoch_length, state.max_epochs) == (2, 6, 3, 2)
    assert state.output == 3 and state.batch == 3 and state.iteration_in_epoch == 0


def test_times_are_the_seconds_of_the_last_epoch_and_of_the_run(monkeypatch):
    """On a fake clock that moves only inside the batches (1 s each) and the handlers (0.5 s at
    each EPOCH_STARTED, 0.25 s at each EPOCH_COMPLETED, after the epoch's time is taken)."""
    import types
    import minis2s.engine as engine_module
    clock = {"now": 100.0}

    def advance(seconds):
        clock["now"] += seconds
    monkeypatch.setattr(engine_module, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    engine = Engine(lambda e, batch: advance(1.0))
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: advance(0.5))
    epoch_times = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: (epoch_times.append(e.state.times["EPOCH_COMPLETED"]),
                                                                advance(0.25)))
    state = engine.run([1, 2, 3], max_epochs=2)
    assert epoch_times == [3.5, 3.5]                   # EPOCH_STARTED's 0.5 + three batches
    assert state.times["EPOCH_COMPLETED"] == 3.5
    assert state.times["COMPLETED"] == 7.5             # 2 x (3.5 + 0.25): everything in run()


def test_iteration_in_epoch_counts_inside_the_epoch_and_is_0_at_epoch_completed():
    seen = []
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.iteration_in_epoch))
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(("end", e.state.iteration_in_epoch)))
    engine.run("abc", max_epochs=2)
    assert seen == [1, 2, 3, ("end", 0), 1, 2, 3, ("end", 0)]


def test_handler_arguments_removal_and_handlers_without_engine():
    calls = []
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.STARTED, lambda e, a, k=None: calls.append((e is engine, a, k)), 1, k=2)
    engine.add_event_handler(Events.COMPLETED, lambda: calls.append("no engine"))
    handle = engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: calls.append("removed"))
    handle.remove()

    @engine.on(Events.STARTED | Events.COMPLETED)
    def both(e):
        calls.append("both")
    engine.run([0])
    assert calls == [(True, 1, 2), "both", "no engine", "both"]
    assert engine.has_event_handler(both) and engine.has_event_handler(both, Events.COMPLETED)
    engine.remove_event_handler(both, Events.COMPLETED)
    assert not engine.has_event_handler(both, Events.COMPLETED)
    with pytest.raises(ValueError):
        engine.add_event_handler(Events.STARTED, lambda a, b, c: None)


# ----------------------------------------------------------------------------- filters
@pytest.mark.parametrize("form", ["call", "keyword"])
def test_every_and_once_filters_in_both_forms(form):
    engine = Engine(lambda e, b: None)
    every, once, epochs = [], [], []

    def register(event, handler, **flt):
        if form == "call":
            engine.add_event_handler(event(**flt), handler)
        else:
            engine.on(event, **flt)(handler)
    register(Events.ITERATION_COMPLETED, lambda e: every.append(e.state.iteration), every=4)
    register(Events.ITERATION_STARTED, lambda e: once.append(e.state.iteration), once=5)
    register(Events.EPOCH_COMPLETED, lambda e: epochs.append(e.state.epoch), once=2)
    engine.run(range(3), max_epochs=4)                       # 12 iterations
    assert every == [4, 8, 12] and once == [5] and epochs == [2]


def test_event_filter_and_invalid_filters():
    engine = Engine(lambda e, b: None)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=lambda e, n: n in (1, 3)),
                             lambda e: seen.append(e.state.iteration))
    engine.run(range(4))
    assert seen == [1, 3]
    with pytest.raises(ValueError):
        engine.on(Events.ITERATION_COMPLETED, every=2, once=3)
    with pytest.raises(ValueError):
        Events.ITERATION_COMPLETED(every=2, once=3)
    with pytest.raises(ValueError):
        Events.ITERATION_COMPLETED(every=0)
    with pytest.raises(ValueError):
        Events.ITERATION_COMPLETED()
    with pytest.raises(ValueError):
        engine.on(Events.ITERATION_COMPLETED(every=2), once=3)


# ----------------------------------------------------------------------------- terminate
def test_terminate_finishes_the_iteration_skips_the_rest_and_fires_completed():
    log = []
    engine = Engine(lambda e, b: log.append(("process", b)))
    recorder(engine, log)
    engine.on(Events.ITERATION_COMPLETED, once=2)(lambda e: e.terminate())
    state = engine.run([1, 2, 3], max_epochs=3)
    names = [x[0] for x in log]
    assert names == ["STARTED", "EPOCH_STARTED",
                     "ITERATION_STARTED", "process", "ITERATION_COMPLETED",
                     "ITERATION_STARTED", "process", "ITERATION_COMPLETED",
                     "COMPLETED"]                            # no EPOCH_COMPLETED: epoch unfinished
    assert (state.epoch, state.iteration, state.iteration_in_epoch) == (1, 2, 2)


def test_terminate_in_epoch_completed_stops_before_the_next_epoch_and_a_new_run_continues():
    engine, seen = collect_engine()
    stop = engine.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate())
    engine.run([1, 2], max_epochs=3)
    assert seen == [1, 2] and engine.state.epoch == 1
    stop.remove()
    engine.run([1, 2])                                       # continues: max_epochs kept
    assert seen == [1, 2, 1, 2, 1, 2] and engine.state.epoch == 3


def test_terminate_epoch_ends_only_the_epoch_and_fires_epoch_completed():
    engine, seen = collect_engine()
    ended = []
    engine.on(Events.ITERATION_COMPLETED, every=2)(lambda e: e.terminate_epoch())
    engine.on(Events.EPOCH_COMPLETED)(lambda e: ended.append(e.state.epoch))
    engine.run([1, 2, 3], max_epochs=2)
    assert seen == [1, 2, 1, 2] and ended == [1, 2]


# ----------------------------------------------------------------------------- exceptions
def failing_engine(at=5):
    def step(engine, batch):
        if engine.state.iteration == at:
            raise RuntimeError(f"boom at {batch}")
        return batch
    return Engine(step)


def test_an_exception_is_re_raised_when_no_handler_is_registered():
    engine = failing_engine()
    with pytest.raises(RuntimeError, match="boom at 1"):
        engine.run([0, 1, 2], max_epochs=2)
    # the failed iteration is not counted: a resume would process it again
    assert (engine.state.epoch, engine.state.iteration, engine.state.iteration_in_epoch) == (2, 4, 1)


def test_an_exception_goes_to_exception_raised_handlers_and_is_not_re_raised():
    engine, caught, completed = failing_engine(), [], []

    @engine.on(Events.EXCEPTION_RAISED)
    def handle(e, exc):
        caught.append((type(exc), str(exc), e.state.iteration, e.state_dict()["iteration"]))
    engine.on(Events.COMPLETED)(lambda e: completed.append(True))
    state = engine.run([0, 1, 2], max_epochs=2)
    assert caught == [(RuntimeError, "boom at 1", 5, 4)] and completed == [] and state.iteration == 4


def test_keyboard_interrupt_runs_the_handlers_and_still_propagates():
    def step(engine, batch):
        if batch == 2:
            raise KeyboardInterrupt
    engine, caught = Engine(step), []
    engine.add_event_handler(Events.EXCEPTION_RAISED, lambda e, exc: caught.append(type(exc)))
    with pytest.raises(KeyboardInterrupt):
        engine.run([1, 2, 3])
    assert caught == [KeyboardInterrupt]
    assert engine.state_dict()["iteration"] == 1


def test_an_exception_in_a_handler_takes_the_same_path():
    engine = Engine(lambda e, b: None)
    engine.on(Events.EPOCH_COMPLETED)(lambda e: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        engine.run([1])


# ----------------------------------------------------------------------------- resume
def test_resume_mid_epoch_from_a_state_dict_processes_exactly_the_remaining_batches():
    data = lambda epoch: [(epoch, i) for i in range(5)]      # noqa: E731 -- a per-epoch order
    full, full_seen = collect_engine()
    full.run(data, max_epochs=3)

    first, first_seen = collect_engine()
    saved = {}
    first.on(Events.ITERATION_COMPLETED, once=7)(lambda e: (saved.update(e.state_dict()), e.terminate()))
    first.run(data, max_epochs=3)
    assert saved == {"epoch": 2, "iteration": 7, "iteration_in_epoch": 2, "epoch_length": 5, "max_epochs": 3}

    resumed, resumed_seen = collect_engine()
    events = []
    resumed.on(Events.EPOCH_STARTED)(lambda e: events.append(("start", e.state.epoch, e.state.iteration_in_epoch)))
    resumed.load_state_dict(saved)
    state = resumed.run(data)                                # max_epochs comes from the state
    assert first_seen + resumed_seen == full_seen
    assert resumed_seen[0] == (2, 2) and len(resumed_seen) == 15 - 7
    assert events == [("start", 2, 2), ("start", 3, 0)]
    assert (state.epoch, state.iteration) == (3, 15)


def test_resume_at_an_epoch_boundary_and_ignite_style_iteration_only_state():
    engine, seen = collect_engine()
    engine.load_state_dict({"epoch": 1, "iteration": 3, "max_epochs": 2})
    engine.run([1, 2, 3])
    assert seen == [1, 2, 3] and engine.state.iteration == 6

    engine, seen = collect_engine()
    engine.load_state_dict({"iteration": 4, "epoch_length": 3, "max_epochs": 2})
    assert (engine.state.epoch, engine.state.iteration_in_epoch) == (2, 1)
    engine.run([1, 2, 3])
    assert seen == [2, 3]
    engine, seen = collect_engine()
    engine.state.epoch, engine.state.iteration, engine.state.iteration_in_epoch = 1, 1, 1
    engine.run([1, 2, 3], max_epochs=1)                      # counters set by hand
    assert seen == [2, 3]
    with pytest.raises(ValueError):
        engine.load_state_dict({"iteration": 4})             # cannot derive the epoch
    with pytest.raises(ValueError):
        engine.load_state_dict({"epoch": 1, "itertion": 3})  # typo


def test_a_finished_engine_runs_afresh_but_a_loaded_end_state_is_honoured():
    engine, seen = collect_engine()
    engine.run([1, 2])
    engine.state.metrics["x"] = 1
    engine.run([3])
    assert seen == [1, 2, 3] and engine.state.iteration == 1 and engine.state.metrics == {}
    engine.load_state_dict({"epoch": 2, "iteration": 4, "max_epochs": 2})
    engine.run([5])
    assert seen == [1, 2, 3] and engine.state.epoch == 2      # already at the end: nothing to do
    with pytest.raises(ValueError):
        engine.load_state_dict({"epoch": 3, "iteration": 6}) or engine.run([5], max_epochs=2)


def test_a_state_dict_taken_at_epoch_started_or_after_a_failed_first_batch_restarts_that_epoch():
    engine = Engine(lambda e, b: None)
    saved = []
    engine.on(Events.EPOCH_STARTED, once=2)(lambda e: saved.append(e.state_dict()))
    engine.run([1, 2], max_epochs=2)
    assert saved[0]["epoch"] == 1 and saved[0]["iteration_in_epoch"] == 0

    engine = failing_engine(at=4)                            # the first batch of epoch 2 fails
    with pytest.raises(RuntimeError):
        engine.run([0, 1, 2], max_epochs=2)
    assert engine.state_dict()["epoch"] == 1 and engine.state_dict()["iteration"] == 3
    engine.process_fn = lambda e, b: b
    seen = []
    engine.on(Events.ITERATION_COMPLETED)(lambda e: seen.append((e.state.epoch, e.state.output)))
    engine.run([0, 1, 2])                                    # the same engine continues epoch 2
    assert seen == [(2, 0), (2, 1), (2, 2)] and engine.state.iteration == 6


# ----------------------------------------------------------------------------- data
def test_callable_data_is_called_with_each_epoch_number():
    calls = []

    def data(epoch):
        calls.append(epoch)
        return [f"e{epoch}b{i}" for i in range(epoch)]       # epochs of different lengths
    engine, seen = collect_engine()
    lengths = []
    engine.on(Events.EPOCH_STARTED)(lambda e: lengths.append(e.state.epoch_length))
    engine.run(data, max_epochs=3)
    assert calls == [1, 2, 3] and lengths == [1, 2, 3]
    assert seen == ["e1b0", "e2b0", "e2b1", "e3b0", "e3b1", "e3b2"]
    assert engine.state.dataloader is data


def test_epoch_length_and_iterators_without_length():
    engine, seen = collect_engine()
    engine.run(range(10), max_epochs=2, epoch_length=3)     # the first 3 of a fresh pass each epoch
    assert seen == [0, 1, 2, 0, 1, 2]
    engine, seen = collect_engine()
    engine.run(lambda epoch: iter("xy"), max_epochs=2)      # no len(): measured when exhausted
    assert seen == list("xyxy") and engine.state.epoch_length == 2


# ----------------------------------------------------------------------------- trainer + evaluator
def test_an_evaluator_run_inside_the_trainers_epoch_completed_writes_metrics():
    weights = {"w": 0.0}
    train_data = [(x, 2.0 * x) for x in (1.0, 2.0, 3.0)]
    valid_data = [(x, 2.0 * x) for x in (4.0, 5.0)]

    def train_step(engine, batch):
        x, y = batch
        error = weights["w"] * x - y
        weights["w"] -= 0.05 * error * x
        return error ** 2

    def eval_step(engine, batch):
        x, y = batch
        return (weights["w"] * x - y) ** 2

    trainer, evaluator = Engine(train_step), Engine(eval_step)
    history = []

    @evaluator.on(Events.STARTED)
    def reset(engine):
        engine.state.total, engine.state.count = 0.0, 0

    @evaluator.on(Events.ITERATION_COMPLETED)
    def accumulate(engine):
        engine.state.total += engine.state.output
        engine.state.count += 1

    @evaluator.on(Events.COMPLETED)
    def write_metrics(engine):
        engine.state.metrics["mse"] = engine.state.total / engine.state.count

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine):
        evaluator.run(valid_data)
        engine.state.metrics["valid_mse"] = evaluator.state.metrics["mse"]
        history.append((engine.state.epoch, evaluator.state.epoch, evaluator.state.iteration,
                        evaluator.state.metrics["mse"]))

    trainer.run(train_data, max_epochs=4)
    assert [h[:3] for h in history] == [(1, 1, 2), (2, 1, 2), (3, 1, 2), (4, 1, 2)]
    mses = [h[3] for h in history]
    assert all(b < a for a, b in zip(mses, mses[1:]))        # it learns w = 2
    assert trainer.state.metrics["valid_mse"] == mses[-1] and trainer.state.iteration == 12


def test_running_an_engine_from_its_own_handler_is_refused():
    engine = Engine(lambda e, b: None)
    engine.on(Events.STARTED)(lambda e: e.run([1]))
    with pytest.raises(RuntimeError, match="already running"):
        engine.run([1])
