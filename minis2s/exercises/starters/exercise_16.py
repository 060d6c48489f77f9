"""Exercise 16: scheduled sampling, the teacher-forcing ratio by epoch.

docs/concepts.md section 12; minis2s/tf_schedule.py is the library's version (minis2s train
--tf-schedule). A constant tf_ratio is not scheduled sampling: the schedule LOWERS the ratio as
training goes on. With i = epoch - 1 (epochs count from 1), r0 = tf_ratio, d = decay:

    constant          r = r0
    linear            r = r0 - d i
    exponential       r = r0 d^i
    inverse-sigmoid   r = r0 (d + 1) / (d + exp(i / d))

and the ratio never goes below `minimum` (nor above r0). Then run:

    minis2s exercise check 16
"""
import math


def tf_ratio_for_epoch(schedule, epoch, tf_ratio, decay, minimum):
    """schedule: "constant", "linear", "exponential" or "inverse-sigmoid"; epoch: 1, 2, ...;
    tf_ratio: the ratio of epoch 1; decay: the schedule's parameter d (None for constant);
    minimum: the floor. Returns a float.
    """
    raise NotImplementedError
