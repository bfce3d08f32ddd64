"""The sampler of the online methods on the arithmetic task's tiny Llama: the log-probs it reports
are those the trainer recomputes (temperature 1) and those of log_softmax(logits / T) with top-k /
top-p truncation recomputed here independently; seeds, the geometric mixture, EOS first, no EOS,
stop strings, long prompts, and the vLLM backend's message where vLLM or a GPU is missing."""

import sys

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")

from policylab.nn.sequence import model_completion_log_probs  # noqa: E402
from policylab.sampling import Completions, HFSampler, SamplingError, make_sampler  # noqa: E402
from policylab.tasks.arithmetic import build_model, build_tokenizer  # noqa: E402

PROMPTS = ["1+2=", "33+44=", "9+9=", "12+3=", "5+55=", "7+0=", "98+1="]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model():
    return build_model(seed=0)


@pytest.fixture(scope="module")
def other():
    return build_model(seed=1)


def _full_logits(model, c: Completions) -> torch.Tensor:
    """Logits predicting each position t (from the forward's output at t - 1), one full forward, no cache."""
    with torch.no_grad():
        logits = model(input_ids=c.input_ids, attention_mask=c.attention_mask, use_cache=False).logits.float()
    return torch.cat([torch.zeros_like(logits[:, :1]), logits[:, :-1]], 1)


def _with_eos_bias(bias: float):
    """The tiny model with a bias on the EOS logit (a real HF Llama, its lm_head replaced)."""
    m = build_model(seed=0)
    head = torch.nn.Linear(m.config.hidden_size, m.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(m.lm_head.weight)
        head.bias.zero_()
        head.bias[m.config.eos_token_id] = bias
    m.lm_head = head
    return m


def test_trainer_log_probs_equal_sampler_log_probs_and_mode_is_restored(tok, model):
    model.train()
    model.model.layers[0].eval()  # a frozen part stays in eval mode after the call
    sampler = HFSampler(tok, max_new_tokens=8, batch_size=3)  # 3 chunks with different prompt widths
    c = sampler.sample(model, PROMPTS, num_samples=4, seed=0)
    assert model.training and not model.model.layers[0].training and model.model.layers[1].training
    n = len(PROMPTS) * 4
    assert c.input_ids.shape[0] == n and c.token_log_probs.dtype == torch.float32
    assert c.prompt_index.tolist() == [i for i in range(len(PROMPTS)) for _ in range(4)]
    # prompts left padded: each row's prompt tokens end right before the completion column P
    P = c.prompt_length
    for r in range(n):
        ids = tok(PROMPTS[r // 4])["input_ids"]
        assert c.input_ids[r, P - len(ids) : P].tolist() == ids
        assert c.attention_mask[r, : P - len(ids)].sum() == 0
    assert torch.equal(c.attention_mask[:, P:], c.completion_mask[:, P:])
    assert (c.token_log_probs[c.completion_mask == 0] == 0).all()
    model.eval()
    with torch.no_grad():
        trainer, count = model_completion_log_probs(model, c.input_ids, c.attention_mask, c.completion_mask)
    assert torch.equal(count.long(), c.completion_lengths)
    assert torch.allclose(trainer, c.sequence_log_probs(), atol=1e-5, rtol=0)
    # per token too, against a full forward
    expected = torch.log_softmax(_full_logits(model, c), -1).gather(-1, c.input_ids[..., None]).squeeze(-1)
    assert torch.allclose(c.token_log_probs, expected * c.completion_mask, atol=1e-5)
    assert c.generated_tokens == int(c.completion_mask.sum()) and c.seconds > 0


def _truncated_log_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """log pi over one vocabulary row, with top-k then top-p, written as a plain loop over sorted tokens."""
    probs = torch.softmax(logits.double() / temperature, -1)
    order = sorted(range(len(probs)), key=lambda i: -float(probs[i]))
    kept = order[:top_k] if top_k else order
    mass = sum(float(probs[i]) for i in kept)
    nucleus, running = [], 0.0
    for i in kept:
        nucleus.append(i)
        running += float(probs[i]) / mass
        if running >= top_p:
            break
    z = sum(float(probs[i]) for i in nucleus)
    out = torch.full_like(probs, float("-inf"))
    for i in nucleus:
        out[i] = torch.log(probs[i] / z)
    return out


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(0.7, 0, 1.0), (0.9, 5, 1.0), (1.3, 0, 0.8), (0.8, 8, 0.7)]
)
def test_log_probs_are_those_of_the_tempered_truncated_distribution(tok, model, temperature, top_k, top_p):
    sampler = HFSampler(tok, max_new_tokens=6, temperature=temperature, top_k=top_k, top_p=top_p)
    c = sampler.sample(model, PROMPTS[:4], num_samples=3, seed=3)
    logits = _full_logits(model, c)
    for r, t in c.completion_mask.nonzero().tolist():
        expected = _truncated_log_probs(logits[r, t], temperature, top_k, top_p)
        token = int(c.input_ids[r, t])
        assert torch.isfinite(expected[token]), "a token outside the top-k / nucleus was sampled"
        assert abs(float(c.token_log_probs[r, t]) - float(expected[token])) < 1e-5
    if top_k == 0 and top_p == 1.0:  # the plain tempered softmax, as the brief writes it
        plain = torch.log_softmax(logits / temperature, -1).gather(-1, c.input_ids[..., None]).squeeze(-1)
        assert torch.allclose(c.token_log_probs, plain * c.completion_mask, atol=1e-5)


def test_same_seed_same_completions_and_global_rng_untouched(tok, model):
    sampler = HFSampler(tok, max_new_tokens=8, temperature=0.9)
    state = torch.get_rng_state()
    a = sampler.sample(model, PROMPTS, num_samples=4, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = sampler.sample(model, PROMPTS, num_samples=4, seed=7)
    c = sampler.sample(model, PROMPTS, num_samples=4, seed=8)
    assert a.texts == b.texts and torch.equal(a.input_ids, b.input_ids)
    assert torch.equal(a.token_log_probs, b.token_log_probs)
    assert a.texts != c.texts
    # K samples of one prompt differ from one another (it samples, it does not copy)
    assert len(set(a.texts[:4])) > 1


def test_greedy_follows_the_argmax(tok, model):
    c = HFSampler(tok, max_new_tokens=6, temperature=0.0).sample(model, PROMPTS, num_samples=2, seed=0)
    d = HFSampler(tok, max_new_tokens=6, temperature=0.0).sample(model, PROMPTS, num_samples=2, seed=1)
    assert c.texts == d.texts and c.texts[0::2] == c.texts[1::2]
    logits = _full_logits(model, c)
    rows, cols = c.completion_mask.nonzero(as_tuple=True)
    assert torch.equal(logits[rows, cols].argmax(-1), c.input_ids[rows, cols])


def test_geometric_mixture_and_reference(tok, model, other):
    sampler = HFSampler(tok, max_new_tokens=6)
    c = sampler.sample(model, PROMPTS, num_samples=2, seed=5, reference=other, mixture_coef=0.3)
    mixed = 0.3 * _full_logits(other, c) + 0.7 * _full_logits(model, c)
    expected = torch.log_softmax(mixed, -1).gather(-1, c.input_ids[..., None]).squeeze(-1)
    assert torch.allclose(c.token_log_probs, expected * c.completion_mask, atol=1e-5)
    # mixture_coef=1 is the reference itself: the same draws as sampling it directly
    from_ref = sampler.sample(model, PROMPTS, num_samples=2, seed=5, reference=other, mixture_coef=1.0)
    direct = sampler.sample(other, PROMPTS, num_samples=2, seed=5)
    assert from_ref.texts == direct.texts and torch.equal(from_ref.input_ids, direct.input_ids)
    with torch.no_grad():
        ref_lp, _ = model_completion_log_probs(
            other, from_ref.input_ids, from_ref.attention_mask, from_ref.completion_mask
        )
    assert torch.allclose(ref_lp, from_ref.sequence_log_probs(), atol=1e-5)
    with pytest.raises(SamplingError, match="pass reference="):
        sampler.sample(model, PROMPTS, mixture_coef=0.5)


def test_empty_generation_is_just_eos(tok):
    c = HFSampler(tok, max_new_tokens=5).sample(_with_eos_bias(1e4), PROMPTS[:3], num_samples=2, seed=0)
    assert c.texts == [""] * 6 and c.finished.all() and c.num_unfinished == 0
    assert c.completion_lengths.tolist() == [1] * 6
    assert (c.input_ids[:, c.prompt_length] == tok.eos_token_id).all() and c.input_ids.shape[1] == c.prompt_length + 1
    assert torch.allclose(c.sequence_log_probs(), torch.zeros(6), atol=1e-4)


def test_missing_eos_is_unfinished_and_counted(tok):
    c = HFSampler(tok, max_new_tokens=5).sample(_with_eos_bias(-1e4), PROMPTS[:3], num_samples=2, seed=0)
    assert not c.finished.any() and c.num_unfinished == 6
    assert c.completion_lengths.tolist() == [5] * 6
    P = c.prompt_length
    assert c.texts == tok.batch_decode(c.input_ids[:, P:].tolist(), skip_special_tokens=True)
    assert not (c.input_ids[:, P:] == tok.eos_token_id).any()


def test_stop_strings_end_and_cut_the_completion(tok, model):
    stops = ("+-", "7")
    c = HFSampler(tok, max_new_tokens=12, stop_strings=stops).sample(model, PROMPTS, num_samples=8, seed=2)
    P, stopped = c.prompt_length, 0
    for r in range(len(c.texts)):
        length = int(c.completion_lengths[r])
        kept = tok.decode(c.input_ids[r, P : P + length].tolist(), skip_special_tokens=True)
        assert "+-" not in c.texts[r] and "7" not in c.texts[r]
        assert (c.input_ids[r, P + length :] == tok.pad_token_id).all()
        assert (c.token_log_probs[r, P + length :] == 0).all()
        ended_by_eos = int(c.input_ids[r, P + length - 1]) == tok.eos_token_id
        if c.finished[r] and not ended_by_eos:
            stopped += 1
            # the last kept token completed the stop string; the text is everything before it
            assert any(kept == c.texts[r] + s for s in stops)
            assert not any(s in tok.decode(c.input_ids[r, P : P + length - 1].tolist()) for s in stops)
        else:
            assert kept == c.texts[r]
    assert stopped >= 5, "too few rows ended by a stop string to test it"


def test_long_prompts_truncated_from_the_left_or_refused(tok, model):
    sampler = HFSampler(tok, max_new_tokens=4, max_prompt_length=5)
    c = sampler.sample(model, ["1+2=", "123+456="], num_samples=2, seed=0)
    assert c.num_truncated_prompts == 1
    P = c.prompt_length
    assert P == 5 and c.input_ids[2, :P].tolist() == tok("+456=", add_special_tokens=False)["input_ids"]
    assert c.input_ids[0, :P].tolist() == tok("1+2=")["input_ids"]  # with its BOS, not cut
    long = "1" * 26 + "+2="  # 30 tokens with BOS, + 8 new tokens > the 32 positions of the tiny model
    with pytest.raises(SamplingError, match=r"prompt 1 has 30 tokens \+ max_new_tokens 8 > the model's context of 32"):
        HFSampler(tok, max_new_tokens=8).sample(model, ["1+2=", long])


def test_bad_settings_name_the_setting(tok):
    for kwargs, name in (
        ({"top_p": 0.0}, "top_p"),
        ({"temperature": -1}, "temperature"),
        ({"max_new_tokens": 0}, "max_new"),
    ):
        with pytest.raises(SamplingError, match=name):
            HFSampler(tok, **kwargs)
    with pytest.raises(SamplingError, match="stop_strings"):
        HFSampler(tok, stop_strings="7")
    with pytest.raises(SamplingError, match="backend 'foo'"):
        make_sampler("foo", tok)


def test_completions_state_dict_loads_weights_only(tok, model, tmp_path):
    c = HFSampler(tok, max_new_tokens=4).sample(model, PROMPTS[:2], num_samples=2, seed=0)
    torch.save(c.state_dict(), tmp_path / "c.pt")
    back = Completions.from_state_dict(torch.load(tmp_path / "c.pt", weights_only=True))
    assert back.texts == c.texts and torch.equal(back.token_log_probs, c.token_log_probs)
    assert torch.equal(back.grouped(back.sequence_log_probs()).flatten(), c.sequence_log_probs())


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the vLLM backend may construct")
def test_vllm_backend_absent_gives_a_clear_message(tok):
    import policylab.sampling  # noqa: F401

    assert "vllm" not in sys.modules  # importing the sampler never imports vllm
    with pytest.raises(SamplingError, match=r"VLLMSampler needs vllm and a CUDA GPU: pip install vllm; use HFSampler"):
        make_sampler("vllm", tok, model="unused")


def test_merged_weights_for_the_vllm_sync_merge_lora_and_leave_the_model_as_it_was(tok):
    peft = pytest.importorskip("peft")
    import copy

    from policylab.sampling.vllm import merged_weights

    base = build_model(seed=0)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_()  # B starts at zero: make the adapter do something
    ids = torch.tensor([tok("12+3=")["input_ids"]])
    before = lora(input_ids=ids).logits
    expected = copy.deepcopy(lora).merge_and_unload().state_dict()
    with merged_weights(lora) as weights:
        assert weights.keys() == expected.keys()
        for name, value in expected.items():
            assert torch.allclose(weights[name], value, atol=1e-6), name
    assert not torch.allclose(
        expected["model.layers.0.self_attn.q_proj.weight"],
        build_model(seed=0).state_dict()["model.layers.0.self_attn.q_proj.weight"],
    )
    assert torch.allclose(lora(input_ids=ids).logits, before, atol=1e-6)
    # and the HF sampler samples the PEFT-wrapped model with the log-probs its trainer computes
    c = HFSampler(tok, max_new_tokens=5).sample(lora, PROMPTS[:3], num_samples=2, seed=0)
    with torch.no_grad():
        trainer, _ = model_completion_log_probs(lora, c.input_ids, c.attention_mask, c.completion_mask)
    assert torch.allclose(trainer, c.sequence_log_probs(), atol=1e-5)


def test_positions_count_real_tokens_for_absolute_position_models(tok):
    """GPT-2 (learned absolute positions): a left-padded prompt's first token is at position 0,
    so the log-probs are those of a forward with position_ids = cumsum(attention_mask) - 1."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from policylab.nn.sequence import completion_log_probs

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=17, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=1, eos_token_id=2, pad_token_id=0
    )
    gpt2 = GPT2LMHeadModel(config)
    c = HFSampler(tok, max_new_tokens=6).sample(gpt2, PROMPTS, num_samples=2, seed=0)
    assert gpt2.training  # sampled in eval mode (no dropout), given back in train mode
    positions = (c.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = gpt2.eval()(input_ids=c.input_ids, attention_mask=c.attention_mask, position_ids=positions).logits
    assert torch.allclose(
        completion_log_probs(logits, c.input_ids, c.completion_mask)[0], c.sequence_log_probs(), atol=1e-5
    )
    # the trainer's log-probs number positions the same way
    with torch.no_grad():
        trainer, _ = model_completion_log_probs(gpt2, c.input_ids, c.attention_mask, c.completion_mask)
    assert torch.allclose(trainer, c.sequence_log_probs(), atol=1e-5)
