"""An event-driven training loop, small, with the public contract of PyTorch-Ignite's ``Engine``.

An :class:`Engine` calls ``process_fn(engine, batch)`` once per batch and fires :class:`Events`
around it; everything else (validation, checkpoints, logging, early stopping) is a handler::

    trainer = Engine(train_step)                     # train_step(engine, batch) -> output

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine):
        evaluator.run(valid_batches)                 # a second engine, run inside the first
        print(engine.state.epoch, evaluator.state.metrics)

    trainer.run(batches, max_epochs=5)

The order of events in a run of 2 epochs of 3 batches::

    STARTED
      EPOCH_STARTED     (state.epoch = 1)
        ITERATION_STARTED, process_fn, ITERATION_COMPLETED     x 3 (state.iteration = 1, 2, 3)
      EPOCH_COMPLETED
      EPOCH_STARTED     (state.epoch = 2)
        ...                                                    x 3 (state.iteration = 4, 5, 6)
      EPOCH_COMPLETED
    COMPLETED

Counters.  ``state.epoch`` is incremented just before EPOCH_STARTED and ``state.iteration`` (the
global count) and ``state.iteration_in_epoch`` (the position inside the epoch) just before
ITERATION_STARTED, so handlers and ``process_fn`` see the 1-based number of the current epoch and
iteration.  At EPOCH_COMPLETED ``iteration_in_epoch`` is already back to 0: the epoch is done.

Data.  ``run(data)`` takes an iterable, iterated afresh each epoch, or a callable (that is not
itself iterable) called as ``data(epoch)`` at the start of each epoch and returning that epoch's
iterable, e.g. a freshly shuffled order seeded by the epoch number.  ``state.epoch_length`` is the
``epoch_length`` argument, else ``len()`` of the epoch's iterable, else (for an iterator without a
length) the number of batches it gave, known once it is exhausted.

Stopping.  ``terminate()`` lets the current iteration finish (``process_fn`` and its
ITERATION_COMPLETED handlers), skips the rest of the run, does NOT fire EPOCH_COMPLETED for the
unfinished epoch (even if that iteration was its last batch: the epoch is completed, and its
EPOCH_COMPLETED fired, when the run is resumed), and fires COMPLETED.  Called from an
EPOCH_COMPLETED handler (early stopping) it stops before the next epoch; from STARTED or
EPOCH_STARTED, before the first batch.  ``terminate_epoch()`` ends only the current epoch after the
current iteration: EPOCH_COMPLETED fires and the next epoch starts.

Resuming.  ``run()`` starts afresh (epoch and iteration 0, empty metrics) when the engine has
never run or its last run went through all its ``max_epochs``, so an evaluator can be run again
and again.  Otherwise it continues where the state says: after a ``terminate()`` or an exception,
or after ``load_state_dict()``, whose position is always honoured.  When resuming in the middle of
an epoch (``iteration_in_epoch > 0``) the engine fires STARTED and EPOCH_STARTED (without
incrementing ``epoch``), then draws the first ``iteration_in_epoch`` batches of the epoch's
iterable without processing them (no events, counters unchanged), and goes on with the next one.
So ``data(epoch)`` must give the same order again for the resumed run to see the same batches.

Exceptions.  Any exception raised inside ``run`` (by ``process_fn``, a handler, or the data) is
passed to the EXCEPTION_RAISED handlers as ``handler(engine, exc)``.  With no such handler it is
re-raised.  With handlers it is considered handled and ``run`` returns (COMPLETED is not fired),
unless a handler raises.  ``KeyboardInterrupt``, ``SystemExit`` and other ``BaseException``\\ s that
are not ``Exception``\\ s take the same path but are always re-raised after the handlers ran.
If the exception interrupted an iteration, ``iteration`` and ``iteration_in_epoch`` still count it
while the handlers run, and are then stepped back so that the state (and a resume) counts only
iterations whose ``process_fn`` returned.
"""
from __future__ import annotations

import enum
import inspect
import time

__all__ = ["Events", "FilteredEvent", "EventsList", "State", "Engine", "RemovableEventHandle"]


class Events(enum.Enum):
    """The events an :class:`Engine` fires.  Call one to filter it:
    ``Events.ITERATION_COMPLETED(every=10)``, ``Events.EPOCH_COMPLETED(once=3)`` or
    ``Events.ITERATION_STARTED(event_filter=lambda engine, count: count in (1, 5))``.
    Combine with ``|`` to register one handler on several: ``Events.STARTED | Events.COMPLETED``."""

    STARTED = "started"
    EPOCH_STARTED = "epoch_started"
    ITERATION_STARTED = "iteration_started"
    ITERATION_COMPLETED = "iteration_completed"
    EPOCH_COMPLETED = "epoch_completed"
    COMPLETED = "completed"
    EXCEPTION_RAISED = "exception_raised"

    def __call__(self, every=None, once=None, event_filter=None):
        return FilteredEvent(self, every=every, once=once, event_filter=event_filter)

    def __or__(self, other):
        return EventsList([self]) | other


# The state counter a filter counts for each event: iteration events count iterations, the others
# epochs (as in Ignite).
_COUNTER = {Events.ITERATION_STARTED: "iteration", Events.ITERATION_COMPLETED: "iteration",
            Events.EXCEPTION_RAISED: "iteration"}


class FilteredEvent:
    """An event whose handlers run only when the filter says so.  The count is ``state.iteration``
    for ITERATION_* and EXCEPTION_RAISED, ``state.epoch`` for the others.  ``every=n``: the count
    is a multiple of n; ``once=n``: the count equals n; ``event_filter(engine, count) -> bool``."""

    def __init__(self, event: Events, every=None, once=None, event_filter=None):
        given = [x is not None for x in (every, once, event_filter)]
        if sum(given) != 1:
            raise ValueError("give exactly one of every=, once= and event_filter=")
        for name, value in (("every", every), ("once", once)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if event_filter is not None and not callable(event_filter):
            raise ValueError("event_filter must be a callable (engine, count) -> bool")
        self.event, self.every, self.once, self.event_filter = event, every, once, event_filter

    def allows(self, engine, count: int) -> bool:
        if self.every is not None:
            return count % self.every == 0
        if self.once is not None:
            return count == self.once
        return bool(self.event_filter(engine, count))

    def __or__(self, other):
        return EventsList([self]) | other

    def __repr__(self):
        what = (f"every={self.every}" if self.every is not None else
                f"once={self.once}" if self.once is not None else f"event_filter={self.event_filter!r}")
        return f"Events.{self.event.name}({what})"


class EventsList(list):
    """Several events (``Events.STARTED | Events.COMPLETED``) for one handler."""

    def __or__(self, other):
        return EventsList([*self, *(other if isinstance(other, EventsList) else [other])])


class State:
    """The engine's state; handlers may add attributes of their own (``engine.state.best = ...``).

    ``epoch``: the current (or last finished) epoch, 1-based, 0 before the first.
    ``iteration``: iterations so far in the whole run (all epochs).
    ``iteration_in_epoch``: the position inside the current epoch (0 between epochs).
    ``epoch_length``, ``max_epochs``: the run's sizes.  ``output``: the last ``process_fn`` result.
    ``batch``: the current batch.  ``dataloader``: the ``data`` given to ``run``.
    ``metrics``: a dict for handlers to fill.  ``times``: seconds taken by the last epoch
    (``times["EPOCH_COMPLETED"]``) and by the run (``times["COMPLETED"]``), set before those events.
    """

    def __init__(self):
        self.epoch = 0
        self.iteration = 0
        self.iteration_in_epoch = 0
        self.epoch_length = None
        self.max_epochs = None
        self.output = None
        self.batch = None
        self.dataloader = None
        self.metrics = {}
        self.times = {"EPOCH_COMPLETED": None, "COMPLETED": None}

    def __repr__(self):
        keys = ("epoch", "iteration", "iteration_in_epoch", "epoch_length", "max_epochs")
        return "State(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in keys) + ")"


class RemovableEventHandle:
    """What ``add_event_handler`` returns: ``handle.remove()`` unregisters the handler (also usable
    as a context manager, removing it on exit)."""

    def __init__(self, engine, event, entry):
        self._engine, self._event, self._entry = engine, event, entry

    def remove(self):
        entries = self._engine._handlers[self._event]
        if self._entry in entries:
            entries.remove(self._entry)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _takes_engine(handler, args, kwargs, extra) -> bool:
    """Whether ``handler`` is called with the engine first: Ignite allows handlers that take no
    engine argument.  ``extra`` is the number of arguments the event itself passes (the exception
    for EXCEPTION_RAISED)."""
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):            # some builtins have no signature: assume engine first
        return True
    placeholders = (None,) * extra
    for with_engine in (True, False):
        try:
            sig.bind(*((None,) if with_engine else ()), *placeholders, *args, **kwargs)
            return with_engine
        except TypeError:
            pass
    raise ValueError(f"handler {getattr(handler, '__name__', handler)!r} cannot be called with "
                     f"(engine{', exc' if extra else ''}, *{args!r}, **{kwargs!r})")


class Engine:
    """Runs ``process_fn(engine, batch) -> output`` over data for some epochs, firing events."""

    def __init__(self, process_fn):
        if not callable(process_fn):
            raise TypeError("process_fn must be a callable (engine, batch) -> output")
        self.process_fn = process_fn
        self.state = State()
        self.state_dict_user_keys = []         # extra state attributes saved by state_dict()
        self._handlers = {event: [] for event in Events}
        self._should_terminate = False
        self._should_terminate_epoch = False
        self._running = False
        self._finished = False                 # the last run went through all its epochs
        self._epoch_open = False               # an epoch has started and not yet completed
        self._iteration_open = False           # an iteration has started, process_fn not returned

    # ------------------------------------------------------------------------ handlers
    def add_event_handler(self, event, handler, *args, **kwargs):
        """Call ``handler(engine, *args, **kwargs)`` on ``event`` (an :class:`Events` member, a
        filtered event, or an ``|``-list of them).  EXCEPTION_RAISED handlers get the exception
        after the engine.  A handler that takes no engine argument is called without it."""
        if isinstance(event, EventsList):
            return [self.add_event_handler(e, handler, *args, **kwargs) for e in event]
        base, filt = (event.event, event) if isinstance(event, FilteredEvent) else (event, None)
        if not isinstance(base, Events):
            raise TypeError(f"unknown event {event!r}; use a member of minis2s.engine.Events")
        if not callable(handler):
            raise TypeError(f"handler {handler!r} is not callable")
        with_engine = _takes_engine(handler, args, kwargs, 1 if base is Events.EXCEPTION_RAISED else 0)
        entry = (handler, args, kwargs, filt, with_engine)
        self._handlers[base].append(entry)
        return RemovableEventHandle(self, base, entry)

    def on(self, event, *args, every=None, once=None, **kwargs):
        """Decorator form of :meth:`add_event_handler`; ``every=``/``once=`` filter the event
        like ``Events.X(every=...)`` does (and cannot be combined with an already filtered one)."""
        if every is not None or once is not None:
            if every is not None and once is not None:
                raise ValueError("give either every= or once=, not both")
            if not isinstance(event, Events):
                raise ValueError(f"{event!r} is already filtered or a list; every=/once= need a plain event")
            event = event(every=every, once=once)

        def decorator(handler):
            self.add_event_handler(event, handler, *args, **kwargs)
            return handler
        return decorator

    def has_event_handler(self, handler, event=None) -> bool:
        events = [event.event if isinstance(event, FilteredEvent) else event] if event else list(Events)
        return any(entry[0] is handler for e in events for entry in self._handlers[e])

    def remove_event_handler(self, handler, event):
        base = event.event if isinstance(event, FilteredEvent) else event
        kept = [entry for entry in self._handlers[base] if entry[0] is not handler]
        if len(kept) == len(self._handlers[base]):
            raise ValueError(f"{handler!r} is not registered for {event!r}")
        self._handlers[base] = kept

    def fire_event(self, event: Events, *event_args):
        """Call the handlers of ``event`` in registration order (filters applied)."""
        count = getattr(self.state, _COUNTER.get(event, "epoch"))
        for handler, args, kwargs, filt, with_engine in list(self._handlers[event]):
            if filt is None or filt.allows(self, count):
                handler(*((self,) if with_engine else ()), *event_args, *args, **kwargs)

    # ------------------------------------------------------------------------ control
    def terminate(self):
        """Stop the run after the current iteration; see the module docstring for the events."""
        self._should_terminate = True

    def terminate_epoch(self):
        """End the current epoch after the current iteration; EPOCH_COMPLETED still fires."""
        self._should_terminate_epoch = True

    # ------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """The position to resume from: ``epoch``, ``iteration``, ``iteration_in_epoch``,
        ``epoch_length``, ``max_epochs`` (and ``state_dict_user_keys``).  Only finished iterations
        count, and an epoch in which none finished is reported as not started, so the dict taken
        from any handler resumes at the first batch not yet processed."""
        st = self.state
        iteration, in_epoch, epoch = st.iteration, st.iteration_in_epoch, st.epoch
        if self._iteration_open:
            iteration, in_epoch = iteration - 1, in_epoch - 1
        if self._epoch_open and in_epoch == 0:
            epoch -= 1
        out = {"epoch": epoch, "iteration": iteration, "iteration_in_epoch": in_epoch,
               "epoch_length": st.epoch_length, "max_epochs": st.max_epochs}
        out.update({k: getattr(st, k) for k in self.state_dict_user_keys})
        return out

    def load_state_dict(self, state_dict: dict):
        """Set the position the next ``run`` continues from.  Keys: ``epoch`` and/or
        ``iteration`` (at least one), optionally ``iteration_in_epoch``, ``epoch_length``,
        ``max_epochs`` and the ``state_dict_user_keys``.  ``iteration_in_epoch > 0`` means epoch
        ``epoch`` is unfinished with that many batches done; 0 means ``epoch`` epochs are done.
        Given only ``iteration`` (Ignite's form), the rest is derived from ``epoch_length``."""
        known = {"epoch", "iteration", "iteration_in_epoch", "epoch_length", "max_epochs"}
        unknown = set(state_dict) - known - set(self.state_dict_user_keys)
        if unknown:
            raise ValueError(f"unknown engine state keys {sorted(unknown)}; expected some of {sorted(known)}")
        if "epoch" not in state_dict and "iteration" not in state_dict:
            raise ValueError("an engine state needs 'epoch' or 'iteration'")
        length = state_dict.get("epoch_length")
        epoch, iteration = state_dict.get("epoch"), state_dict.get("iteration")
        in_epoch = state_dict.get("iteration_in_epoch")
        if epoch is None or iteration is None:
            if not length:
                raise ValueError("'epoch_length' is needed to derive epoch and iteration from one another")
            if epoch is None:
                epoch, rest = divmod(iteration, length)
                in_epoch, epoch = (rest, epoch + 1) if rest else (0, epoch)
            else:
                iteration = epoch * length
        in_epoch = in_epoch or 0
        if epoch < 0 or iteration < 0 or in_epoch < 0 or (in_epoch and epoch == 0):
            raise ValueError(f"inconsistent engine state {state_dict!r}")
        if length and in_epoch > length:
            raise ValueError(f"iteration_in_epoch {in_epoch} is beyond epoch_length {length}")
        st = self.state
        st.epoch, st.iteration, st.iteration_in_epoch = epoch, iteration, in_epoch
        st.epoch_length = length
        st.max_epochs = state_dict.get("max_epochs", st.max_epochs)
        for k in self.state_dict_user_keys:
            if k in state_dict:
                setattr(st, k, state_dict[k])
        self._epoch_open, self._iteration_open, self._finished = in_epoch > 0, False, False

    # ------------------------------------------------------------------------ the loop
    def run(self, data, max_epochs=None, epoch_length=None) -> State:
        """Run (or resume) over ``data`` until ``max_epochs`` epochs are done; returns the state.

        ``max_epochs``: default 1 for a fresh run, the state's value when resuming; it must not
        be below the epoch already reached.  ``epoch_length``: batches per epoch (default: the
        length of the epoch's iterable); an epoch also ends when its iterable runs out."""
        if self._running:
            raise RuntimeError("this engine is already running; use a second Engine (an evaluator)")
        for name, value in (("max_epochs", max_epochs), ("epoch_length", epoch_length)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        st = self.state
        fresh = self._finished or (st.epoch == 0 and st.iteration == 0 and not self._epoch_open)
        if fresh:
            st.epoch = st.iteration = st.iteration_in_epoch = 0
            st.metrics = {}
            st.max_epochs = max_epochs or 1
            self._epoch_open = False
        else:                                  # also honours counters set by hand
            self._epoch_open = self._epoch_open or st.iteration_in_epoch > 0
            st.max_epochs = max_epochs or st.max_epochs or 1
            if st.max_epochs < st.epoch:
                raise ValueError(f"max_epochs={st.max_epochs} is below the epoch already reached ({st.epoch})")
        st.epoch_length = epoch_length or (None if fresh else st.epoch_length)
        st.dataloader = data
        self._should_terminate = self._should_terminate_epoch = self._finished = False
        self._iteration_open = False
        self._running = True
        start = time.perf_counter()
        try:
            self.fire_event(Events.STARTED)
            while not self._should_terminate:
                if not self._epoch_open:
                    if st.epoch >= st.max_epochs:
                        break
                    st.epoch += 1
                    st.iteration_in_epoch = 0
                    self._epoch_open = True
                self._run_epoch(data, epoch_length)
            self._finished = not self._epoch_open and st.epoch >= st.max_epochs
            st.times["COMPLETED"] = time.perf_counter() - start
            self.fire_event(Events.COMPLETED)
        except BaseException as exc:   # noqa: B036 -- KeyboardInterrupt too; re-raised below
            handled = bool(self._handlers[Events.EXCEPTION_RAISED])
            try:
                if handled:
                    self.fire_event(Events.EXCEPTION_RAISED, exc)
            finally:
                self._running = False
                if self._iteration_open:       # count only iterations whose process_fn returned
                    st.iteration -= 1
                    st.iteration_in_epoch -= 1
                    self._iteration_open = False
            if not handled or not isinstance(exc, Exception):
                raise
        finally:
            self._running = False
        return st

    def _run_epoch(self, data, epoch_length):
        """One epoch (or the rest of one, when resuming): EPOCH_STARTED, the iterations, and
        EPOCH_COMPLETED unless ``terminate()`` was called."""
        st = self.state
        source = data(st.epoch) if callable(data) and not hasattr(data, "__iter__") else data
        if epoch_length is None and hasattr(source, "__len__"):
            st.epoch_length = len(source)
        started = time.perf_counter()
        self._should_terminate_epoch = False
        self.fire_event(Events.EPOCH_STARTED)
        if self._should_terminate:
            return
        batches = iter(source)
        exhausted = False
        for _ in range(st.iteration_in_epoch):          # resuming: skip the batches already done
            if next(batches, _END) is _END:
                exhausted = True
                break
        while not (exhausted or self._should_terminate or self._should_terminate_epoch):
            if st.epoch_length is not None and st.iteration_in_epoch >= st.epoch_length:
                break
            batch = next(batches, _END)
            if batch is _END:
                if st.epoch_length is None:
                    st.epoch_length = st.iteration_in_epoch
                break
            st.iteration += 1
            st.iteration_in_epoch += 1
            self._iteration_open = True
            st.batch = batch
            self.fire_event(Events.ITERATION_STARTED)
            st.output = self.process_fn(self, batch)
            self._iteration_open = False
            self.fire_event(Events.ITERATION_COMPLETED)
        if self._should_terminate:
            return
        self._should_terminate_epoch = False
        self._epoch_open = False
        st.iteration_in_epoch = 0
        st.times["EPOCH_COMPLETED"] = time.perf_counter() - started
        self.fire_event(Events.EPOCH_COMPLETED)


_END = object()    # the sentinel next() returns when an epoch's iterator is exhausted
