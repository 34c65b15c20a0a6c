"""
The TLDR weighting rule: how much System-1 (short CoT) and System-2 (long CoT) data to train on.

Bounds, measured once on the dev set: the short model M_S gives T_S mean tokens at accuracy A_S,
the long model M_L gives T_L tokens at accuracy A_L (T_L > T_S and A_L > A_S).
Every eval_interval steps the model being trained scores T tokens at accuracy A on the same dev set,
and each data set gets a benefit (its distance from its goal, as a fraction of the bounds' gap):

    b_short = max((T - T_S) / |T_L - T_S|, 0)     # still too long -> more System-1 data
    b_long  = max((A_L - A) / |A_L - A_S|, 0)     # lost accuracy  -> more System-2 data

The weights w = (w_short, w_long) take one exponentiated-gradient step (as in DoReMi), then smoothing:

    w' = softmax(log w + eta * b)
    w  = (1 - c) * w' + c / 2

with eta = 4, c = 1e-4 and w = (0.5, 0.5) at the start. Static mode keeps w fixed (the ablation).
Each example of a step picks System-1 with probability w_short, else System-2, and takes the next
example of that system's shuffled order (a fresh permutation each epoch).
"""
import json
import math
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np


@dataclass
class Bounds:
    short_tokens: float
    short_acc: float
    long_tokens: float
    long_acc: float

    def __post_init__(self):
        for f in fields(self):
            setattr(self, f.name, float(getattr(self, f.name)))
        tokens, accs = (self.short_tokens, self.long_tokens), (self.short_acc, self.long_acc)
        if not (all(math.isfinite(t) and t >= 0 for t in tokens) and all(0 <= a <= 1 for a in accs)):  # NaN fails
            raise ValueError(f"tokens must be finite and >= 0, accuracies in [0, 1], got {self}")
        # the benefits divide by these gaps, and the rule only makes sense if the long model
        # is the one that reasons better and the short one is the one that is brief
        if not self.long_acc > self.short_acc:
            raise ValueError(f"the long model must be more accurate than the short one, got "
                             f"long_acc={self.long_acc} <= short_acc={self.short_acc}")
        if not self.long_tokens > self.short_tokens:
            raise ValueError(f"the long model must answer with more tokens than the short one, got "
                             f"long_tokens={self.long_tokens} <= short_tokens={self.short_tokens}")

    @classmethod
    def load(cls, path):
        try:
            with open(path) as f:
                d = json.load(f)
            return cls(d["short"]["tokens"], d["short"]["accuracy"], d["long"]["tokens"], d["long"]["accuracy"])
        except (KeyError, TypeError, ValueError) as e:  # JSONDecodeError is a ValueError
            raise ValueError(f"bad bounds file {path}: {type(e).__name__}: {e}") from None

    def to_json(self, **info) -> str:
        """The bounds file's text; info (model names, sampling settings, ...) is kept beside the numbers."""
        d = {"short": {"tokens": self.short_tokens, "accuracy": self.short_acc},
             "long": {"tokens": self.long_tokens, "accuracy": self.long_acc}, **info}
        return json.dumps(d, indent=2) + "\n"


def benefits(bounds, dev_tokens, dev_acc):
    if not (math.isfinite(dev_tokens) and dev_tokens >= 0 and 0 <= dev_acc <= 1):
        raise ValueError(f"bad dev measurement: tokens={dev_tokens}, accuracy={dev_acc}")
    b_short = max((dev_tokens - bounds.short_tokens) / abs(bounds.long_tokens - bounds.short_tokens), 0.0)
    b_long = max((bounds.long_acc - dev_acc) / abs(bounds.long_acc - bounds.short_acc), 0.0)
    return b_short, b_long


@lru_cache(maxsize=8)
def _permutation(seed, system, epoch, size):
    # a generator of its own per (seed, system, epoch): the order never depends on what was drawn before
    return np.random.default_rng([seed, system, epoch]).permutation(size)


class Mixture:
    def __init__(self, weights=(0.5, 0.5), eta=4.0, c=1e-4, static=False):
        w = [float(x) for x in weights]
        if len(w) != 2 or not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"weights must be two numbers >= 0 with a positive sum, got {weights}")
        self.weights = (w[0] / sum(w), w[1] / sum(w))  # (w_short, w_long) = System-1, System-2
        self.eta, self.c, self.static = eta, c, static
        self.cursors = [0, 0]  # examples drawn so far from each system, over all epochs
        self.history = []

    def update(self, bounds, dev_tokens, dev_acc):
        b = benefits(bounds, dev_tokens, dev_acc)
        if not self.static:
            # softmax(log w + eta*b) written as w * exp(eta*(b - max b)) / sum: same value,
            # but no log(0) and no overflow however far the model is from the bounds
            z = [w * math.exp(self.eta * (bk - max(b))) for w, bk in zip(self.weights, b)]
            # smoothing: a multiplicative update can never bring back a weight that reached 0
            # (or underflowed), so each set keeps at least c/2 and can recover when needed
            self.weights = tuple((1 - self.c) * zk / sum(z) + self.c / 2 for zk in z)
        rec = {"dev_tokens": dev_tokens, "dev_acc": dev_acc, "b_short": b[0], "b_long": b[1],
               "w_short": self.weights[0], "w_long": self.weights[1]}
        self.history.append(rec)
        return rec

    def draw(self, step, n, sizes, seed):
        """The n examples of optimizer step `step`: a list of (system, index), system 1 or 2.
        A pure function of (seed, step, weights, cursors); advances the cursors."""
        for k in range(2):
            if sizes[k] <= 0 and self.weights[k] > 0:
                raise ValueError(f"the System-{k + 1} data set is empty but its weight is {self.weights[k]:.4g}")
        # numpy seeds [a, b] and [a, b, 0] give the same stream, so [seed, step] could replay a
        # permutation's [seed, system, 0]; the 0 in second place (the system there) keeps them apart
        u = np.random.default_rng([seed, 0, step]).random(n)
        out = []
        for x in u:
            k = 0 if x < self.weights[0] else 1
            epoch, i = divmod(self.cursors[k], sizes[k])
            out.append((k + 1, int(_permutation(seed, k + 1, epoch, sizes[k])[i])))
            self.cursors[k] += 1
        return out

    def state_dict(self):
        return {"weights": list(self.weights), "cursors": list(self.cursors), "history": list(self.history),
                "eta": self.eta, "c": self.c, "static": self.static}

    def load_state_dict(self, state):
        # a resumed run with another eta, c or mode would silently follow a different rule
        for key in ("eta", "c", "static"):
            if state[key] != getattr(self, key):
                raise ValueError(f"saved mixture has {key}={state[key]}, this run has {getattr(self, key)}")
        self.weights = tuple(float(w) for w in state["weights"])
        self.cursors = [int(x) for x in state["cursors"]]
        self.history = [dict(r) for r in state["history"]]
