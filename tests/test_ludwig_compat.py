"""Each Ludwig 0.17.10 workaround, and a test that fails the day upstream behaviour changes.

When one of the `test_upstream_*` tests fails after a Ludwig upgrade, the bug it pins was fixed
upstream: delete the matching workaround in ftpipe/ludwig_compat.py (or the configuration that
sidesteps it) together with the test.
"""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
import torch

from ftpipe.training import ludwig_compat
from ftpipe.training import CompileContext, compile_spec
from ftpipe.errors import CompileError, TrainError
from ftpipe.spec import PipelineSpec
from ftpipe.data.templates import chat_prompt

ludwig_compat.import_ludwig()


def tiny_spec(**training) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "name": "t", "base_model": "tiny-llama",
        "tasks": [{"name": "a", "source": "x.jsonl", "target": "{{ y }}"}],
        "training": {"epochs": 1, "batch_size": 4, **training},
    })


def test_upstream_adapters_null_still_rejected_by_stock_schema():
    """Workaround 1 (LudwigModel.load fails on `adapters: null`) is needed while this holds."""
    assert ludwig_compat.adapters_null_rejected()


def test_upstream_unknown_keys_still_silently_dropped(tiny_llama_dir):
    """Ludwig drops unknown keys with a hidden DeprecationWarning; check_config must catch that."""
    from ludwig.schema.model_types.base import ModelConfig

    config = compile_spec(tiny_spec(), CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=32, max_target_tokens=4))
    config["trainer"]["learnin_rate"] = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resolved = ModelConfig.from_dict(config).to_dict()  # no error upstream ...
    assert "learnin_rate" not in resolved["trainer"]  # ... the key just disappears
    with pytest.raises(CompileError, match="learnin_rate"):
        ludwig_compat.check_config(config)


def test_check_config_accepts_compiled_config_unchanged(tiny_llama_dir):
    config = compile_spec(tiny_spec(max_steps=3), CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=32, max_target_tokens=4))
    resolved = ludwig_compat.check_config(config)
    assert resolved["trainer"]["train_steps"] == 3 and resolved["trainer"]["learning_rate"] == 0.001
    assert resolved["preprocessing"]["split"] == {"type": "fixed", "column": "split"}


def test_upstream_prompt_cut_at_last_pad_token(tiny_llama_dir):
    """Ludwig cuts a prompt at its last pad token: with pad = eos (as SmolLM2 converts) every chat prompt
    loses its system and user turns. The store sidesteps it with pad = <|endoftext|> (id 0)."""
    from ludwig.utils.llm_utils import remove_left_padding
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    prompt = chat_prompt(tokenizer, "What is 2 + 2?", "Be brief.")
    ids = torch.tensor(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    padded = torch.cat([torch.zeros(5, dtype=torch.long), ids])
    assert tokenizer.pad_token_id == 0
    assert torch.equal(remove_left_padding(padded, tokenizer)[0], ids)  # our setting: prompt intact
    tokenizer.pad_token = tokenizer.eos_token  # the converted default
    cut = remove_left_padding(padded, tokenizer)[0]
    assert len(cut) < len(ids) / 2  # upstream bug: the system and user turns are gone
    assert "What is 2 + 2?" not in tokenizer.decode(cut)


def test_whole_chat_prompt_reaches_model_with_padding_masked(tiny_llama_dir, tmp_path):
    """Train the tiny model on chat-templated rows of different lengths; inspect every forward pass."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    users = [f"Please route ticket number {i}: " + "my card was charged twice " * (1 + i % 4) for i in range(8)]
    prompts = [chat_prompt(tokenizer, u, "You route tickets.") for u in users]
    frame = pd.DataFrame({"prompt": prompts, "target": ["billing"] * 8, "split": [0] * 8})
    n_prompt = max(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    config = compile_spec(tiny_spec(evaluate_during_training=False),
                          CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=n_prompt, max_target_tokens=4,
                                         has_validation=False))
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    from ludwig.callbacks import Callback

    class Capture(Callback):
        def on_trainer_train_setup(self, trainer, save_path, is_coordinator, **kwargs):
            def hook(module, args, kwargs):
                ids = kwargs.get("input_ids", args[0] if args else None)
                seen.append((ids.detach().clone(), kwargs["attention_mask"].detach().clone()))

            trainer.model.model.register_forward_pre_hook(hook, with_kwargs=True)

    ludwig_compat.train_model(ludwig_compat.check_config(config) and config, frame, tmp_path, seed=0, callbacks=[Capture()])
    assert seen, "no training forward pass was captured"
    texts = []
    for ids, mask in seen:
        assert ids.shape == mask.shape
        pad = ids == 0
        assert pad.any(), "rows of different lengths must be padded"
        assert torch.equal(mask.bool(), ~pad), "padding must be masked and every real token attended"
        for row in ids:
            texts.append(tokenizer.decode(row[row != 0]))
    for user in users[:4]:
        matching = [t for t in texts if user in t]
        assert matching, f"user turn missing from the model input: {user[:40]}"
        assert all("You route tickets." in t and t.rstrip().endswith("billing<|im_end|>") or "billing" in t for t in matching)


# --------------------------------------------------------------------------------------------
# Issue 15: soft prompts, a head on the LLM, preference tuning
# --------------------------------------------------------------------------------------------


def toolbox_spec(adapter: dict, **extra) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "name": "t", "base_model": "tiny-llama", "adapter": adapter,
        "tasks": [{"name": "a", "source": "x.jsonl", "kind": "classification", "labels": ["yes", "no"], "target": "{{ y }}"}],
        "training": {"epochs": 1, "batch_size": 4, "evaluate_during_training": False}, **extra,
    })


def test_upstream_prompt_learning_adapters_still_missing():
    """Workaround 2 (registering prompt_tuning and prefix_tuning) is needed while stock Ludwig lacks them."""
    assert ludwig_compat.prompt_learning_unregistered()


@pytest.mark.parametrize("adapter", [
    {"type": "prompt_tuning", "num_virtual_tokens": 4, "init": "text", "init_text": "Answer yes or no."},
    {"type": "prompt_tuning", "num_virtual_tokens": 4, "init": "random"},
    {"type": "prefix_tuning", "num_virtual_tokens": 4},
], ids=["prompt-text", "prompt-random", "prefix"])
def test_soft_prompt_configs_pass_ludwig_with_every_key_kept(tiny_llama_dir, adapter):
    config = compile_spec(toolbox_spec(adapter), CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=16,
                                                                max_target_tokens=3, has_validation=False))
    resolved = ludwig_compat.check_config(config)  # raises if Ludwig refused, dropped or changed a key
    assert resolved["adapter"]["type"] == adapter["type"] and resolved["adapter"]["num_virtual_tokens"] == 4


def test_upstream_llm_forward_keeps_virtual_token_logits():
    """Workaround 3 (the soft prompt's logits dropped, placed after the padding) is needed while this holds."""
    assert ludwig_compat.llm_forward_keeps_virtual_token_logits()


def test_soft_prompt_rows_train_as_they_compute_alone(tiny_llama_dir, tmp_path):
    """With workaround 3 a prompt-tuned LLM's batch (rows left-padded to different lengths) gives each row the
    log-likelihood it has alone: Ludwig's loss is the one inference sees. Stock Ludwig cannot train it at all."""
    from ludwig.callbacks import Callback

    config = compile_spec(toolbox_spec({"type": "prompt_tuning", "num_virtual_tokens": 4, "init": "random"}, training={
        "max_steps": 1, "batch_size": 4, "evaluate_during_training": False}),
        CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=24, max_target_tokens=3, has_validation=False))
    prompts = ["Is water wet?", "Is the sun cold at noon in the middle of summer?", "Yes?", "Do fish swim in the sea?"]
    frame = pd.DataFrame({"prompt": prompts, "target": ["yes", "no", "no", "yes"], "split": [0] * 4})
    checked = []

    class Compare(Callback):
        def on_trainer_train_setup(self, trainer, save_path, is_coordinator, **kwargs):
            step = trainer.train_step

            def compare(inputs, targets, *args, **kw):
                llm = trainer.model
                with torch.no_grad():
                    together = ludwig_compat.completion_logps(llm, llm, inputs, "target", targets["target"])[0]
                    alone = [float(ludwig_compat.completion_logps(llm, llm, {k: v[i:i + 1] for k, v in inputs.items()},
                                                                  "target", targets["target"][i:i + 1])[0][0])
                             for i in range(len(together))]
                checked.append((inputs["prompt"], together.tolist(), alone))
                return step(inputs, targets, *args, **kw)

            trainer.train_step = compare

    ludwig_compat.train_model(ludwig_compat.check_config(config) and config, frame, tmp_path, seed=0,
                              callbacks=[Compare()], save_model=False)
    [(ids, together, alone)] = checked
    assert (ids == 0).sum(-1).unique().numel() > 1, "rows must carry different amounts of padding"
    assert together == pytest.approx(alone, abs=1e-4)


def test_upstream_ecd_adapter_not_applied():
    """Workaround 4a (an LLM encoder's adapter silently ignored by ECD.prepare_for_training) is needed while this holds."""
    assert ludwig_compat.ecd_adapter_not_applied()


def test_upstream_llm_encoder_attends_padding():
    """Workaround 4b (the LLM encoder runs without an attention mask) is needed while this holds."""
    assert ludwig_compat.llm_encoder_attends_padding()


@pytest.mark.parametrize("adapter", [{"type": "lora", "r": 4}, {"type": "frozen"}], ids=["lora", "frozen"])
def test_exported_head_predicts_what_ludwig_predicts(tiny_llama_dir, tmp_path, adapter):
    """Train a head on the tiny LLM through Ludwig, export it, and score it with the evaluator (transformers + PEFT,
    no Ludwig): the same class probabilities as Ludwig's own predict. Only the adapter (or nothing) and the head train."""
    from ftpipe.evaluation.generation import ModelSpec, load_head, load_model

    spec = toolbox_spec(adapter, method="classification_head", evaluation={"few_shot": 1}, training={
        "max_steps": 2, "batch_size": 4, "learning_rate": 0.01, "evaluate_during_training": False})
    texts = ["the bread", "I saw a truck today", "look at that horse over there near the old house", "soup",
             "a bus", "my cat", "the rice", "a plane"]
    labels = ["yes", "no", "no", "yes", "no", "no", "yes", "no"]
    config = compile_spec(spec, CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=12, max_target_tokens=1,
                                               has_validation=False))
    model, _, _ = ludwig_compat.train_model(ludwig_compat.check_config(config) and config,
                                            pd.DataFrame({"prompt": texts, "target": labels, "split": [0] * 8}), tmp_path,
                                            seed=0, save_model=False)
    trainable = {n for n, p in model.model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "decoder_obj" in n for n in trainable) and any("decoder_obj" in n for n in trainable)
    assert any("lora_" in n for n in trainable) == (adapter["type"] == "lora")
    has_adapter = ludwig_compat.export_classification_head(model, tmp_path / "head", tmp_path / "adapter")
    assert has_adapter == (adapter["type"] == "lora")
    predicted = model.predict(pd.DataFrame({"prompt": texts}))[0]
    head = load_head(tmp_path / "head")
    ludwig_probs = [[float(row[f"target_probabilities_{label}"]) for label in head.labels] for _, row in predicted.iterrows()]
    evaluator = load_model(ModelSpec(base_path=str(tiny_llama_dir), device="cpu",
                                     adapter_path=str(tmp_path / "adapter") if has_adapter else None))
    ours = evaluator.classify(head, texts, batch_size=3)
    for theirs, mine in zip(ludwig_probs, ours):
        assert mine == pytest.approx(theirs, abs=1e-4)


def test_upstream_stock_dpo_is_reference_free():
    """Workaround 5 (ftpipe's own DPO/ORPO step; the stock trainer types refused) is needed while this holds."""
    assert ludwig_compat.stock_dpo_is_reference_free()


@pytest.mark.parametrize("trainer_type", ["dpo", "orpo"])
def test_check_config_refuses_stock_preference_trainers(tiny_llama_dir, trainer_type):
    config = compile_spec(tiny_spec(), CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=16, max_target_tokens=3))
    config["trainer"]["type"] = trainer_type
    config.pop("adapter")
    with pytest.raises(CompileError, match=f"trainer type {trainer_type} .* falls back to cross-entropy"):
        ludwig_compat.check_config(config)


# --------------------------------------------------------------------------------------------
# Issue 16: speed-ups around Ludwig's training step
# --------------------------------------------------------------------------------------------


STOCK = ludwig_compat.StepOptions(lean=False, group_by_length=False)  # Ludwig as it comes


def route_frame(n: int = 8, validation: int = 0) -> pd.DataFrame:
    """Rows of clearly different lengths (so batches are padded), `validation` of them in split 1."""
    prompts = [f"Route ticket {i}: " + "my card was charged twice " * (1 + (i * 5) % 7) for i in range(n)]
    return pd.DataFrame({"prompt": prompts, "target": ["billing" if i % 2 else "card issue" for i in range(n)],
                         "split": [0] * (n - validation) + [1] * validation})


def captured_run(tiny_llama_dir, tmp_path, frame, steps: int = 2, *, real_steps: int = 0, config_edit=None,
                 options=STOCK, **training):
    """Ludwig's own training loop on the tiny model; each train_step records its (inputs, targets) and runs only
    for the first `real_steps` steps. Returns (trainer, batches, epochs: the epoch of each batch)."""
    from ludwig.callbacks import Callback

    config = compile_spec(tiny_spec(max_steps=steps, evaluate_during_training=False, **training),
                          CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=64, max_target_tokens=4,
                                         has_validation=False))
    if config_edit:
        config_edit(config)
    state: dict = {"batches": [], "epochs": []}

    class Capture(Callback):
        def on_trainer_train_setup(self, trainer, save_path, is_coordinator, **kwargs):
            state["trainer"] = trainer
            step = trainer.train_step

            def record(inputs, targets, *args, **kw):
                state["batches"].append(({k: v.clone() for k, v in inputs.items()}, {k: v.clone() for k, v in targets.items()}))
                if len(state["batches"]) <= real_steps:
                    return step(inputs, targets, *args, **kw)
                return torch.tensor(0.0), {}, 0

            trainer.train_step = record

        def on_batch_start(self, trainer, progress_tracker, save_path):
            state["epochs"].append(progress_tracker.epoch)

    ludwig_compat.train_model(ludwig_compat.check_config(config) and config, frame, tmp_path, seed=0,
                              callbacks=[Capture()], save_model=False, options=options)
    return state["trainer"], state["batches"], state["epochs"]


def test_upstream_training_step_does_unread_work():
    """Speed-up 1 (lean steps, shifted labels) patches behaviour that is there while these hold."""
    assert ludwig_compat.training_step_updates_metrics()
    assert ludwig_compat.sequence_predictions_take_softmax()
    assert ludwig_compat.loss_slices_logits()


def test_lean_step_has_the_stock_loss_and_gradients(tiny_llama_dir, tmp_path, monkeypatch):
    """Same weights, same batch, same dropout draws: the lean step (shifted-label loss, no probabilities)
    gives stock Ludwig's loss and gradients; evaluation forwards keep their probabilities."""
    from ludwig.modules.loss_modules import NextTokenSoftmaxCrossEntropyLoss as Loss

    trainer, batches, _ = captured_run(tiny_llama_dir, tmp_path, route_frame(), steps=1)  # stock trainer
    inputs, targets = batches[0]
    trainer.model.train()
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]

    def step():
        torch.manual_seed(0)
        trainer.optimizer.zero_grad()
        outputs, loss, _ = trainer._forward_pass({k: v.clone() for k, v in inputs.items()},
                                                 {k: v.clone() for k, v in targets.items()}, True)
        loss.backward()
        return outputs, float(loss.detach()), [p.grad.clone() for p in trainable]

    with monkeypatch.context() as patch:
        patch.setattr(Loss, "forward", Loss.forward._ftpipe_original)  # stock loss: slices the logits
        stock_outputs, stock_loss, stock_grads = step()
    ludwig_compat.make_lean(trainer)
    lean_outputs, lean_loss, lean_grads = step()
    assert lean_loss == pytest.approx(stock_loss, abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-7, rtol=1e-5) for a, b in zip(stock_grads, lean_grads))
    print(f"loss stock {stock_loss:.10f} lean {lean_loss:.10f}")
    assert "probabilities" in stock_outputs and "probabilities" not in lean_outputs
    # speed-up 1d: logits only for the positions that hold the targets (a 4-token target in a longer row)
    kept, width = lean_outputs["logits"].shape[1], stock_outputs["logits"].shape[1]
    assert kept == ludwig_compat.target_suffix_length(trainer.model, targets) < width
    assert torch.equal(stock_outputs["logits"][:, -kept:], lean_outputs["logits"])
    assert torch.equal(stock_outputs["predictions"][:, -kept:], lean_outputs["predictions"][:, -kept:])
    trainer.model.eval()
    with torch.no_grad():
        assert "probabilities" in trainer.model((dict(inputs), dict(targets)))


def test_lean_validation_has_the_stock_validation_loss(tiny_llama_dir, tmp_path):
    """Speed-up 1e: Ludwig's checkpoint validation pass, made lean, scores the same loss (feature and combined)
    from suffix logits without probabilities; evaluation outside that pass keeps its probabilities."""
    trainer, batches, _ = captured_run(tiny_llama_dir, tmp_path, route_frame(), steps=1)  # stock trainer
    model = trainer.model
    seen = {}

    def validation_pass(*args, **kwargs):  # what Ludwig's predictor does per batch, through the model's own calls
        model.eval()
        model.reset_metrics()
        with torch.no_grad():
            for inputs, targets in batches:
                outputs = model(({k: v.clone() for k, v in inputs.items()}, {k: v.clone() for k, v in targets.items()}))
                seen["logits"], seen["keys"] = outputs["logits"].shape, set(outputs)
                model.update_metrics_finetune_llm({k: v.clone() for k, v in targets.items()}, model.outputs_to_predictions(outputs))
        metrics = model.get_metrics()
        return metrics["target"]["loss"], metrics["combined"]["loss"]

    trainer.evaluation = validation_pass
    stock = trainer.evaluation()
    stock_width, stock_keys = seen["logits"][1], seen["keys"]
    ludwig_compat.make_lean(trainer)
    lean = trainer.evaluation()
    assert lean == pytest.approx(stock, abs=1e-6)
    assert seen["logits"][1] < stock_width and "probabilities" in stock_keys and "probabilities" not in seen["keys"]
    inputs, targets = batches[0]
    with torch.no_grad():
        assert "probabilities" in model((dict(inputs), dict(targets)))  # outside the validation pass: stock
    print(f"validation loss stock {stock} lean {lean}")


def test_upstream_merged_ids_put_every_target_at_the_end():
    """Speed-up 1d keeps only the last positions' logits: right while Ludwig left-pads prompt + target."""
    from ludwig.utils.llm_utils import generate_merged_ids

    class Tokenizer:
        pad_token_id, eos_token_id, bos_token_id = 0, 9, 1

    ids, mask = generate_merged_ids(torch.tensor([[0, 5, 6], [4, 5, 6]]), torch.tensor([[0, 7], [0, 8]]), Tokenizer())
    assert ids.tolist() == [[0, 5, 6, 7, 9], [4, 5, 6, 8, 9]]


def test_trimmed_logits_refuse_a_target_before_them():
    """The shifted-label loss on suffix logits checks that no labelled position was cut off."""
    from ludwig.modules.loss_modules import NextTokenSoftmaxCrossEntropyLoss as Loss
    from ludwig.schema.features.loss.loss import NextTokenSoftmaxCrossEntropyLossConfig

    ludwig_compat.apply_patches()
    loss = Loss(NextTokenSoftmaxCrossEntropyLossConfig())
    target = torch.tensor([[-100, -100, 3, 4, 2, -100]])
    logits = torch.randn(1, 6, 10)
    assert float(loss(logits[:, -5:], target)) == pytest.approx(float(loss(logits, target)))
    with pytest.raises(TrainError, match="last 4 positions"):
        loss(logits[:, -4:], target)


def test_lean_training_keeps_the_loss_log_and_the_training_curve(tiny_llama_dir, tmp_path):
    """With the lean step (installed by the progress callback) every step's loss is still reported, and
    training_statistics.json still has the training loss curve (the mean of the steps' losses)."""
    import math

    logged: list[dict] = []
    config = compile_spec(tiny_spec(max_steps=3, batch_size=2),
                          CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=64, max_target_tokens=4))
    _, stats, _ = ludwig_compat.train_model(ludwig_compat.check_config(config) and config, route_frame(8, validation=2),
                                            tmp_path, seed=0, callbacks=[ludwig_compat.make_progress_callback(logged.append)],
                                            save_model=False)
    losses = [row["loss"] for row in logged]
    assert [row["step"] for row in logged] == [1, 2, 3] and all(math.isfinite(x) for x in losses)
    curve = stats["training"]["combined"]["loss"]
    assert curve and curve[-1] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert math.isfinite(stats["validation"]["combined"]["loss"][-1])


def test_upstream_cannot_resume_a_finished_training():
    """While this holds, a run killed after its training ended takes the saved model (finished_training) instead."""
    assert ludwig_compat.resuming_a_finished_training_fails()


def test_a_finished_training_is_recorded_with_its_statistics(tiny_llama_dir, tmp_path):
    config = compile_spec(tiny_spec(max_steps=2, batch_size=2),
                          CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=64, max_target_tokens=4))
    assert ludwig_compat.finished_training(tmp_path) is None
    _, stats, saved = ludwig_compat.train_model(config, route_frame(8, validation=2), tmp_path, seed=0)
    finished = ludwig_compat.finished_training(tmp_path)
    assert finished == (stats, saved) and ludwig_compat.adapter_folder(saved) is not None


def test_upstream_batcher_has_no_length_grouping():
    """Speed-up 2 (length-grouped batches) replaces Ludwig's sampler while this holds."""
    assert ludwig_compat.batcher_has_no_length_grouping()


def real_token_share(batches) -> float:
    """Real tokens / tokens the model runs, with each batch padded to its longest prompt + target + EOS."""
    real = run = 0
    for inputs, targets in batches:
        lengths = (inputs["prompt"] != 0).sum(-1) + (targets["target"] != 0).sum(-1) + 1
        real, run = real + int(lengths.sum()), run + int(lengths.max()) * len(lengths)
    return real / run


def epoch_rows(batches, epochs, epoch: int) -> list[bytes]:
    return [row[row != 0].numpy().tobytes() for (inputs, _), e in zip(batches, epochs) if e == epoch
            for row in inputs["prompt"]]


@pytest.mark.parametrize("group_batches", [None, 3], ids=["whole-epoch", "groups-of-3"])
def test_length_grouped_batches_inside_ludwig(tiny_llama_dir, tmp_path, group_batches):
    """Ludwig's own loop, 2 epochs of 24 rows: grouped batches pad less than Ludwig's, hold every row
    exactly once per epoch and are drawn afresh each epoch."""
    frame = route_frame(24)
    run = dict(steps=12, batch_size=4, epochs=2)
    _, stock, stock_epochs = captured_run(tiny_llama_dir, tmp_path / "stock", frame, **run)
    _, grouped, epochs = captured_run(tiny_llama_dir, tmp_path / "grouped", frame, **run, options=ludwig_compat.StepOptions(
        lean=False, group_by_length=True, group_batches=group_batches))
    assert len(grouped) == len(stock) == 12 and epochs == stock_epochs == [0] * 6 + [1] * 6
    print(f"real-token share: stock {real_token_share(stock):.3f}, grouped {real_token_share(grouped):.3f}")
    assert real_token_share(grouped) > real_token_share(stock) + 0.05
    every_row = sorted(epoch_rows(stock, stock_epochs, 0))
    assert len(every_row) == len(set(every_row)) == 24
    for epoch in (0, 1):
        assert sorted(epoch_rows(grouped, epochs, epoch)) == every_row  # each row exactly once
    assert epoch_rows(grouped, epochs, 0) != epoch_rows(grouped, epochs, 1)  # re-drawn every epoch


def test_upstream_finetune_trainer_cannot_pack():
    """Speed-up 3 (packing fields registered, ftpipe's packed forward) is needed while these hold."""
    assert ludwig_compat.finetune_trainer_drops_packing()
    assert ludwig_compat.llm_packing_passes_3d_mask()


def test_packing_config_kept_by_ludwig(tiny_llama_dir):
    config = compile_spec(tiny_spec(packing=True, packing_max_tokens=512),
                          CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=32, max_target_tokens=4))
    resolved = ludwig_compat.check_config(config)  # raises if Ludwig dropped a key
    assert resolved["trainer"]["packing"] is True and resolved["trainer"]["packing_max_tokens"] == 512


def test_packed_step_has_the_unpacked_loss_and_rows_stay_apart(tiny_llama_dir, tmp_path):
    """8 rows in one batch (one real packed training step first): packed into fewer sequences, the loss is the
    unpacked (padded) batch's, and changing row 0 changes no logit outside row 0's own block."""
    def no_dropout(config):
        config["adapter"]["dropout"] = 0.0

    trainer, batches, _ = captured_run(tiny_llama_dir, tmp_path, route_frame(8), steps=1, real_steps=1, batch_size=8,
                                       packing=True, packing_max_tokens=1024, config_edit=no_dropout)
    inputs, targets = batches[0]
    llm, settings = trainer.model, trainer.model.config_obj.trainer
    assert settings.packing and settings.packing_max_tokens == 1024
    llm.train()

    def loss(packing: bool) -> float:
        settings.packing = packing
        with torch.no_grad():
            return float(trainer._forward_pass({k: v.clone() for k, v in inputs.items()},
                                               {k: v.clone() for k, v in targets.items()}, True)[1])

    packed = loss(True)
    assert len(llm.model_inputs) < len(inputs["prompt"]), "rows must share packs"
    unpacked = loss(False)
    assert len(llm.model_inputs) == len(inputs["prompt"])
    print(f"loss packed {packed:.8f} unpacked {unpacked:.8f} |diff| {abs(packed - unpacked):.2e}")
    assert packed == pytest.approx(unpacked, abs=1e-3)

    settings.packing = True
    ids, positions, _ = ludwig_compat.pack_rows(inputs["prompt"], targets["target"], llm.tokenizer.eos_token_id, 1024, 8)
    changed = {k: v.clone() for k, v in inputs.items()}
    first = int((changed["prompt"][0] != 0).nonzero()[0])
    changed["prompt"][0, first + 3] = 1000 if changed["prompt"][0, first + 3] != 1000 else 1001  # same length
    with torch.no_grad():
        before = llm((dict(inputs), {k: v.clone() for k, v in targets.items()}))["logits"]
        after = llm((changed, {k: v.clone() for k, v in targets.items()}))["logits"]
    moved = (before - after).abs().amax(-1) > 0  # [packs, W]
    new_ids = ludwig_compat.pack_rows(changed["prompt"], targets["target"], llm.tokenizer.eos_token_id, 1024, 8)[0]
    pack, at = (new_ids != ids).nonzero()[0].tolist()
    start = at - int(positions[pack, at])  # row 0's block: from its position 0 to the next restart
    end = start + 1 + next((j for j, p in enumerate(positions[pack, start + 1:].tolist()) if p == 0), ids.shape[1])
    inside = torch.zeros_like(moved)
    inside[pack, start:end] = True
    assert moved[inside].any() and not moved[~inside].any(), "a row saw another row's tokens"
    # Why the packed forward passes use_cache=False: with a cache (the model config's default, created even in
    # training) transformers skips the packed-sequence detection and the rows attend across each other.
    with torch.no_grad():
        cached = llm.model(input_ids=ids, position_ids=positions, use_cache=True).logits
    assert not torch.allclose(cached, before, atol=1e-3), "transformers now detects packing with a cache too"


def test_upstream_ludwig_has_no_bf16_training():
    """Speed-up 4 (ftpipe's bf16 autocast) is needed while this holds."""
    assert ludwig_compat.ludwig_has_no_bf16_training()


@pytest.mark.skipif(bool(ludwig_compat.bf16_unsupported("cpu")), reason="this CPU has no native bf16")
def test_bf16_autocast_step_on_cpu(tiny_llama_dir, tmp_path):
    """A real bf16 training step runs; the forward runs in bf16 and its loss is the fp32 loss within bf16 rounding."""
    def no_dropout(config):
        config["adapter"]["dropout"] = 0.0

    trainer, batches, _ = captured_run(tiny_llama_dir, tmp_path, route_frame(8), steps=1, real_steps=1, config_edit=no_dropout,
                                       options=ludwig_compat.StepOptions(lean=False, group_by_length=False, bf16=True))
    inputs, targets = batches[0]
    dtypes = []
    trainer.model.model.register_forward_hook(lambda module, args, out: dtypes.append(out["logits"].dtype))
    trainer.model.train()

    def loss(forward_pass) -> float:
        with torch.no_grad():
            return float(forward_pass({k: v.clone() for k, v in inputs.items()},
                                      {k: v.clone() for k, v in targets.items()}, True)[1])

    bf16, fp32 = loss(trainer._forward_pass), loss(type(trainer)._forward_pass.__get__(trainer))
    print(f"loss bf16 {bf16:.6f} fp32 {fp32:.6f} rel {abs(bf16 - fp32) / fp32:.2e}; logits {dtypes}")
    assert dtypes == [torch.bfloat16, torch.float32]
    assert bf16 == pytest.approx(fp32, rel=1e-2)


@pytest.mark.skipif(bool(ludwig_compat.bf16_unsupported("cpu")), reason="this CPU has no native bf16")
def test_bf16_casts_frozen_weights_once_with_the_same_loss_and_gradients(tiny_llama_dir, tmp_path):
    """The bf16 forward swaps in bf16 copies of the frozen Linear weights (cast once) instead of letting
    autocast re-cast them each step: the same loss and LoRA gradients bit for bit, fp32 weights back after."""
    def no_dropout(config):
        config["adapter"]["dropout"] = 0.0

    trainer, batches, _ = captured_run(tiny_llama_dir, tmp_path, route_frame(8), steps=1, real_steps=1, config_edit=no_dropout,
                                       options=ludwig_compat.StepOptions(lean=False, group_by_length=False, bf16=True))
    inputs, targets = batches[0]
    model = trainer.model
    model.train()
    weights_before = {name: p for name, p in model.named_parameters()}
    lora = {name: p for name, p in weights_before.items() if p.requires_grad}
    assert lora and all("lora" in name for name in lora)

    def loss_and_grads(forward_pass) -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = forward_pass({k: v.clone() for k, v in inputs.items()}, {k: v.clone() for k, v in targets.items()}, True)[1]
        loss.backward()
        return float(loss), {name: p.grad.clone() for name, p in lora.items()}

    def recast_every_step(*args):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return type(trainer)._forward_pass(trainer, *args)

    cached_loss, cached_grads = loss_and_grads(trainer._forward_pass)
    frozen = trainer._ftpipe_frozen_bf16
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert frozen.count == sum(not m.weight.requires_grad for m in linears) > 0
    recast_loss, recast_grads = loss_and_grads(recast_every_step)
    assert cached_loss == recast_loss
    for name in lora:
        assert torch.equal(cached_grads[name], recast_grads[name]), name
    assert all(p is weights_before[name] for name, p in model.named_parameters())  # the fp32 objects, back in place
    assert all(m.weight.dtype == torch.float32 for m in linears)
    copies = {id(bf16) for _, _, bf16 in frozen._slots}
    cached_loss_again, _ = loss_and_grads(trainer._forward_pass)
    assert cached_loss_again == cached_loss and {id(bf16) for _, _, bf16 in frozen._slots} == copies  # not re-cast


def test_bf16_copies_scan_a_fully_trained_model_once_and_rebuild_when_a_weight_is_replaced():
    """Full fine-tuning has no frozen fp32 weights: no copies, and the modules are not rescanned every step.
    A frozen weight replaced since (a reloaded checkpoint) gets a fresh copy."""
    trained = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    copies = ludwig_compat.FrozenBf16Weights(trained)
    with copies.swapped_in():
        pass
    slots = copies._slots
    with copies.swapped_in():
        assert trained[0].weight.dtype == torch.float32
    assert copies.count == 0 and copies._slots is slots  # the empty list was kept, not rebuilt

    frozen = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)).requires_grad_(False)
    copies = ludwig_compat.FrozenBf16Weights(frozen)
    with copies.swapped_in():
        assert frozen[0].weight.dtype == torch.bfloat16
    first = copies._slots
    frozen[1].weight = torch.nn.Parameter(torch.ones(2, 4), requires_grad=False)
    with copies.swapped_in():
        assert torch.equal(frozen[1].weight, torch.ones(2, 4, dtype=torch.bfloat16))
    assert copies.count == 2 and copies._slots is not first
    assert frozen[1].weight.dtype == torch.float32


def test_bf16_refused_where_it_would_be_emulated(monkeypatch):
    monkeypatch.setattr(ludwig_compat, "bf16_unsupported", lambda device: "no native bf16")

    class Trainer:
        device = "cpu"

    with pytest.raises(ludwig_compat.TrainError, match="precision bf16: no native bf16"):
        ludwig_compat.enable_bf16_autocast(Trainer())
