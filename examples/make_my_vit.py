"""Make examples/my_vit.pt: the weights examples/my-method.yaml evaluates as "your own"
state dict (a model trained elsewhere, here a few seconds on the shapes dataset).

    python examples/make_my_vit.py      # from the repository root; overwrites the file

The state dict is the plain ``state_dict()`` of ``tiny_vit`` (examples/my_arch.py) with
the example's ``arch_kwargs`` and 10 classes, trained on images in [0, 1] without input
normalization (the plug-in's default: ``normalize: none``). The shipped file came from
this script (CPU; seeded, but another torch version may give other bits). So few
epochs leave it barely above chance (12.8 % on 500 fresh images, 10 classes): it
stands for weights you bring, not for a good ViT.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from cambench.data.shapes import generate_shapes  # noqa: E402
from cambench.plugins import load_plugins  # noqa: E402

ARCH_KWARGS = {"image_size": 32, "patch_size": 8}  # as in examples/my-method.yaml


def main(out: Path = ROOT / "examples" / "my_vit.pt", epochs: int = 6) -> None:
    load_plugins([str(ROOT / "examples" / "my_arch.py")])
    from cambench.models import ARCH_FACTORIES

    images, labels, _ = generate_shapes(3000, 32, 10, seed=123)
    x = images.float() / 255
    torch.manual_seed(0)
    model = ARCH_FACTORIES["tiny_vit"](10, **ARCH_KWARGS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        for begin in range(0, len(x), 64):
            batch = order[begin : begin + 64]
            loss = F.cross_entropy(model(x[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        test, test_labels, _ = generate_shapes(500, 32, 10, seed=456)
        accuracy = (model(test.float() / 255).argmax(1) == test_labels).float().mean()
    print(f"accuracy on 500 fresh images: {100 * accuracy:.1f} %")
    torch.save(model.state_dict(), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
