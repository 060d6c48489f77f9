"""Exercise 16, solved with the library's own schedule (minis2s.tf_schedule)."""
from types import SimpleNamespace

from minis2s.tf_schedule import tf_ratio_for_epoch as library_schedule


def tf_ratio_for_epoch(schedule, epoch, tf_ratio, decay, minimum):
    cfg = SimpleNamespace(tf_schedule=schedule, tf_ratio=tf_ratio, tf_decay=decay, tf_min=minimum)
    return library_schedule(cfg, epoch)
