"""The input pipeline and the GPU-path switches, on the CPU.

Samplers are checked against the permutation they are defined from; the
mixed-precision and channels-last switches against the plain float32 step.
"""

import lightning as L
import pytest
import torch
from piq import ssim as piq_ssim

from vicious.attack.batches import EpochSeededSampler, ShardSampler, TensorDataModule, TensorImageDataset, make_loader
from vicious.attack.lightning_module import AttackModule, _float32
from vicious.config.schema import LossConfig
from vicious.data import Split
from vicious.models import create_model

# Steps run outside a Trainer here, where self.log only warns.
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def _order(length, seed, epoch):
    """The epoch's permutation as EpochSeededSampler documents it."""
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def test_one_process_sampler_is_the_seeded_permutation_and_changes_each_epoch():
    sampler = EpochSeededSampler(50, seed=3)
    first = list(sampler)
    assert first == _order(50, 3, 0).tolist() and sorted(first) == list(range(50))
    sampler.set_epoch(1)
    assert list(sampler) == _order(50, 3, 1).tolist() != first
    sampler.set_epoch(0)
    assert list(sampler) == first  # a resumed run draws the same order


@pytest.mark.parametrize("length,batch,world", [(480, 40, 2), (103, 10, 4), (7, 5, 3), (64, 8, 1)])
def test_shards_take_the_global_batches_round_robin_and_cover_the_epoch(length, batch, world):
    order = _order(length, seed=1, epoch=2)
    shards = []
    for rank in range(world):
        sampler = EpochSeededSampler(length, 1, batch_size=batch, rank=rank, world_size=world)
        sampler.set_epoch(2)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler)
    assert len({len(s) for s in shards}) == 1  # DDP needs equal step counts
    rounds = length // (batch * world)
    for rank, shard in enumerate(shards):
        for k in range(rounds):  # rank r's k-th batch is global batch k * world + r
            start = (k * world + rank) * batch
            assert shard[k * batch:(k + 1) * batch] == order[start:start + batch].tolist()
    seen = [i for s in shards for i in s]
    assert set(seen) == set(range(length))
    assert len(seen) - length < world  # padding: at most world - 1 repeats


def test_evaluation_shards_score_every_image_exactly_once():
    for length, world in [(200, 2), (101, 4), (3, 3)]:
        parts = [list(ShardSampler(length, rank=r, world_size=world)) for r in range(world)]
        assert [i for p in parts for i in p] == list(range(length))
    with pytest.raises(ValueError, match="cannot be shared by 4 processes"):
        ShardSampler(3, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank must lie in"):
        EpochSeededSampler(10, 0, rank=2, world_size=2)


def test_a_batch_is_gathered_in_one_indexing_operation():
    images = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(20)
    loader = make_loader(images, labels, batch_size=6, shuffle=True, seed=0)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [6, 6, 6, 2]
    expected = _order(20, 0, 0)
    for k, (x, y) in enumerate(batches):
        index = expected[6 * k:6 * (k + 1)]
        assert torch.equal(x, images[index]) and torch.equal(y, labels[index])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_images_held_on_the_gpu_are_gathered_there():
    images = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8)
    dataset = TensorImageDataset(images.cuda(), torch.arange(20).cuda())
    x, y = dataset.__getitems__([3, 1, 4])
    assert x.is_cuda and torch.equal(x.cpu(), images[[3, 1, 4]]) and y.tolist() == [3, 1, 4]


class _Recorder(L.LightningModule):
    """Records the labels (here: image indices) each training step receives."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).extend(batch[1].tolist())
        return self.weight * batch[0].float().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_reshuffles_the_data_module_each_epoch_in_the_documented_order():
    split = Split(torch.randint(0, 256, (24, 1, 8, 8), dtype=torch.uint8), torch.arange(24))
    data = TensorDataModule(split, split, batch_size=5, eval_batch_size=8, seed=7)
    module = _Recorder()
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=1, use_distributed_sampler=False, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    assert {e: module.seen[e] for e in range(3)} == {e: _order(24, 7, e).tolist() for e in range(3)}


def _pair():
    torch.manual_seed(0)
    classifier = create_model("wrn-classifier", depth=10, width=1, in_channels=1, num_outputs=10,
                              mean=(0.5,), std=(0.25,))
    decoder = create_model("wrn-decoder", depth=10, width=1, out_channels=1, num_inputs=10, image_size=16,
                           input_form="raw", task="multiclass")
    return classifier, decoder


@pytest.mark.parametrize("phase,classifier_learns,decoder_learns",
                         [("joint", True, True), ("classifier", True, False), ("decoder", False, True)])
def test_only_the_phase_networks_learn(phase, classifier_learns, decoder_learns):
    classifier, decoder = _pair()
    classifier.requires_grad_(False)  # as a previous phase may have left them
    decoder.requires_grad_(False)
    AttackModule(classifier, decoder, phase=phase, loss=LossConfig(), lr=1e-3, seed=0, augment=False)
    assert all(p.requires_grad == classifier_learns for p in classifier.parameters())
    assert all(p.requires_grad == decoder_learns for p in decoder.parameters())


def _batch():
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8, generator=generator), torch.arange(8) % 10


def test_channels_last_gives_the_same_training_loss_and_gradients():
    results = []
    for channels_last in (False, True):
        classifier, decoder = _pair()
        module = AttackModule(classifier, decoder, phase="joint", loss=LossConfig(), lr=1e-3, seed=0,
                              augment=True, channels_last=channels_last)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
            assert classifier.stem.weight.is_contiguous(memory_format=torch.channels_last)
        loss = module.training_step(_batch(), 0)
        loss.backward()
        results.append((loss.detach(), classifier.stem.weight.grad.clone()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-6)


def test_under_bf16_autocast_only_the_networks_run_in_bf16():
    x = torch.rand(4, 3, 16, 16)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    exact = piq_ssim(y, x, data_range=1.0, kernel_size=11, kernel_sigma=1.5, downsample=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lossy = piq_ssim(y, x, data_range=1.0, kernel_size=11, kernel_sigma=1.5, downsample=False)
        with _float32(x.device):
            kept = piq_ssim(y, x, data_range=1.0, kernel_size=11, kernel_sigma=1.5, downsample=False)
    assert abs(float(lossy - exact)) > 1e-4  # what the float32 block guards against
    assert float(kept) == float(exact)
    classifier, decoder = _pair()
    module = AttackModule(classifier, decoder, phase="joint", loss=LossConfig(), lr=1e-3, seed=0, augment=True)
    reference = module.training_step(_batch(), 0).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = module.training_step(_batch(), 0).detach()
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed)
    # bf16 networks, float32 losses: 0.03% apart here; bf16 losses would add ~1% (above).
    assert float(mixed) == pytest.approx(float(reference), rel=0.01)


def test_gpu_path_switches_run_through_train_run(tmp_path):
    """bf16-mixed, channels-last, data_on_device (a no-op on the CPU) and gradient
    accumulation are accepted end to end; accumulation halves the optimiser steps."""
    import csv

    from vicious.config.presets import get_preset
    from vicious.config.schema import apply_overrides
    from vicious.runs.training import train_run

    config = apply_overrides(get_preset("fashion-mnist-vicious-small"), [
        "data.train_limit=100", "data.val_limit=50", "data.test_limit=50", "train.epochs=1", "train.batch_size=25",
        "train.progress=false", "train.accelerator=cpu", "train.precision=bf16-mixed", "train.channels_last=true",
        "train.data_on_device=true", "train.accumulate_grad_batches=2",
    ])
    run = train_run(config, tmp_path / "run")
    assert (run / "classifier.safetensors").is_file() and (run / "decoder.safetensors").is_file()
    (log,) = run.glob("logs/joint/*/metrics.csv")
    rows = [r for r in csv.DictReader(log.open()) if r["val/score"]]
    # 4 batches, an optimiser step every 2: global step 2 (Lightning logs it as step 1).
    assert rows[0]["step"] == "1"
    assert all(0 <= float(rows[0][k]) <= 1 for k in ("val/accuracy", "val/mse"))
