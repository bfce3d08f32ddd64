"""DPO's three forms of reference: a frozen copy, the adapter-disabled base under LoRA, and
log-probs precomputed once (and cached on disk); they give the same losses where they should."""

import pytest
import torch

pytest.importorskip("peft", reason="the language-model extras (pip install -e '.[lm]')")
import lightning as L  # noqa: E402

from policylab.datamodules import PreferenceDataModule  # noqa: E402
from policylab.modules.preference import DPO  # noqa: E402
from policylab.tasks.arithmetic import AdditionTask, build_model, build_tokenizer, write_jsonl  # noqa: E402

LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj"], "lora_dropout": 0.0}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    build_tokenizer(folder / "tok")
    write_jsonl(AdditionTask(max_operand=9, seed=0).preference_rows(1500), folder / "train.jsonl")
    write_jsonl(AdditionTask(max_operand=9, seed=7).preference_rows(200), folder / "val.jsonl")
    return folder


def _dm(folder, batch_size=32):
    return PreferenceDataModule(
        str(folder / "train.jsonl"),
        str(folder / "tok"),
        val_file=str(folder / "val.jsonl"),
        batch_size=batch_size,
        max_length=16,
        max_prompt_length=8,
    )


def _trainer(steps, **kwargs):
    return L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


class _Losses(L.Callback):
    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append(float(outputs["loss"]))


def test_lora_trains_only_adapters_and_its_reference_is_the_base(files):
    dm = _dm(files)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    base = build_model(seed=0)
    expected_ref = DPO._log_probs(base.eval(), batch)[0].detach()
    model = DPO(build_model(seed=0), lora=LORA, lr=5e-3)
    assert model.reference is None and model.uses_lora
    trainable = {n for n, p in model.policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.policy.named_parameters()}
    L.seed_everything(0)
    _trainer(200, limit_val_batches=0).fit(model, dm)
    changed = {n for n, p in model.policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable
    # The reference is the untouched base: equal to the starting model's log-probs.
    torch.testing.assert_close(model.reference_log_probs(batch), expected_ref, atol=1e-5, rtol=1e-5)
    after = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).validate(
        model, dm, verbose=False
    )[0]
    assert after["val/reward_accuracy"] > 0.6, after


def test_precomputed_reference_gives_the_same_training_as_the_live_one(files, tmp_path):
    runs = {}
    for precompute in (False, True):
        L.seed_everything(0)
        model = DPO(
            build_model(seed=0),
            lr=2e-3,
            precompute_reference=precompute,
            reference_cache=str(tmp_path / "cache") if precompute else None,
        )
        losses = _Losses()
        _trainer(20, limit_val_batches=0, callbacks=[losses]).fit(model, _dm(files))
        runs[precompute] = losses.values
    torch.testing.assert_close(torch.tensor(runs[True]), torch.tensor(runs[False]), atol=1e-5, rtol=1e-4)
    assert sorted(p.name.split("_")[2] for p in (tmp_path / "cache").glob("*.pt")) == ["train", "val"]
    assert not list((tmp_path / "cache").glob("*.partial"))


def test_the_cache_is_reused_and_keyed_by_data_and_weights(files, tmp_path):
    cache = tmp_path / "cache"

    def fit(model, dm):
        _trainer(2, limit_val_batches=0).fit(model, dm)

    first = DPO(build_model(seed=0), precompute_reference=True, reference_cache=str(cache))
    fit(first, _dm(files))
    written = {p: p.stat().st_mtime_ns for p in cache.glob("*.pt")}

    # Same data and reference: read back, the reference model never runs.
    again = DPO(build_model(seed=0), precompute_reference=True, reference_cache=str(cache))
    calls = []
    again.reference.register_forward_hook(lambda *a: calls.append(1))
    fit(again, _dm(files))
    assert not calls and {p: p.stat().st_mtime_ns for p in cache.glob("*.pt")} == written

    # Another reference (different weights): new files beside the old ones.
    fit(DPO(build_model(seed=1), precompute_reference=True, reference_cache=str(cache)), _dm(files))
    assert len(list(cache.glob("*.pt"))) == 4 and set(written) < set(cache.glob("*.pt"))


def test_reference_cache_without_precompute_is_refused():
    with pytest.raises(ValueError, match="precompute_reference"):
        DPO(build_model(seed=0), reference_cache="somewhere")


def test_attach_values_checks_the_row_count(files):
    dm = _dm(files)
    dm.setup("fit")
    with pytest.raises(ValueError, match="3 values of 'ref_chosen' for 1500 rows of train"):
        dm.attach_values("train", {"ref_chosen": torch.zeros(3)})


def test_a_lora_run_saves_its_adapters_that_load_back(files, tmp_path):
    from lightning.pytorch.loggers import CSVLogger
    from peft import PeftModel

    model = DPO(build_model(seed=0), lora=LORA, lr=5e-3)
    trainer = L.Trainer(
        max_steps=3,
        logger=CSVLogger(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, _dm(files))
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    saved = tmp_path / "lightning_logs/version_0/hf_model"
    assert (saved / "adapter_config.json").is_file()
    loaded = PeftModel.from_pretrained(build_model(seed=0), str(saved)).eval()
    dm = _dm(files)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    model.policy.eval()
    with torch.no_grad():
        torch.testing.assert_close(DPO._log_probs(loaded, batch)[0], DPO._log_probs(model.policy, batch)[0])
