"""Temporary engine (to be replaced by the full implementation)."""
from __future__ import annotations

import enum


class Events(enum.Enum):
    STARTED = "started"
    EPOCH_STARTED = "epoch_started"
    ITERATION_STARTED = "iteration_started"
    ITERATION_COMPLETED = "iteration_completed"
    EPOCH_COMPLETED = "epoch_completed"
    COMPLETED = "completed"
    EXCEPTION_RAISED = "exception_raised"


class State:
    def __init__(self):
        self.epoch = 0
        self.iteration = 0
        self.iteration_in_epoch = 0
        self.epoch_length = None
        self.max_epochs = None
        self.output = None
        self.metrics = {}


class Engine:
    def __init__(self, process_fn):
        self.process_fn = process_fn
        self.handlers = {e: [] for e in Events}
        self.state = State()
        self._stop = False

    def on(self, event, every=None, once=None):
        def deco(fn):
            self.handlers[event].append(fn)
            return fn
        return deco

    def fire(self, event):
        for h in self.handlers[event]:
            h(self)

    def terminate(self):
        self._stop = True

    def load_state_dict(self, d):
        for k, v in d.items():
            setattr(self.state, k, v)

    def run(self, data, max_epochs=1):
        st = self.state
        st.max_epochs = max_epochs
        self.fire(Events.STARTED)
        while (st.epoch < max_epochs or st.iteration_in_epoch > 0) and not self._stop:
            skip = st.iteration_in_epoch
            if skip == 0:
                st.epoch += 1
            batches = list(data(st.epoch) if callable(data) else data)
            st.epoch_length = len(batches)
            self.fire(Events.EPOCH_STARTED)
            for b in batches[skip:]:
                st.batch = b
                self.fire(Events.ITERATION_STARTED)
                st.output = self.process_fn(self, b)
                st.iteration += 1
                st.iteration_in_epoch += 1
                self.fire(Events.ITERATION_COMPLETED)
                if self._stop:
                    break
            if not self._stop or st.iteration_in_epoch == st.epoch_length:
                self.fire(Events.EPOCH_COMPLETED)
                st.iteration_in_epoch = 0
        self.fire(Events.COMPLETED)
        return st
