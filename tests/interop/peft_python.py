"""Checks adapters written by peft-train against Hugging Face PEFT and transformers, and the other way.

Usage: peft_python.py check <work dir>    compares PEFT's outputs with peft-train's predictions
       peft_python.py write <work dir>    writes an adapter with PEFT (random, non-zero B) for peft-train
       peft_python.py compare <model dir> <adapter dir> <predictions.tsv>
                                          PEFT's predictions for a sequence adapter against the file
                                          that `peft-train eval --predictions` wrote (any real model)

The work dir holds model/ (a BERT checkpoint with vocab.txt), sst_dev.tsv, ner_dev.conll, and what
peft_python.sh made there with peft-train.
"""
import json
import os
import sys

import peft
import torch
from peft import (AdaLoraConfig, IA3Config, LNTuningConfig, LoraConfig, PeftModel, PrefixTuningConfig, PromptTuningConfig,
                  VeraConfig, get_peft_model)
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

torch.set_grad_enabled(False)
W = sys.argv[2]
MODEL = os.path.join(W, "model") if sys.argv[1] != "compare" else sys.argv[2]
tok = AutoTokenizer.from_pretrained(MODEL)  # vocab.txt alone gives the BERT WordPiece tokenizer
failures = []


def check(ok, what):
    print(("ok: " if ok else "FAIL: ") + what)
    if not ok:
        failures.append(what)


def read_tsv(path):
    return [line.rstrip("\n").split("\t") for line in open(path, encoding="utf-8") if line.strip()]


def prefix_logits(model, enc):
    """PEFT's prefix-tuning forward for a sequence classifier (PeftModelForSequenceClassification.
    _prefix_tuning_forward): the prefix as a KV cache, the attention mask extended with ones, the
    backbone's pooled output, the classifier. PEFT 0.21 refuses to run it on transformers 5's BERT,
    whose forward calls the argument `cache` (it looks for `past_key_values`), so the same steps run
    here with the new name."""
    n = model.peft_config["default"].num_virtual_tokens
    mask = torch.cat([torch.ones(enc["input_ids"].shape[0], n, dtype=enc["attention_mask"].dtype), enc["attention_mask"]], dim=1)
    cache = model.get_prompt(enc["input_ids"].shape[0])
    base = model.base_model
    pooled = base.bert(input_ids=enc["input_ids"], attention_mask=mask, token_type_ids=enc.get("token_type_ids"), cache=cache)[1]
    return base.classifier(base.dropout(pooled))


def sentence_probs(model, texts):
    enc = tok(texts, padding=True, return_tensors="pt")
    if isinstance(model, PeftModel) and model.peft_config["default"].peft_type.value == "PREFIX_TUNING":
        logits = prefix_logits(model, enc)
    else:
        logits = model(**enc).logits
    return torch.softmax(logits.double(), dim=-1)


def compare_sentences(model, labels, pred_file, what):
    """peft-train's predictions file: predicted label, its probability (6 digits), gold, text."""
    rows = read_tsv(pred_file)
    probs = torch.cat([sentence_probs(model, [r[3] for r in rows[i:i + 64]]) for i in range(0, len(rows), 64)])
    agree = worst = 0
    for r, p in zip(rows, probs):
        k = int(torch.argmax(p))
        agree += labels[k] == r[0]
        worst = max(worst, abs(float(p[k]) - float(r[1])))
    check(agree == len(rows) and worst < 2e-5,
          f"{what}: {agree}/{len(rows)} labels agree, largest probability difference {worst:.1e}")


def word_tags(model, labels, sentences, virtual=0):
    """The tag of each word: the prediction at its first word piece (as peft-train labels words).
    `virtual`: rows of prompt-tuning virtual tokens before the tokens' own (PEFT returns logits for them)."""
    out = []
    for words in sentences:
        enc = tok(words, is_split_into_words=True, return_tensors="pt")
        best = model(**enc).logits[0, virtual:].argmax(-1).tolist()
        seen, tags = set(), []
        for i, w in enumerate(enc.word_ids()):
            if w is not None and w not in seen:
                seen.add(w)
                tags.append(labels[best[i]])
        out.append(tags)
    return out


def read_conll_predictions(path):
    """peft-train's token predictions: word, gold, predicted; sentences separated by blank lines."""
    sentences, words, tags = [], [], []
    for line in list(open(path, encoding="utf-8")) + [""]:
        line = line.rstrip("\n")
        if not line:
            if words:
                sentences.append((words, tags))
            words, tags = [], []
            continue
        w, _, p = line.split("\t")
        words.append(w)
        tags.append(p)
    return sentences


def check_merged(model, merged_dir, what, tol=1e-5):
    """PEFT's merge_and_unload of `model` against the checkpoint `peft-train merge` wrote to merged_dir.
    A head that PEFT leaves in its modules_to_save wrapper (LN_TUNING does) is compared by its trained copy."""
    theirs = {k.replace(".modules_to_save.default.", "."): v for k, v in model.merge_and_unload().state_dict().items()
              if ".original_module." not in k}
    ours = load_file(os.path.join(W, merged_dir, "model.safetensors"))
    worst = max(float((theirs[name].float() - t.float()).abs().max()) for name, t in ours.items() if name in theirs)
    check(set(ours) == set(theirs) and worst < tol,
          f"{what}: the same {len(ours)} tensor names as PEFT's merge_and_unload ({set(ours) == set(theirs)}), "
          f"largest difference {worst:.1e}")


def run_card(adapter):
    return json.load(open(os.path.join(adapter, "peft_train.json")))


def check_mode():
    # 1. A sequence LoRA adapter (all attention and FFN linears, classifier in modules_to_save).
    adapter = os.path.join(W, "seq", "adapter")
    labels = run_card(adapter)["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, adapter).eval()
    check(model.peft_config["default"].peft_type.value == "LORA", "PEFT reads adapter_config.json as LoRA")
    compare_sentences(model, labels, os.path.join(W, "seq_pred.tsv"), "PEFT-loaded sequence adapter vs peft-train eval")

    # 2. Merging: PEFT's merge_and_unload against peft-train merge, weight by weight and by outputs.
    check_merged(model, "merged", "LoRA merged weights")
    merged_ours = AutoModelForSequenceClassification.from_pretrained(os.path.join(W, "merged")).eval()
    compare_sentences(merged_ours, labels, os.path.join(W, "seq_pred.tsv"), "transformers-loaded merged model vs peft-train eval")

    # 3. A token-classification rsLoRA adapter.
    adapter = os.path.join(W, "tok", "adapter")
    labels = run_card(adapter)["labels"]
    base = AutoModelForTokenClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, adapter).eval()
    check(model.peft_config["default"].use_rslora, "PEFT reads use_rslora")
    sentences = read_conll_predictions(os.path.join(W, "tok_pred.tsv"))
    tags = word_tags(model, labels, [s[0] for s in sentences])
    total = sum(len(s[1]) for s in sentences)
    agree = sum(a == b for s, t in zip(sentences, tags) for a, b in zip(s[1], t))
    check(agree == total, f"PEFT-loaded token adapter vs peft-train eval: {agree}/{total} tags agree")

    # 4. An adapter PEFT wrote (peft_python.sh had peft-train evaluate it).
    labels = run_card(os.path.join(W, "seq", "adapter"))["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, os.path.join(W, "py_adapter")).eval()
    compare_sentences(model, labels, os.path.join(W, "py_pred.tsv"), "PEFT-written adapter evaluated by peft-train")

    # 5. An IA3 adapter: PEFT reads its feed-forward modules, predicts the same, merges the same.
    adapter = os.path.join(W, "ia3", "adapter")
    labels = run_card(adapter)["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, adapter).eval()
    c = model.peft_config["default"]
    check(c.peft_type.value == "IA3" and c.feedforward_modules == {"0.output.dense", "1.output.dense"},
          f"PEFT reads adapter_config.json as IA3 with feedforward_modules {sorted(c.feedforward_modules)}")
    compare_sentences(model, labels, os.path.join(W, "ia3_pred.tsv"), "PEFT-loaded IA3 adapter vs peft-train eval")
    check_merged(model, "ia3_merged", "IA3 merged weights")

    # 6. PEFT's LoRA on every dense module (the pooler's too), evaluated by peft-train.
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, os.path.join(W, "py_dense")).eval()
    check(any("pooler.dense.lora_A" in n for n, _ in model.named_parameters()), "PEFT's 'dense' LoRA reaches bert.pooler.dense")
    compare_sentences(model, labels, os.path.join(W, "py_dense_pred.tsv"), "PEFT-written LoRA on every dense module evaluated by peft-train")

    # 7. PEFT's IA3 adapter with its BERT defaults, evaluated by peft-train.
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, os.path.join(W, "py_ia3")).eval()
    compare_sentences(model, labels, os.path.join(W, "py_ia3_pred.tsv"), "PEFT-written IA3 adapter evaluated by peft-train")

    # 8. DoRA both ways: PEFT loads peft-train's (magnitudes included), predicts and merges the same;
    # peft-train evaluates PEFT's.
    adapter = os.path.join(W, "dora", "adapter")
    labels = run_card(adapter)["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, adapter).eval()
    magnitudes = [n for n, _ in model.named_parameters() if "lora_magnitude_vector" in n]
    check(model.peft_config["default"].use_dora and len(magnitudes) == 4,
          f"PEFT reads use_dora and {len(magnitudes)} magnitude vectors (query and value of two layers)")
    compare_sentences(model, labels, os.path.join(W, "dora_pred.tsv"), "PEFT-loaded DoRA adapter vs peft-train eval")
    check_merged(model, "dora_merged", "DoRA merged weights")
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, os.path.join(W, "py_dora")).eval()
    compare_sentences(model, labels, os.path.join(W, "py_dora_pred.tsv"), "PEFT-written DoRA adapter evaluated by peft-train")

    # 9. LayerNorm tuning both ways, and its merge against PEFT's.
    adapter = os.path.join(W, "ln", "adapter")
    labels = run_card(adapter)["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, adapter).eval()
    tuned = [n for n, _ in model.named_parameters() if "ln_tuning_layers" in n]
    check(model.peft_config["default"].peft_type.value == "LN_TUNING" and len(tuned) == 10,
          f"PEFT reads adapter_config.json as LN_TUNING with {len(tuned)} tuned tensors (five norms)")
    compare_sentences(model, labels, os.path.join(W, "ln_pred.tsv"), "PEFT-loaded LN_TUNING adapter vs peft-train eval")
    check_merged(model, "ln_merged", "LN_TUNING merged weights", 1e-6)
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, os.path.join(W, "py_ln")).eval()
    compare_sentences(model, labels, os.path.join(W, "py_ln_pred.tsv"), "PEFT-written LN_TUNING adapter evaluated by peft-train")

    # 10. AdaLoRA both ways: PEFT rebuilds peft-train's pruned modules from rank_pattern, predicts and
    # merges the same; peft-train evaluates PEFT's.
    adapter = os.path.join(W, "ada", "adapter")
    labels = run_card(adapter)["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, adapter).eval()
    pattern = model.peft_config["default"].rank_pattern
    ranks = {n: p.shape[0] for n, p in model.named_parameters() if "lora_E" in n}
    check(model.peft_config["default"].peft_type.value == "ADALORA" and len(pattern) == 6 and
          sum(ranks.values()) == sum(sum(v) for v in pattern.values()) < 36,
          f"PEFT reads ADALORA with a rank pattern and rebuilds its modules with {sum(ranks.values())} of 36 triplets")
    compare_sentences(model, labels, os.path.join(W, "ada_pred.tsv"), "PEFT-loaded ADALORA adapter vs peft-train eval")
    check_merged(model, "ada_merged", "ADALORA merged weights")
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, os.path.join(W, "py_ada")).eval()
    compare_sentences(model, labels, os.path.join(W, "py_ada_pred.tsv"), "PEFT-written ADALORA adapter evaluated by peft-train")

    # 11. VeRA both ways: PEFT loads peft-train's (the shared pair from the file, sliced per layer),
    # predicts and merges the same; peft-train evaluates PEFT's.
    adapter = os.path.join(W, "vera", "adapter")
    labels = run_card(adapter)["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, adapter).eval()
    vectors = [n for n, _ in model.named_parameters() if "vera_lambda" in n]
    shared = model.base_model.vera_A["default"]
    check(model.peft_config["default"].peft_type.value == "VERA" and len(vectors) == 12 and tuple(shared.shape) == (16, 32),
          f"PEFT reads VERA with {len(vectors)} vectors and vera_A {tuple(shared.shape)} (r 16, the hidden width)")
    compare_sentences(model, labels, os.path.join(W, "vera_pred.tsv"), "PEFT-loaded VERA adapter vs peft-train eval")
    check_merged(model, "vera_merged", "VERA merged weights")
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, os.path.join(W, "py_vera")).eval()
    compare_sentences(model, labels, os.path.join(W, "py_vera_pred.tsv"), "PEFT-written VERA adapter evaluated by peft-train")

    # 12. Prompt tuning both ways: PEFT loads peft-train's (sequence and token classification) and
    # predicts the same; peft-train evaluates PEFT's. Neither merges.
    adapter = os.path.join(W, "prompt", "adapter")
    labels = run_card(adapter)["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, adapter).eval()
    check(model.peft_config["default"].peft_type.value == "PROMPT_TUNING" and model.peft_config["default"].num_virtual_tokens == 4,
          "PEFT reads PROMPT_TUNING with 4 virtual tokens")
    compare_sentences(model, labels, os.path.join(W, "prompt_pred.tsv"), "PEFT-loaded PROMPT_TUNING adapter vs peft-train eval")
    adapter = os.path.join(W, "prompt_tok", "adapter")
    labels = run_card(adapter)["labels"]
    base = AutoModelForTokenClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, adapter).eval()
    sentences = read_conll_predictions(os.path.join(W, "prompt_tok_pred.tsv"))
    tags = word_tags(model, labels, [s[0] for s in sentences], virtual=model.peft_config["default"].num_virtual_tokens)
    total = sum(len(s[1]) for s in sentences)
    agree = sum(a == b for s, t in zip(sentences, tags) for a, b in zip(s[1], t))
    check(agree == total, f"PEFT-loaded PROMPT_TUNING token adapter vs peft-train eval: {agree}/{total} tags agree")
    labels = run_card(os.path.join(W, "seq", "adapter"))["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, os.path.join(W, "py_prompt")).eval()
    compare_sentences(model, labels, os.path.join(W, "py_prompt_pred.tsv"), "PEFT-written PROMPT_TUNING adapter evaluated by peft-train")

    # 13. Prefix tuning both ways (peft-train's trained through the MLP reparametrisation: its file
    # holds the prefix it computes, which PEFT loads in inference mode).
    adapter = os.path.join(W, "prefix", "adapter")
    labels = run_card(adapter)["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, adapter).eval()
    check(model.peft_config["default"].peft_type.value == "PREFIX_TUNING" and model.peft_config["default"].prefix_projection,
          "PEFT reads PREFIX_TUNING with prefix_projection")
    compare_sentences(model, labels, os.path.join(W, "prefix_pred.tsv"), "PEFT-loaded PREFIX_TUNING adapter vs peft-train eval")
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, os.path.join(W, "py_prefix")).eval()
    compare_sentences(model, labels, os.path.join(W, "py_prefix_pred.tsv"), "PEFT-written PREFIX_TUNING adapter evaluated by peft-train")


def write_mode():
    labels = run_card(os.path.join(W, "seq", "adapter"))["labels"]
    torch.manual_seed(3)
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    config = LoraConfig(r=4, lora_alpha=12, target_modules=["query", "key", "intermediate.dense", "output.dense"], modules_to_save=["classifier"],
                        task_type="SEQ_CLS", init_lora_weights=False)  # random B: the adapter changes outputs
    model = get_peft_model(base, config)
    with torch.no_grad():
        model.base_model.model.classifier.modules_to_save["default"].weight.normal_(0, 0.5)
    model.save_pretrained(os.path.join(W, "py_adapter"))
    # LoRA on every "dense" module, which PEFT's suffix match also finds in bert.pooler.dense.
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["dense"], modules_to_save=["classifier"],
                                            task_type="SEQ_CLS", init_lora_weights=False))
    model.save_pretrained(os.path.join(W, "py_dense"))
    # IA3 with PEFT's defaults for BERT (key, value, output.dense; output.dense feed-forward, which
    # also matches attention.output.dense), its vectors moved off the identity.
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = get_peft_model(base, IA3Config(task_type="SEQ_CLS"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ia3_l" in name:
                p.uniform_(0.5, 1.5)
        model.base_model.model.classifier.modules_to_save["default"].weight.normal_(0, 0.5)
    model.save_pretrained(os.path.join(W, "py_ia3"))
    # DoRA on the attention and FFN projections, B random and the magnitudes moved off the base norms.
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "intermediate.dense"],
                                            use_dora=True, modules_to_save=["classifier"], task_type="SEQ_CLS",
                                            init_lora_weights=False))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_magnitude_vector" in name:
                p.mul_(torch.empty_like(p).uniform_(0.7, 1.3))
        model.base_model.model.classifier.modules_to_save["default"].weight.normal_(0, 0.5)
    model.save_pretrained(os.path.join(W, "py_dora"))
    # LayerNorm tuning on every LayerNorm, the tuned scales and shifts moved off the base ones.
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = get_peft_model(base, LNTuningConfig(target_modules=["LayerNorm"], task_type="SEQ_CLS"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_tuning_layers" in name:
                p.add_(torch.empty_like(p).uniform_(-0.3, 0.3))
        model.base_model.model.classifier.modules_to_save["default"].weight.normal_(0, 0.5)
    model.save_pretrained(os.path.join(W, "py_ln"))
    # AdaLoRA on query, value and intermediate.dense with random P, E, Q and a rank pattern (as its
    # allocator leaves one), some modules pruned harder than others.
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = get_peft_model(base, AdaLoraConfig(init_r=4, target_r=2, lora_alpha=8, total_step=10,
                                               target_modules=["query", "value", "intermediate.dense"],
                                               modules_to_save=["classifier"], task_type="SEQ_CLS"))
    pattern = {}
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            if "lora_E" in name:
                p.normal_(0, 1.0)
                keep = [(i + k) % 3 != 0 for k in range(4)]
                pattern[name.replace(".default", "").replace("base_model.model.", "")] = keep
            elif "lora_A" in name or "lora_B" in name:
                p.normal_(0, 0.3)
        model.base_model.model.classifier.modules_to_save["default"].weight.normal_(0, 0.5)
    model.peft_config["default"].rank_pattern = pattern
    model.save_pretrained(os.path.join(W, "py_ada"))
    # VeRA on query, value and every output.dense (the FFN's is 64 -> 32: the shared A is 64 wide), its vectors moved
    # off the identity; PEFT draws the pair from PyTorch's generator and saves it (save_projection).
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = get_peft_model(base, VeraConfig(r=8, target_modules=["query", "value", "output.dense"], projection_prng_key=5,
                                            modules_to_save=["classifier"], task_type="SEQ_CLS"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "vera_lambda" in name:
                p.uniform_(-1.0, 1.0)
        model.base_model.model.classifier.modules_to_save["default"].weight.normal_(0, 0.5)
    model.save_pretrained(os.path.join(W, "py_vera"))
    # Prompt tuning (random start, 5 virtual tokens) and prefix tuning (3 virtual tokens), heads moved.
    for name, config in (("py_prompt", PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=5)),
                         ("py_prefix", PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=3))):
        base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
        model = get_peft_model(base, config)
        with torch.no_grad():
            model.base_model.classifier.modules_to_save["default"].weight.normal_(0, 0.5)
            model.prompt_encoder["default"].embedding.weight.mul_(0.5)
        model.save_pretrained(os.path.join(W, name))
    # Without modules_to_save the head stays the base model's (random here): peft-train must refuse it.
    # (PEFT adds the classifier to modules_to_save by itself for SEQ_CLS, so write without a task type
    # and say SEQ_CLS afterwards.)
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=12, target_modules=["query"], init_lora_weights=False))
    out = os.path.join(W, "py_adapter_nohead")
    model.save_pretrained(out)
    config_file = os.path.join(out, "adapter_config.json")
    config = json.load(open(config_file))
    config["task_type"] = "SEQ_CLS"
    json.dump(config, open(config_file, "w"))


def compare_mode():
    adapter, predictions = sys.argv[3], sys.argv[4]
    labels = run_card(adapter)["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, adapter).eval()
    compare_sentences(model, labels, predictions, f"PEFT {peft.__version__} vs peft-train on {predictions}")


if __name__ == "__main__":
    {"check": check_mode, "write": write_mode, "compare": compare_mode}[sys.argv[1]]()
    sys.exit(1 if failures else 0)
