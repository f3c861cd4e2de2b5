"""Ctrl-C during Keras `fit` (`deferred`): training stops before its next call of the train
function starts, with a KeyboardInterrupt, and resumes from its last save when run again.

Keras 3 loses a KeyboardInterrupt raised while it reads a call's logs back from the device (a
bare `except` in `keras.src.utils.python_utils.pythonify_logs`, Keras 3.15), and that read is
where the host waits for the device, so most Ctrl-Cs landed there: training went on to its end
and the command reported success. Inside `deferred`, SIGINT only marks the interrupt and
`RaiseOnInterrupt` raises it once the current call (at most `execution.MAX_BATCHES_PER_CALL`
micro-batches) and the epoch-end callbacks after it have run: a save due at that step is
made, and a Ctrl-C never falls between a save's files. A second Ctrl-C raises at once,
wherever that lands."""

from __future__ import annotations

import contextlib
import signal
import threading

import keras


class RaiseOnInterrupt(keras.callbacks.Callback):
    """Raises KeyboardInterrupt before a train-function call starts once `pending` is set."""

    def __init__(self):
        super().__init__()
        self.pending = False

    def on_train_batch_begin(self, batch, logs=None):
        if self.pending:
            raise KeyboardInterrupt


@contextlib.contextmanager
def deferred():
    """Yields a `RaiseOnInterrupt` callback for a `fit` inside the block, during which SIGINT
    marks it instead of raising; an interrupt still pending at the block's end raises there.
    Python's own SIGINT handler is put back after the first Ctrl-C and after the block. Where
    SIGINT is not Python's default (ignored, handled by someone else) or outside the main
    thread, nothing changes."""
    callback = RaiseOnInterrupt()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield callback
        return

    def mark(signum, frame):
        callback.pending = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second one raises

    signal.signal(signal.SIGINT, mark)
    try:
        yield callback
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if callback.pending:
        raise KeyboardInterrupt
