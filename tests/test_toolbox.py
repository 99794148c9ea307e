"""Issue 15, end to end on the tiny model: soft prompts, a classification head on the LLM, preference tuning.

Each method trains a few steps through Ludwig from its example spec under pipelines/, and is judged by
the same base-versus-tuned evaluator as every other run: learning on the target task, forgetting on
the held-out probes. Quality is meaningless on a random tiny model; these tests pin the plumbing and
the numbers that must hold whatever the weights are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ftpipe.errors import DataError
from ftpipe.lifecycle import run_pipeline

ROOT = Path(__file__).parent.parent
PIPELINES = ROOT / "pipelines"
QUICK = ["base_model=tiny-llama", "training.max_steps=3", "training.evaluate_during_training=false",
         "tasks.0.max_train_rows=24", "evaluation.max_items=6", "evaluation.bootstrap_resamples=200"]


def report_of(run_dir: Path) -> dict:
    for name in ("report.json", "report.md", "metrics.json", "parameters.json"):
        assert (run_dir / name).exists(), name
    report = json.loads((run_dir / "report.json").read_text())
    for task in report["tasks"]:
        assert task["ci_low"] <= task["item_delta"] <= task["ci_high"]
    return report


@pytest.fixture(scope="module")
def prompt_tuned_run(tiny_llama_dir, tmp_path_factory) -> Path:
    """One trained and evaluated prompt-tuning run of the example spec on the tiny model (its own history database)."""
    root = tmp_path_factory.mktemp("prompt_tuning")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTPIPE_HISTORY_DB", str(root / "history.sqlite"))
        return run_pipeline(PIPELINES / "prompt_tuning.yaml", QUICK, root).run_dir


def test_prompt_tuning_end_to_end(prompt_tuned_run):
    run = prompt_tuned_run
    report = report_of(run)
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 16
    params = report["trainable_parameters"]
    assert params["trainable"] == 16 * 64  # 16 virtual tokens x hidden size 64: nothing else trains
    assert params["lora_reference"]["trainable"] == 3584 and params["lora_reference"]["target_modules"] == ["q_proj", "v_proj"]
    assert {t["task"] for t in report["tasks"]} == {"ticket_routing", "capitals", "word_opposites", "everyday_mc"}
    text = (run / "report.md").read_text()
    assert "Trainable parameters: 1,024 of" in text and "default LoRA (r 8 on q_proj, v_proj) trains 3,584" in text


@pytest.mark.parametrize("adapter, virtual", [(None, 16), ("{type: prefix_tuning, num_virtual_tokens: 8}", 0)],
                         ids=["prompt_tuning", "prefix_tuning"])
def test_soft_prompt_evaluation_is_independent_of_padding(request, tmp_path, tiny_llama_dir, adapter, virtual):
    """Batched generation, log-likelihoods and text NLL of a soft-prompted model equal one prompt at a time, and
    PEFT's own unpadded single-row generation (PEFT's batched prompt tuning puts the soft prompt before the padding)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ftpipe.evaluation.generation import ModelSpec, load_model

    if adapter is None:  # the example's prompt-tuning run
        run = request.getfixturevalue("prompt_tuned_run")
    else:
        run = run_pipeline(PIPELINES / "prompt_tuning.yaml", QUICK + [f"adapter={adapter}", "training.learning_rate=0.3"],
                           tmp_path, evaluate=False).run_dir
    model = load_model(ModelSpec(base_path=str(tiny_llama_dir), adapter_path=str(run / "adapter"), device="cpu"))
    assert model.soft_prompt_tokens == virtual  # prefix tuning needs no layout of ours: PEFT's prefix has no position
    prompts = ["Route this ticket: my card was charged twice.", "Hi", "Where is my parcel? It has been two weeks now.", "Reset"]
    batched = model.generate(prompts, max_new_tokens=5, batch_size=4)
    assert batched == [model.generate([p], max_new_tokens=5, batch_size=1)[0] for p in prompts]
    lls = model.loglikelihood(prompts, [" refund"] * 4, batch_size=4)
    for p, (ll, n) in zip(prompts, lls):
        assert ll == pytest.approx(model.loglikelihood([p], [" refund"], batch_size=1)[0][0], abs=1e-4)
    assert model.text_nll(prompts, batch_size=4)[0] == pytest.approx(sum(model.text_nll([p])[0] for p in prompts), abs=1e-3)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)), str(run / "adapter")).eval()
    ids = model.tokenizer(prompts[0], add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        own = peft.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                            pad_token_id=model.pad_id)[0, ids.shape[1]:].tolist()
    assert model.tokenizer.decode(model.new_tokens(own), skip_special_tokens=True).strip() == batched[0]


@pytest.mark.parametrize("body", ["lora", "frozen"])
def test_classification_head_end_to_end(tmp_path, tiny_llama_dir, body, caplog):
    overrides = QUICK + ["evaluation.few_shot=2", "training.evaluate_during_training=true"] + (
        ["adapter={type: frozen}"] if body == "frozen" else [])
    run = run_pipeline(PIPELINES / "classification_head.yaml", overrides, tmp_path).run_dir
    # the lean step is for the LLM's full-vocabulary metrics; on a head it left roc_auc empty (a logged traceback)
    assert "Caught exception computing metric" not in caplog.text
    report = report_of(run)
    head = json.loads((run / "head" / "head.json").read_text())
    assert head["body"] == body and head["pooling"] == "last"
    assert set(head["labels"]) <= {"billing", "shipping", "technical", "account", "refund"}
    [target] = [t for t in report["tasks"] if t["role"] == "target"]
    assert target["task"] == "ticket_routing" and target["metric"] == "accuracy" and target["n"] == 6
    # judged against the base model's zero-shot (the base column) and 2-shot generation, both paired
    assert "few_shot" in target and target["vs_few_shot"]["ci_low"] <= target["vs_few_shot"]["item_delta"]
    predictions = [json.loads(line) for line in (run / "predictions" / "ticket_routing.jsonl").read_text().splitlines()]
    assert all(p["tuned_output"].split(" (p=")[0] in head["labels"] for p in predictions)
    params = report["trainable_parameters"]
    n_head = 64 * len(head["labels"]) + len(head["labels"])
    text = (run / "report.md").read_text()
    if body == "lora":
        assert params["trainable"] == 3584 + n_head  # LoRA r 8 on q_proj, v_proj + the head: no other LLM weight
        assert {t["task"] for t in report["tasks"] if t["role"] == "held_out"} == {"capitals", "word_opposites", "everyday_mc"}
        assert (run / "adapter" / "adapter_config.json").exists()
        assert "not_scored" not in report
    else:
        assert params["trainable"] == n_head
        assert [t["role"] for t in report["tasks"]] == ["target"] and not (run / "adapter").exists()
        assert report["not_scored"]["tasks"] == ["capitals", "word_opposites", "everyday_mc"]
        assert "held-out tasks cannot be forgotten" in text
    assert "2-shot" in text


def test_preference_dpo_end_to_end(tmp_path, tiny_llama_dir):
    run = run_pipeline(PIPELINES / "preference_dpo.yaml", QUICK, tmp_path).run_dir
    report = report_of(run)
    losses = [json.loads(line)["loss"] for line in (run / "training" / "loss.jsonl").read_text().splitlines()]
    # Step 0: LoRA's B matrices start at zero, so policy == reference and the DPO loss is exactly log 2
    # (Ludwig's stock DPO trainer would have trained cross-entropy here: about 10 on this model).
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5) and len(losses) == 3
    by_task = {t["task"]: t for t in report["tasks"]}
    pref = by_task["concise_preference"]
    assert pref["role"] == "target" and pref["metric"] == "preference_accuracy" and "mcnemar" in pref
    assert pref["margin"]["ci_low"] <= pref["margin"]["delta"] <= pref["margin"]["ci_high"]
    assert set(pref["aggregate"]["tuned"]) == {"accuracy", "accuracy_norm", "mean_margin", "mean_margin_norm"}
    assert {"capitals", "word_opposites", "everyday_mc"} <= set(by_task)
    assert report["preference"] == {"loss": "dpo", "beta": 0.1}
    assert "mean margin" in (run / "report.md").read_text()


def test_preference_rows_missing_a_reply_fail_loudly(tmp_path, tiny_llama_dir):
    from ftpipe.data import prepare_for_base_model, validate_spec
    from ftpipe.errors import SpecError

    rows = [{"prompt": f"What is {i} + 1?", "chosen": f"{i + 1}.", "rejected": f"Maybe {i + 2}?"} for i in range(12)]
    rows[5].pop("rejected")
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""name: p
base_model: tiny-llama
method: preference
tasks:
  - name: pairs
    source: {data}
    kind: preference
    prompt: "{{{{ prompt }}}}"
    chosen: "{{{{ chosen }}}}"
    rejected: "{{{{ rejected }}}}"
""")
    with pytest.raises(DataError, match=r"pairs.jsonl line 6: field 'rejected' is missing or empty \(task pairs\)"):
        prepare_for_base_model(validate_spec(spec), str(tiny_llama_dir))
    spec.write_text(spec.read_text().replace("{{ rejected }}", "{{ worse }}"))
    with pytest.raises(SpecError, match="template names missing field 'worse'"):
        validate_spec(spec)


@pytest.mark.parametrize("loss, beta", [("dpo", 0.1), ("orpo", 0.2)])
def test_preference_loss_matches_hand_computation(tmp_path, tiny_llama_dir, loss, beta):
    """The loss ftpipe's step computes inside Ludwig (a padded batch, Ludwig's own forward and label alignment)
    equals an independent computation: plain transformers + PEFT from the saved adapter, one unpadded row at
    a time, the reference under `disable_adapter()`."""
    import pandas as pd
    import torch
    import torch.nn.functional as F
    from ludwig.callbacks import Callback
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftpipe.data.rendering import preference_separator
    from ftpipe.spec import PipelineSpec
    from ftpipe.training import CompileContext, compile_spec, ludwig_compat

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    sep = preference_separator(tok)
    sep_id = tok.convert_tokens_to_ids(sep)
    pairs = [("Q: 2+2?\nA:", " 4", " 5"), ("Q: capital of France?\nA:", " Paris", " London is the capital"),
             ("Q: colour of the sky on a clear day?\nA:", " blue", " green"), ("Q: opposite of hot?\nA:", " cold", " warm and sunny")]
    frame = pd.DataFrame({"prompt": [p for p, _, _ in pairs], "target": [c + sep + r for _, c, r in pairs], "split": [0] * 4})
    spec = PipelineSpec.model_validate({
        "name": "p", "base_model": "tiny-llama", "method": "preference", "preference": {"loss": loss, "beta": beta},
        "adapter": {"type": "lora", "dropout": 0.0},
        "tasks": [{"name": "a", "source": "x.jsonl", "kind": "preference", "prompt": "{{ p }}", "chosen": "{{ c }}",
                   "rejected": "{{ r }}"}],
        "training": {"max_steps": 3, "batch_size": 4, "learning_rate": 0.02, "lr_schedule": "constant"}})
    encode = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    config = compile_spec(spec, CompileContext(
        base_model=str(tiny_llama_dir), max_prompt_tokens=max(len(encode(p)) for p in frame.prompt),
        max_target_tokens=max(len(encode(t)) for t in frame.target) + 1, has_validation=False))
    ludwig_compat.check_config(config)
    record, batches = [], []

    class Grab(Callback):  # after the preference callback: sees its step
        def on_trainer_train_setup(self, trainer, save_path, is_coordinator, **kwargs):
            step = trainer.train_step

            def grab(inputs, targets, *args, **kw):
                batches.append(({k: v.clone() for k, v in inputs.items()}, {k: v.clone() for k, v in targets.items()}))
                return step(inputs, targets, *args, **kw)

            trainer.train_step = grab

    model, _, saved = ludwig_compat.train_model(
        config, frame, tmp_path, seed=0, callbacks=[ludwig_compat.make_preference_callback(loss, beta, sep_id, record), Grab()])
    assert len(record) == 3
    if loss == "dpo":
        assert record[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # LoRA B = 0: policy == reference
    llm = model.model
    llm.eval()
    inputs, targets = batches[0]
    assert (inputs["prompt"] == 0).any(), "the batch must be padded for the comparison to mean something"
    with torch.no_grad():
        ludwig_side, parts, _ = ludwig_compat.preference_loss(llm, llm, inputs, targets, loss=loss, beta=beta, sep_id=sep_id)

    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)),
                                     str(saved / "model_weights")).eval()

    def reply_logp(prompt: str, reply: str) -> tuple[float, int]:
        ids = encode(prompt) + encode(reply) + [tok.eos_token_id]
        n = len(encode(reply)) + 1
        logp = torch.log_softmax(peft(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        return sum(float(logp[t - 1, ids[t]]) for t in range(len(ids) - n, len(ids))), n

    rows = []
    with torch.no_grad():
        for p, c, r in pairs:
            (lc, nc), (lr, nr) = reply_logp(p, c), reply_logp(p, r)
            with peft.disable_adapter():
                rc, rr = reply_logp(p, c)[0], reply_logp(p, r)[0]
            rows.append((lc, nc, lr, nr, rc, rr))
    log_sigmoid = lambda x: float(F.logsigmoid(torch.tensor(x, dtype=torch.float64)))  # noqa: E731
    if loss == "dpo":
        hand = sum(-log_sigmoid(beta * ((lc - rc) - (lr - rr))) for lc, nc, lr, nr, rc, rr in rows) / len(rows)
        assert sorted(parts["ref_chosen"].tolist()) == pytest.approx(sorted(row[4] for row in rows), abs=1e-4)
    else:
        log_odds = lambda m: m - math.log1p(-math.exp(m))  # noqa: E731
        nll = -sum(row[0] for row in rows) / sum(row[1] for row in rows)
        hand = nll - beta * sum(log_sigmoid(log_odds(lc / nc) - log_odds(lr / nr)) for lc, nc, lr, nr, _, _ in rows) / len(rows)
    assert sorted(parts["logp_chosen"].tolist()) == pytest.approx(sorted(row[0] for row in rows), abs=1e-4)  # batch order
    assert float(ludwig_side) == pytest.approx(hand, abs=1e-5)
    assert record[-1]["loss"] != record[0]["loss"]  # it trained


HEAD_TASK = {"name": "t", "source": "x.jsonl", "kind": "classification", "labels": ["a", "b"], "target": "{{ y }}"}
PAIR_TASK = {"name": "p", "source": "x.jsonl", "kind": "preference", "prompt": "{{ q }}", "chosen": "{{ c }}", "rejected": "{{ r }}"}


@pytest.mark.parametrize("spec, message", [
    ({"method": "classification_head", "tasks": [HEAD_TASK]}, "set evaluation.few_shot"),
    ({"method": "classification_head", "tasks": [HEAD_TASK], "adapter": {"type": "full"}, "evaluation": {"few_shot": 2}},
     "adapter lora or keeps it frozen"),
    ({"method": "classification_head", "tasks": [{**HEAD_TASK, "kind": "exact_match"}], "evaluation": {"few_shot": 2}},
     "one task of kind classification"),
    ({"tasks": [HEAD_TASK], "adapter": {"type": "frozen"}}, "needs method classification_head"),
    ({"method": "preference", "tasks": [PAIR_TASK], "adapter": {"type": "full"}}, "DPO uses the base model with its adapter"),
    ({"method": "preference", "tasks": [HEAD_TASK]}, "method preference trains tasks of kind preference"),
    ({"tasks": [PAIR_TASK]}, "preference tasks train only with method preference"),
    ({"tasks": [HEAD_TASK], "preference": {"loss": "orpo"}}, "applies to method preference only"),
    ({"method": "preference", "tasks": [{**PAIR_TASK, "rejected": None}]}, "a preference task needs: rejected"),
    ({"tasks": [HEAD_TASK], "adapter": {"type": "prompt_tuning", "init": "text"}}, "init text needs init_text"),
    ({"tasks": [HEAD_TASK], "adapter": {"type": "prompt_tuning", "init": "random"},
      "compute": {"distributed": {"strategy": "ddp", "processes_per_node": 2}}}, "trains in one process only"),
], ids=["head-needs-few-shot", "head-body", "head-kind", "frozen-elsewhere", "dpo-needs-peft", "preference-kind",
        "preference-task-elsewhere", "preference-section-elsewhere", "preference-fields", "prompt-init-text",
        "soft-prompt-distributed"])
def test_toolbox_specs_refused_with_the_fix(spec, message):
    from pydantic import ValidationError

    from ftpipe.spec import PipelineSpec

    with pytest.raises(ValidationError, match=message):
        PipelineSpec.model_validate({"name": "x", "base_model": "tiny-llama", **spec})


def test_toolbox_specs_accepted():
    from ftpipe.spec import PipelineSpec

    orpo = PipelineSpec.model_validate({"name": "x", "base_model": "tiny-llama", "method": "preference",
                                        "tasks": [PAIR_TASK], "adapter": {"type": "full"}, "preference": {"loss": "orpo"}})
    assert orpo.preference.loss == "orpo"  # ORPO needs no reference model, so full fine-tuning is fine
    held = PipelineSpec.model_validate({"name": "x", "base_model": "tiny-llama", "tasks": [HEAD_TASK],
                                        "evaluation": {"held_out": [{**PAIR_TASK, "name": "pairs"}]}})
    assert held.evaluation.held_out[0].kind == "preference"  # as a held-out probe it fits any method


def test_preference_margin_and_packed_target_split():
    import torch

    from ftpipe.evaluation.metrics import preference_margin
    from ftpipe.training.ludwig_compat import split_packed_target

    assert preference_margin((-2.0, 2), (-9.0, 10)) == pytest.approx(7.0)
    assert preference_margin((-2.0, 2), (-9.0, 10), normalized=True) == pytest.approx(-0.1)  # longer but likelier per token
    packed = torch.tensor([[0, 0, 7, 8, 3, 9], [0, 7, 3, 9, 9, 9]])
    chosen, rejected = split_packed_target(packed, sep_id=3, pad_id=0)
    assert chosen.tolist() == [[7, 8], [0, 7]] and rejected.tolist() == [[0, 0, 9], [9, 9, 9]]
    with pytest.raises(Exception, match="2 separator tokens"):
        split_packed_target(torch.tensor([[7, 3, 8, 3]]), sep_id=3, pad_id=0)
