"""GPU paths: the same results as on the CPU (skipped without CUDA; CI never has a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esrkit.data.tensors import DeviceSequences, make_input
from esrkit.models import MODELS
from tests.models.test_fidelity import MAX_LEN, _random_sequences, _right_aligned, official_llmesr_log2feats

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_llmesr_on_cuda_matches_the_official_layout(backbone: str) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n_items = 40
    llm = rng.normal(size=(n_items, 32)).astype(np.float32)
    pca = rng.normal(size=(n_items, 8)).astype(np.float32)
    model = (
        MODELS.get("llmesr")(n_items, llm, pca, backbone=backbone, hidden=8, max_len=MAX_LEN).cuda().eval()
    )
    seqs = _random_sequences(rng, n_items, [2, 9, 4, 0, 17, 1])
    full = _right_aligned(seqs, MAX_LEN).cuda()
    with torch.no_grad():
        ref = official_llmesr_log2feats(model, full)[:, -1]
        width = max(len(s) for s in seqs)
        ours = model.last_hidden(make_input(full[:, -width:], MAX_LEN))
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-3)


def test_training_step_on_cuda() -> None:
    from esrkit.training.objectives import SelfDistillation
    from esrkit.training.trainer import Trainer, TrainerOptions
    from tests.training.helpers import MAX_LEN as ML
    from tests.training.helpers import small_assets, small_data

    data = small_data()
    items, pca, nb = small_assets()
    seqs = DeviceSequences(data, "cuda")
    model = MODELS.get("llmesr")(data.n_items, items, pca[16], hidden=16, max_len=ML).cuda()
    sd = SelfDistillation(seqs, nb, 10, 0.1, max_len=ML)
    trainer = Trainer(model, seqs, TrainerOptions(max_len=ML), lambda m, e: {}, None, sd, progress=False)
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = np.arange(64)
    first = trainer.step(rows, gen)["loss"]
    for _ in range(10):
        last = trainer.step(rows, gen)["loss"]
    assert np.isfinite(last) and last < first
