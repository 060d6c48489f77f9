"""Exercise 16, wrong: the linear schedule without its floor (the ratio goes negative)."""
import math


def tf_ratio_for_epoch(schedule, epoch, tf_ratio, decay, minimum):
    i = epoch - 1
    if schedule == "constant":
        return tf_ratio
    if schedule == "linear":
        return tf_ratio - decay * i                                            # wrong: no max(minimum, .)
    if schedule == "exponential":
        return max(minimum, tf_ratio * decay ** i)
    return max(minimum, tf_ratio * (decay + 1) / (decay + math.exp(i / decay)))
