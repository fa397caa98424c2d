"""Look inside a model trained by state_tracking.py (``--save weights.npz``, either
framework): what each token does in the first layer, and which part of D_t and b_t
the test accuracy depends on.

    python examples/state_tracking.py --task modular --save modular.npz
    python examples/state_tracking_probe.py modular.npz

Per token (the first layer's input is the token's embedding, so each token has one
transition, one D and one b per head): the router's choice (the dictionary entry of
FlashPDSSM, the largest mixture weight of PDSSM), |d| (least and mean over the
lanes), the phase of d (largest and mean, radians) and |b| (largest and sum).
Then the test accuracy of the model as trained and with, in every layer, the phase
of D_t set to 0, |d| set to 1, b_t set to 0, or several of these: an exact automaton
needs none of the phase, the decay or the input beyond the start, so what the
accuracy at long lengths gains from each is how far the trained model is from one.
The model runs with torch on the CPU; the weights are the torch model's (JAX runs
save theirs under the same names).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import pathlib
import runpy

import numpy as np

EXAMPLE = runpy.run_path(str(pathlib.Path(__file__).with_name("state_tracking.py")))
EDITS = {"phase 0": ("phase",), "magnitude 1": ("magnitude",), "b 0": ("b",), "phase 0, magnitude 1": ("phase", "magnitude"),
         "phase 0, magnitude 1, b 0": ("phase", "magnitude", "b")}


def load(path):
    """The torch model saved at ``path`` and its configuration."""
    import torch

    z = np.load(path)
    cfg = json.loads(str(z["__config__"]))
    vocab, classes, _ = EXAMPLE["TASKS"][cfg["task"]]
    model = EXAMPLE["_torch_model"](dict(cfg, device="cpu"), vocab, classes, "cpu")
    model.load_state_dict({k: torch.as_tensor(z[k]) for k in z.files if k != "__config__"})
    return model.eval(), cfg


def token_table(model):
    """Per token and head, the first layer's router choice, |d|, phase and |b|, as rows of a dict."""
    import torch

    # the embedding as a sequence of every token: the layer's own per-step inputs, (H, tokens, .)
    with torch.no_grad():
        logits, mag, phase, b = model.layers[0]._step_inputs(model.embed.weight)
    choice, b = logits.argmax(-1), b.abs()
    # phases are in [0, 2 pi): the distance from 0 either way is what moves the state
    phase = torch.minimum(phase, 2 * math.pi - phase)
    return [dict(token=t, head=h, choice=int(choice[h, t]), mag_min=float(mag[h, t].min()),
                 mag_mean=float(mag[h, t].mean()), phase_max=float(phase[h, t].max()),
                 phase_mean=float(phase[h, t].mean()), b_max=float(b[h, t].max()), b_sum=float(b[h, t].sum()))
            for t in range(choice.shape[1]) for h in range(choice.shape[0])]


def edited(model, parts):
    """A copy of ``model`` whose layers have the phase of D_t at 0, |d| at 1 and / or b_t at 0."""
    import torch

    model = copy.deepcopy(model)
    with torch.no_grad():
        for layer in model.layers:
            if "phase" in parts:  # 2 pi sigmoid(-40) is 3e-17 rad
                layer.phase_w.zero_(), layer.phase_b.fill_(-40.0)
            if "magnitude" in parts:  # sigmoid(40) is 1 in float32
                layer.mag_w.zero_(), layer.mag_b.fill_(40.0)
            if "b" in parts:
                layer.B_re.zero_(), layer.B_im.zero_()
    return model


def accuracy(model, cfg, lengths, size):
    """Test accuracy per length on the example's test data (the same sequences as its own test)."""
    import torch

    def predict(x):
        with torch.no_grad():
            return model(torch.as_tensor(x)).argmax(-1).numpy()

    return EXAMPLE["evaluate"](cfg["task"], predict, lengths, size, cfg["seed"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", help="an .npz written by state_tracking.py --save")
    ap.add_argument("--test-lengths", type=int, nargs="+", default=None, help="default: the run's")
    ap.add_argument("--test-size", type=int, default=256)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    model, cfg = load(args.weights)
    lengths = args.test_lengths or cfg["test_lengths"]
    print(f"{cfg['task']} / {cfg['framework']}, seed {cfg['seed']}: first layer, per token (the last is BOS)")
    print("| token | head | choice | min abs d | mean abs d | max phase | mean phase | max abs b | sum abs b |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in token_table(model):
        print(f"| {r['token']} | {r['head']} | {r['choice']} | {r['mag_min']:.5f} | {r['mag_mean']:.5f} | "
              f"{r['phase_max']:.4f} | {r['phase_mean']:.4f} | {r['b_max']:.4f} | {r['b_sum']:.3f} |")
    print(f"\naccuracy (%) on {args.test_size} test sequences per length")
    print("| model | " + " | ".join(f"L={n}" for n in lengths) + " |")
    print("| --- |" + " ---: |" * len(lengths))
    for name, parts in {"as trained": (), **EDITS}.items():
        acc = accuracy(edited(model, parts), cfg, lengths, args.test_size)
        print(f"| {name} | " + " | ".join(f"{100 * acc[n]:.1f}" for n in lengths) + " |")


if __name__ == "__main__":
    main()
