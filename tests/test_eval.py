"""The held-out evaluation: LLaMA-Factory's multi-turn tokens, the chat loss against a plain transformers loop,
the scoring batches, and `neosft eval` on real runs (full weights, a PEFT adapter, the base) and on bad input."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import assert_user_error, neosft, write_json
from hypothesis import given
from hypothesis import strategies as st
from test_train import llamafactory_infer_seqlen, llamafactory_qwen_sample

from neosft.artifacts import EvalRecord, Manifest, RunRecord
from neosft.chat import DEFAULT_SYSTEM
from neosft.cli import cli
from neosft.data.build import build
from neosft.eval import report
from neosft.eval.evaluate import Settings, evaluate, read_heldout
from neosft.eval.score import batches
from neosft.sample import SAMPLE_CORPUS
from neosft.storage import location
from neosft.train.tokenize import IGNORE_INDEX, tokenize_conversations
from neosft.variants import VARIANTS


def llamafactory_sharegpt_qwen(example: dict, tokenizer, cutoff_len: int, default_system: str = DEFAULT_SYSTEM):
    """What LLaMA-Factory makes of one ShareGPT record with the `qwen` template, transcribed from its source:
    data/converter.py `SharegptDatasetConverter` (a leading system turn, human/gpt at odd/even places, an even count,
    else dropped: None), data/template.py `Template._encode` + `encode_multiturn` (each slot encoded on its own, the
    system slot on the first message only) and data/processor/supervised.py `_encode_data_example` (infer_seqlen per
    turn pair on what is left of cutoff_len; train_on_prompt, mask_history and efficient_eos off)."""
    messages = example["conversations"]
    system = ""
    if messages and messages[0]["from"] == "system":
        system, messages = messages[0]["value"], messages[1:]
    accept = (("human", "observation"), ("gpt", "function_call"))
    if any(m["from"] not in accept[i % 2] for i, m in enumerate(messages)) or len(messages) % 2:
        return None
    encoded = []
    for i, message in enumerate(messages):
        elements = [f"<|im_start|>system\n{system or default_system}<|im_end|>\n"] if i == 0 else []
        if message["from"] == "human":
            elements.append(f"<|im_start|>user\n{message['value']}<|im_end|>\n<|im_start|>assistant\n")
        else:
            elements.append(f"{message['value']}<|im_end|>\n")
        encoded.append([t for e in elements if e for t in tokenizer.encode(e, add_special_tokens=False)])
    input_ids, labels, total = [], [], 0
    for source, target in [(encoded[i], encoded[i + 1]) for i in range(0, len(encoded), 2)]:
        if total >= cutoff_len:
            break
        source_len, target_len = llamafactory_infer_seqlen(len(source), len(target), cutoff_len - total)
        total += source_len + target_len
        input_ids += source[:source_len] + target[:target_len]
        labels += [IGNORE_INDEX] * source_len + target[:target_len]
    return input_ids, labels


EXTRA = [  # a record's own system, an empty one, a trailing question the build drops, long turns for the cut
    {
        "conversations": [
            {"from": "system", "value": "You are terse."},
            {"from": "human", "value": "Name a colour."},
            {"from": "gpt", "value": "Blue."},
            {"from": "human", "value": "Another?"},
            {"from": "gpt", "value": "Red."},
        ]
    },
    {
        "conversations": [
            {"from": "system", "value": ""},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!"},
        ]
    },
    {
        "conversations": [
            {"from": "human", "value": "2+2?"},
            {"from": "gpt", "value": "4"},
            {"from": "human", "value": "and?"},
        ]
    },
    {
        "conversations": [
            {"from": "human", "value": "long question " * 40},
            {"from": "gpt", "value": "long answer " * 60},
            {"from": "human", "value": "more " * 30},
            {"from": "gpt", "value": "even more " * 50},
            {"from": "human", "value": "last"},
            {"from": "gpt", "value": "done"},
        ]
    },
]


@pytest.fixture(scope="module")
def heldout_dataset(tmp_path_factory):
    """The sample corpus and EXTRA built with every record held out: the real writer's heldout/ folder."""
    folder = tmp_path_factory.mktemp("heldout")
    corpus = write_json(folder / "corpus.json", json.loads(SAMPLE_CORPUS.read_text()) + EXTRA)
    build(str(corpus), str(folder / "data"), holdout="100%")
    return folder / "data"


@pytest.fixture(scope="module")
def run_dataset(tmp_path_factory):
    """The sample corpus with 48 records held out, as `neosft run` builds it."""
    dest = tmp_path_factory.mktemp("run-data")
    build(str(SAMPLE_CORPUS), str(dest), holdout="48")
    return dest


def _records(dataset) -> list[dict]:
    held = Manifest.read(str(dataset)).heldout
    return [json.loads(line) for line in (dataset / held.file).read_bytes().splitlines()]


@pytest.fixture(scope="module")
def qwen2(qwen_tokenizer):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen_tokenizer)


def test_multi_turn_tokens_equal_llamafactory(heldout_dataset, qwen2):
    records = _records(heldout_dataset)
    assert len(records) == 300 + 4 and any(r["conversations"][0]["from"] == "system" for r in records)
    assert max(len(r["conversations"]) for r in records) >= 6
    conversations = [(c.system, c.rounds) for c in read_heldout(str(heldout_dataset)).conversations]
    for cutoff in (8192, 300, 100, 37, 16):
        tokens = tokenize_conversations(conversations, qwen2, cutoff)
        for i, record in enumerate(records):
            ids, labels = llamafactory_sharegpt_qwen(record, qwen2, cutoff)
            assert tokens.sample(i) == {"input_ids": ids, "labels": labels}, (cutoff, i)
        if cutoff < 8192:
            assert tokens.truncated > 0


def test_every_assistant_turn_is_a_label_and_the_prompts_are_masked(qwen2):
    tokens = tokenize_conversations([(None, [("Hi", "Hello!"), ("Bye", "Ciao")])], qwen2, 8192)
    sample = tokens.sample(0)
    learned = qwen2.decode([t for t in sample["labels"] if t != IGNORE_INDEX])
    assert learned == "Hello!<|im_end|>\nCiao<|im_end|>\n"
    assert qwen2.decode(sample["input_ids"]).startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
    assert qwen2.decode(sample["input_ids"]).count("<|im_start|>system") == 1


def test_a_single_round_conversation_is_the_single_turn_row(qwen2):
    row = {"instruction": "What is 2+2?", "input": "", "output": "4", "system": "Be brief."}
    tokens = tokenize_conversations([("Be brief.", [("What is 2+2?", "4")])], qwen2, 16)
    ids, labels = llamafactory_qwen_sample(row, qwen2, 16)
    assert tokens.sample(0) == {"input_ids": ids, "labels": labels}


@given(st.lists(st.integers(1, 300), min_size=1, max_size=60), st.integers(64, 1024))
def test_scoring_batches_hold_every_sample_once_within_the_budget(lengths, budget):
    lengths = np.array(lengths)
    out = batches(lengths, budget)
    assert sorted(i for b in out for i in b) == list(range(len(lengths)))
    assert all(len(b) == 1 or len(b) * max(lengths[b]) <= budget for b in out)


def _plain_sums(model, samples: list[tuple[list[int], list[int]]]) -> list[tuple[float, int]]:
    """Each sample's summed cross-entropy and label count by a plain loop, one sample at a time, transformers' own
    loss."""
    out = []
    with torch.no_grad():
        for ids, labels in samples:
            n = sum(1 for t in labels[1:] if t != IGNORE_INDEX)
            loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item() if n else 0.0
            out.append((loss * n, n))
    return out


def _plain_loss(model, samples: list[tuple[list[int], list[int]]]) -> tuple[float, int]:
    """Token-weighted mean cross-entropy by a plain loop."""
    sums = _plain_sums(model, samples)
    count = sum(n for _, n in sums)
    return sum(loss for loss, _ in sums) / count, count


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from neosft.eval.evaluate import load_model, load_tokenizer

    return load_model(tiny_model), load_tokenizer(tiny_model)


def test_chat_loss_equals_a_plain_transformers_loop(run_dataset, tiny):
    model, tokenizer = tiny
    record = evaluate(model, tokenizer, read_heldout(str(run_dataset)), "base", "base", "tiny", Settings(samples=0))
    conversations = [llamafactory_sharegpt_qwen(r, tokenizer, 8192) for r in _records(run_dataset)]
    expected, count = _plain_loss(model, conversations)
    assert (record.chat.tokens, record.chat.samples) == (count, 48)
    per_conversation = _plain_sums(model, conversations)  # in the held-out file's order
    assert record.conversation_tokens == [n for _, n in per_conversation]
    assert record.conversation_loss == pytest.approx([loss for loss, _ in per_conversation], rel=1e-5, abs=1e-5)
    assert record.chat.loss == pytest.approx(expected, rel=1e-5)
    assert record.chat.perplexity == pytest.approx(math.exp(expected), rel=1e-4)
    rows = read_heldout(str(run_dataset)).rows["multi"]
    expected, count = _plain_loss(
        model, [llamafactory_qwen_sample(r, tokenizer, VARIANTS["multi"].cutoff_len) for r in rows]
    )
    assert record.matrix["multi"].tokens == count and record.matrix["multi"].loss == pytest.approx(expected, rel=1e-5)
    assert set(record.matrix) == set(VARIANTS)


def _train(data, output, model, tmp_path, *args):
    argv = [
        "train",
        "--variant",
        "single",
        "--data",
        str(data),
        "--output",
        str(output),
        "--model",
        str(model),
        "--deepspeed",
        "none",
        "--max-steps",
        "1",
        "--work-dir",
        str(tmp_path / "work" / output.name),
        *args,
    ]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, (result.output, result.exception)


def _adapter_run(full_output, tiny_model, dest):
    """A finished run whose final/ is a fresh PEFT LoRA adapter over the tiny model (B = 0: the base's function)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    model.save_pretrained(dest / "final")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(dest / "final")
    shutil.copy(full_output / "final" / "run.json", dest / "final" / "run.json")
    config = json.loads((dest / "final" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model)


@pytest.mark.slow
def test_a_trained_run_is_evaluated_and_neosft_eval_reproduces_it(run_dataset, tiny_model, tiny, tmp_path):
    run = tmp_path / "run"
    _train(run_dataset, run / "single", tiny_model, tmp_path, "--method", "full", "--eval-samples", "2", "--eval-base")
    trained, base = EvalRecord.read(location(run / "single")), EvalRecord.read(location(run / "base"))
    assert (trained.name, trained.method, base.name, base.method) == ("single", "full", "base", "base")
    assert len(trained.samples) == len(base.samples) == 2 and trained.chat.tokens == base.chat.tokens
    expected, _ = _plain_loss(tiny[0], [llamafactory_sharegpt_qwen(r, tiny[1], 8192) for r in _records(run_dataset)])
    assert base.chat.loss == pytest.approx(expected, rel=1e-5)  # the base, recomputed independently
    text = (run / "comparison.md").read_text()
    assert "| single | full | 1 |" in text and "## Format matrix" in text and "**base**" in text
    assert (run / "eval.png").read_bytes().startswith(b"\x89PNG")

    result = CliRunner().invoke(cli, ["eval", str(run / "single"), "--samples", "2"])
    assert result.exit_code == 0, (result.output, result.exception)
    again = EvalRecord.read(location(run / "single"))
    assert (again.chat, again.matrix, again.samples) == (trained.chat, trained.matrix, trained.samples)
    assert "single" in result.output and f"{trained.chat.loss:.4f}" in result.output

    _adapter_run(run / "single", tiny_model, run / "all_pair")
    result = CliRunner().invoke(cli, ["eval", str(run / "all_pair"), "--samples", "0"])
    assert result.exit_code == 0, (result.output, result.exception)
    adapter = EvalRecord.read(location(run / "all_pair"))
    assert adapter.method == "lora" and adapter.chat.loss == pytest.approx(base.chat.loss, rel=1e-6)
    variants, _ = report.collect(location(run))
    assert [v.name for v in variants] == ["single", "all_pair"]


def test_bad_input_is_one_line(sample_dataset, run_dataset, tiny_model, tmp_path):
    from neosft.train.tiny import make_tiny_qwen2

    assert_user_error(neosft("eval", tmp_path / "nothing"), "is not a finished run")
    assert_user_error(
        neosft("eval", "--base", tmp_path, "--model", tiny_model, "--data", sample_dataset),
        "has no held-out records",
        "--holdout",
    )
    other = make_tiny_qwen2(tmp_path / "other", ["a different corpus entirely"] * 10, vocab_size=300)
    run = tmp_path / "run"
    _train(run_dataset, run / "single", tiny_model, tmp_path, "--no-eval")
    assert not (run / "single" / "eval.json").exists()
    assert_user_error(neosft("eval", "--base", run, "--model", other), "tokenizer is not the run's")
    assert_user_error(neosft("eval", run / "single", "--model", other), "--model names the base model")

    shutil.copytree(run / "single", tmp_path / "elsewhere")  # an OUTPUT not laid out as RUN/<variant>
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "elsewhere"), "--samples", "1"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "single: chat loss" in result.output and EvalRecord.read(location(tmp_path / "elsewhere")) is not None
    assert not (tmp_path / "comparison.md").exists()


def test_training_on_a_dataset_without_held_out_records_skips_the_eval(sample_dataset, tiny_model, tmp_path):
    _train(sample_dataset, tmp_path / "out", tiny_model, tmp_path)
    assert RunRecord.read(location(tmp_path / "out")) is not None
    assert not (tmp_path / "out" / "eval.json").exists()


def test_plan_adds_the_eval_and_says_when_there_is_none(run_dataset, sample_dataset):
    from neosft.plan import plan, plan_eval, render_eval

    plans = plan(str(run_dataset), list(VARIANTS), 3000)
    e = plan_eval(Manifest.read(str(run_dataset)), plans, 3000)
    assert e.models == 5 and e.tokens > 0 and e.gpu_minutes > 0
    bigger = plan_eval(Manifest.read(str(run_dataset)), plans, 3000, samples=200)
    assert bigger.gpu_minutes > e.gpu_minutes  # the samples cost decode time
    result = neosft("plan", "--data", run_dataset, "--method", "full", "--tokens-per-gpu-s", "3000")
    assert result.returncode == 0 and render_eval(e) in result.stdout
    assert "eval: none" in neosft("plan", "--data", sample_dataset).stdout
    assert "held-out: 48 conversations resolve a chat-loss difference of about" in result.stdout
    assert "assuming a per-conversation spread" in result.stdout


def test_compare_rewrites_the_comparison_and_flags_other_held_out_records(run_dataset, tiny, tmp_path):
    model, tokenizer = tiny
    other = tmp_path / "other-data"
    build(str(SAMPLE_CORPUS), str(other), holdout="40")
    run = tmp_path / "run"
    for folder, dataset, name in ((run / "base", run_dataset, "base"), (run / "multi", other, "multi")):
        folder.mkdir(parents=True)
        evaluate(
            model,
            tokenizer,
            read_heldout(str(dataset)),
            name,
            "base" if name == "base" else "full",
            "tiny",
            Settings(samples=1, max_new_tokens=4),
        ).write(location(folder))
    result = neosft("compare", run, "--out", tmp_path / "collected")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[:3] == ["variant", "method", "steps"]
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["base", "multi"]
    text = (tmp_path / "collected" / "comparison.md").read_text()
    assert text == (run / "comparison.md").read_text() and "**Not comparable**: multi" in text
    assert (tmp_path / "collected" / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert_user_error(neosft("compare", tmp_path / "empty"), "holds no eval.json yet")


@pytest.mark.slow
def test_two_ranks_share_the_eval_and_get_the_one_process_numbers(run_dataset, tiny_model, tmp_path):
    from test_train_distributed import finished, torchrun

    run = tmp_path / "run"
    proc = torchrun(
        "-m",
        "neosft",
        "train",
        "--variant",
        "single",
        "--data",
        run_dataset,
        "--output",
        run / "single",
        "--model",
        tiny_model,
        "--deepspeed",
        "none",
        "--max-steps",
        1,
        "--work-dir",
        tmp_path / "work",
        "--set",
        "cutoff_len=128",
        "--eval-samples",
        3,
        "--eval-base",
        env={},
        log=tmp_path / "log",
    )
    finished(proc, tmp_path / "log")
    shared, base = EvalRecord.read(location(run / "single")), EvalRecord.read(location(run / "base"))
    assert shared.world_size == base.world_size == 2 and len(shared.samples) == 3
    shutil.copytree(run / "single", tmp_path / "alone")
    (tmp_path / "alone" / "eval.json").unlink()
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "alone"), "--samples", "3"])
    assert result.exit_code == 0, (result.output, result.exception)
    alone = EvalRecord.read(location(tmp_path / "alone"))
    assert alone.world_size == 1 and (alone.chat.tokens, alone.chat.samples) == (
        shared.chat.tokens,
        shared.chat.samples,
    )
    assert alone.chat.loss == pytest.approx(shared.chat.loss, rel=1e-6)
    assert {n: (m.tokens, m.samples) for n, m in alone.matrix.items()} == {
        n: (m.tokens, m.samples) for n, m in shared.matrix.items()
    }
    assert [s["prompt"] for s in alone.samples] == [s["prompt"] for s in shared.samples]  # in order, every rank's


def _independent_interval(raw: dict, a: str, b: str, n: int) -> tuple[float, float]:
    """A 95 % percentile interval of a's chat loss minus b's, recomputed from the eval.json files alone: numpy,
    its own generator, 20,000 resamples of conversations shared by both models."""
    picks = np.random.default_rng(7).integers(0, n, (20_000, n))

    def loss(name: str) -> np.ndarray:
        summed, tokens = np.array(raw[name]["conversation_loss"]), np.array(raw[name]["conversation_tokens"])
        return summed[picks].sum(axis=1) / tokens[picks].sum(axis=1)

    low, high = np.percentile(loss(a) - loss(b), [2.5, 97.5])
    return float(low), float(high)


def test_paired_intervals_agree_with_an_independent_bootstrap_and_a_copy_is_no_difference(run_dataset, tiny, tmp_path):
    import copy

    model, tokenizer = tiny
    sharper = copy.deepcopy(model)  # the tiny model with three times its logits: another model, same tokens
    with torch.no_grad():
        sharper.lm_head.weight.mul_(3)
    held, run = read_heldout(str(run_dataset)), tmp_path / "run"
    for name, scored in (("base", model), ("single", sharper), ("multi", model)):  # multi: a copy of the base
        (run / name).mkdir(parents=True)
        method = "base" if name == "base" else "full"
        evaluate(scored, tokenizer, held, name, method, "tiny", Settings(samples=0)).write(location(run / name))
    result = neosft("compare", run)
    assert result.returncode == 0, result.stderr
    raw = {name: json.loads((run / name / "eval.json").read_text()) for name in ("base", "single", "multi")}

    bootstrap = report.uncertainty(report.comparable(*report.collect(location(run))))
    n = len(raw["base"]["conversation_loss"])
    assert bootstrap.conversations == n == 48
    low, high = _independent_interval(raw, "single", "base", n)
    ours = bootstrap.between("single", "base")
    assert ours.estimate == pytest.approx(raw["single"]["chat"]["loss"] - raw["base"]["chat"]["loss"], abs=1e-5)
    assert ours.low == pytest.approx(low, abs=0.05 * (high - low))  # Monte Carlo error: ~1 % of the width
    assert ours.high == pytest.approx(high, abs=0.05 * (high - low))
    assert low > 0 or high < 0  # three times the logits is resolvably another model on 48 conversations
    better, worse = ("base", "single") if low > 0 else ("single", "base")
    gap = abs(ours.estimate)
    sentence = f"{better} is better than {worse} by {gap:.3f} (95 % interval "
    text = (run / "comparison.md").read_text()
    assert sentence in text and sentence in result.stdout and "over 48 conversations." in text
    assert "- multi vs base: no difference the held-out set can resolve" in text
    assert "multi vs base: no difference the held-out set can resolve" in result.stdout
    ranks = {line.split()[0]: line.split()[-1] for line in result.stdout.splitlines()[1:4]}
    assert ranks == (
        {"base": "1", "multi": "1", "single": "3"} if better == "base" else {"single": "1", "base": "2", "multi": "2"}
    )
    assert "warning" not in result.stderr  # one pair is resolved

    again = report.uncertainty(report.comparable(*report.collect(location(run))))
    assert again == bootstrap  # seeded: the same records give the same intervals

    from neosft.eval.uncertainty import conversations_needed

    planned = neosft("plan", "--data", run_dataset, "--run", run)  # the run's measured error sizes the held-out set
    needed = conversations_needed(0.01, bootstrap.widest_se(), 48)
    assert planned.returncode == 0 and f"0.01 needs ~{needed:,}," in planned.stdout
    assert (
        "held-out: 48 conversations resolve" in planned.stdout
        and f"{bootstrap.widest_se():.4f} on 48" in planned.stdout
    )

    shutil.rmtree(run / "single")  # left: two copies of one model
    result = neosft("compare", run)
    assert result.returncode == 0 and "is better than" not in result.stdout
    assert "warning: the models score identically on every one of the 48 held-out conversations" in result.stderr
    assert "-0.0000" not in result.stdout
    assert_user_error(neosft("plan", "--data", run_dataset, "--run", run), "score identically")


def test_compare_across_runs_on_one_held_out_set_and_refuses_two_sets(run_dataset, tiny, tmp_path):
    import copy

    model, tokenizer = tiny
    sharper = copy.deepcopy(model)
    with torch.no_grad():
        sharper.lm_head.weight.mul_(3)
    other = tmp_path / "other-data"
    build(str(SAMPLE_CORPUS), str(other), holdout="40")
    for folder, scored, dataset in (
        (tmp_path / "lora" / "single", model, run_dataset),
        (tmp_path / "full" / "single", sharper, run_dataset),
        (tmp_path / "elsewhere" / "single", model, other),
    ):
        folder.mkdir(parents=True)
        evaluate(scored, tokenizer, read_heldout(str(dataset)), "single", "full", "tiny", Settings(samples=0)).write(
            location(folder)
        )
    result = neosft("compare", tmp_path / "lora", tmp_path / "full", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[1:3]] == ["lora/single", "full/single"]
    raw = {n: json.loads((tmp_path / n / "single" / "eval.json").read_text()) for n in ("lora", "full")}
    low, high = _independent_interval(raw, "full", "lora", 48)
    verdict = next(line for line in result.stdout.splitlines() if "over 48 conversations." in line)
    assert (
        "lora/single is better than full/single" if low > 0 else "full/single is better than lora/single"
    ) in verdict
    text = (tmp_path / "out" / "comparison.md").read_text()
    assert text.startswith("# Runs lora, full:") and f"- {verdict}" in text
    assert (tmp_path / "out" / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "lora" / "comparison.md").exists()  # the runs' own folders are left as they were

    refused = neosft("compare", tmp_path / "lora", tmp_path / "elsewhere", "--out", tmp_path / "out2")
    sets = [raw["lora"]["heldout_sha256"][:12], Manifest.read(str(other)).heldout.sha256[:12]]
    assert_user_error(refused, "lora/single was scored on held-out set " + sets[0], sets[1], "same held-out records")
    assert not (tmp_path / "out2").exists()
    assert_user_error(neosft("compare", tmp_path / "lora", tmp_path / "full"), "--out DIR")


def test_batched_left_padded_answers_are_the_one_at_a_time_answers_and_keep_the_generation_config(run_dataset, tiny):
    from neosft.eval.evaluate import prompts
    from neosft.eval.score import answers

    model, tokenizer = tiny
    questions = prompts(read_heldout(str(run_dataset)), Settings(samples=6))
    assert len({len(tokenizer(q)["input_ids"]) for q in questions}) > 1  # the batch needs padding
    one_by_one = answers(model, tokenizer, questions, 8, batch=1)
    assert answers(model, tokenizer, questions, 8, batch=4) == one_by_one and tokenizer.padding_side == "right"

    first = tokenizer(questions[0], return_tensors="pt", add_special_tokens=False)
    greedy = model.generate(**first, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    t1, t2 = greedy[0, first["input_ids"].shape[1] :][:2].tolist()
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [t2]  # a list of end tokens, as Qwen2-Instruct's generation config has
    try:
        [stopped] = answers(model, tokenizer, questions[:1], 8)
    finally:
        model.generation_config.eos_token_id = saved
    assert stopped == tokenizer.decode([t1, t2], skip_special_tokens=True)  # the model's end token ended it
