"""The vLLM rollout backend: the merged export it loads, and the trainer's engine lifecycle.

vLLM needs CUDA and cannot run on the CPU machines CI uses. What is tested here is everything of ours:
the exported checkpoint (checked against the training model's own logits, and loaded by transformers the
way vLLM loads it), and the trainer's calls into an engine. The engine in the lifecycle test is a
stand-in with vLLM's interface (``LLM``, ``SamplingParams``, ``collective_rpc("reload_weights")``,
``sleep``/``wake_up``) that generates with transformers from the folder it is pointed at, so the
rollouts it returns can only match the transformers backend if the export holds the trained weights.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest
import torch

from tests.trainers.conftest import small_config
from trainers import LetiTrainer, load_rollouts
from trainers.sampling import generate
from trainers.sequences import inference_prompt
from trainers.export import export_merged_model, merged_state_dict




def _perturb_adapters(model, seed: int = 0) -> None:
    """Give every trainable tensor (LoRA B is zero at init, token deltas equal the rows) a random change."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator).to(param) * 0.05)


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits.float()


def _sample_ids(trainer):
    text = trainer.tokenizer("def add(a, b):\n    return a + b\n", add_special_tokens=False)["input_ids"]
    return trainer.new_token_ids + text  # the new tokens' rows are part of the check


@pytest.mark.parametrize("fixture, mode", [("tiny_model_dir", "trainable_tokens"),
                                           ("tiny_tied_model_dir", "embeddings")])
def test_export_reproduces_the_peft_model_and_leaves_it_unchanged(request, tmp_path, mbpp_tasks, fixture, mode):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trainer = LetiTrainer(str(request.getfixturevalue(fixture)), small_config(tmp_path), train_tasks=mbpp_tasks[:1])
    assert trainer.new_token_mode() == mode
    _perturb_adapters(trainer.model)
    ids = _sample_ids(trainer)
    expected = _logits(trainer.model, ids)
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    folder = export_merged_model(trainer.model, trainer.tokenizer, tmp_path / "export")

    exported = AutoModelForCausalLM.from_pretrained(folder)
    assert exported.get_input_embeddings().weight.shape[0] == len(trainer.tokenizer)
    assert torch.allclose(_logits(exported, ids), expected, atol=1e-5)
    assert AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids("<|good|>") == trainer.new_token_ids[1]
    # the training model is untouched: same tensors, nothing merged into it
    assert all(torch.equal(p, trainable[n]) for n, p in trainer.model.named_parameters())
    assert torch.equal(_logits(trainer.model, ids), expected)
    # names are the plain model's, with no adapter leftovers
    names = set(merged_state_dict(trainer.model))
    assert names <= set(AutoModelForCausalLM.from_pretrained(folder).state_dict())
    assert not any(k in n for n in names for k in ("lora_", "base_layer", "modules_to_save", "token_adapter"))
    assert not list(tmp_path.glob("export.tmp"))


def test_export_dequantizes_a_4bit_base_and_keeps_the_adapters(tmp_path, tiny_model_dir, mbpp_tasks):
    from transformers import AutoModelForCausalLM

    config = small_config(tmp_path, load_in_4bit=True, bf16=True, dtype="bfloat16")
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks[:1])
    _perturb_adapters(trainer.model)
    ids = _sample_ids(trainer)
    expected = _logits(trainer.model, ids)

    folder = export_merged_model(trainer.model, trainer.tokenizer, tmp_path / "export")

    exported = AutoModelForCausalLM.from_pretrained(folder)
    assert exported.dtype == torch.bfloat16 and getattr(exported.config, "quantization_config", None) is None
    got = _logits(exported, ids)
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()  # bf16 rounding, not a different model
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9
    without_adapters = trainer.model.get_base_model()
    with trainer.model.disable_adapter():
        plain = _logits(without_adapters, ids)
    assert (got - plain).abs().max() > 10 * (got - expected).abs().max()  # the adapters' change is in the export


def test_export_merges_lora_on_the_embedding_too(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"]))
    _perturb_adapters(model)
    ids = list(range(5, 25))
    exported = AutoModelForCausalLM.from_pretrained(export_merged_model(model, tokenizer, tmp_path / "export"))
    assert torch.allclose(_logits(exported, ids), _logits(model, ids), atol=1e-5)


class _FakeOutput:
    def __init__(self, token_ids):
        self.token_ids = token_ids


class _FakeRequestOutput:
    def __init__(self, outputs):
        self.outputs = outputs


class _EngineStandIn:
    """vLLM's ``LLM`` interface over transformers: generates greedily from the folder it was pointed at."""

    instances: list = []

    def __init__(self, model, tokenizer=None, **kwargs):
        self.path, self.kwargs, self.calls = model, kwargs, ["init"]
        self._load()
        self.llm_engine = types.SimpleNamespace(
            engine_core=types.SimpleNamespace(shutdown=lambda: self.calls.append("shutdown")))
        _EngineStandIn.instances.append(self)

    def _load(self):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(self.path).eval()

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append("generate")
        outputs = []
        for prompt, params in zip(prompts, sampling_params):
            ids = torch.tensor([prompt["prompt_token_ids"]])
            sampling = {"do_sample": False}
            if params.temperature > 0:  # a per-request seed, as vLLM's `seed` gives
                torch.manual_seed(params.seed)
                sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p,
                            "top_k": params.top_k}
            with torch.no_grad():
                out = self.model.generate(ids, max_new_tokens=params.max_tokens, num_return_sequences=params.n,
                                          pad_token_id=self.model.config.pad_token_id, **sampling)
            outputs.append(_FakeRequestOutput([_FakeOutput(row[ids.shape[1]:].tolist()) for row in out]))
        return outputs

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        # vLLM calls the method on every worker with these arguments; V1 GPU workers define
        # `reload_weights(self)` with no arguments (it reloads from the folder the engine was built from)
        return [getattr(self, f"_worker_{method}")(*args, **(kwargs or {}))]

    def _worker_reload_weights(self):
        self.calls.append("reload")
        self._load()

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")

    def sleep(self, level=1):
        self.calls.append(f"sleep{level}")

    def wake_up(self, tags=None):
        self.calls.append("wake_up")


class _SamplingParams:
    def __init__(self, **kwargs):
        if kwargs.get("temperature") < 1e-5 and kwargs.get("n", 1) > 1:  # as vLLM 0.22-0.33 validate
            raise ValueError(f"n must be 1 when using greedy sampling, got {kwargs['n']}.")
        self.__dict__.update(kwargs)


@pytest.fixture
def engine_stand_in(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = _EngineStandIn, _SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr("trainers.vllm_backend.check_vllm_usable", lambda: None)
    _EngineStandIn.instances = []
    return _EngineStandIn


def test_vllm_backend_samples_what_the_trained_weights_generate(tmp_path, tiny_model_dir, mbpp_tasks, engine_stand_in):
    config = small_config(tmp_path / "run", generation_backend="vllm", temperature=0.0, eval_temperature=0.0,
                          learning_rate=1e-3,  # enough to change the samples, not to collapse them all into one
                          max_new_tokens=12)
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks, eval_tasks=mbpp_tasks[:2])
    metrics = trainer.train()
    assert metrics["iteration"] == 2 and "eval/pass@1" in metrics

    # greedy, so each iteration's rollouts must be what transformers generates from the weights it started with
    reference = LetiTrainer(str(tiny_model_dir), small_config(tmp_path / "reference", max_new_tokens=12),
                            train_tasks=mbpp_tasks)
    for iteration in (1, 2):
        if iteration == 2:
            reference._load_weights(tmp_path / "run" / "iteration-1" / "model")
        condition = "good" if iteration > 1 else "none"
        prompts = [inference_prompt(t.prompt, config, condition, reference.tokenizer) for t in mbpp_tasks]
        expected = generate(reference.model, reference.tokenizer, prompts, num_samples=2, max_new_tokens=12,
                            temperature=0.0)
        rollouts = load_rollouts(tmp_path / "run" / f"iteration-{iteration}" / "rollouts")
        assert [r.program for r in rollouts] == [c for samples in expected for c in samples]
        assert len({r.program for r in rollouts}) > 1
    programs = [[r.program for r in load_rollouts(tmp_path / "run" / f"iteration-{i}" / "rollouts")] for i in (1, 2)]
    assert programs[0] != programs[1]  # training changed what is sampled, so the reload mattered

    # one engine, loaded from the export, asleep during each training phase, reloaded after each one
    (engine,) = engine_stand_in.instances
    assert engine.path == str(tmp_path / "run" / "vllm-model")
    assert not (tmp_path / "run" / "vllm-model").exists()  # the scratch export is removed when training ends
    assert engine.kwargs["enable_sleep_mode"] is True and engine.kwargs["gpu_memory_utilization"] == 0.5
    assert engine.kwargs["dtype"] == "auto"
    assert engine.calls == ["init", "generate", "generate",  # evaluation before training, iteration 1
                            "sleep2", "wake_up", "reload", "reset_prefix_cache", "generate",  # after training: eval
                            "generate",  # iteration 2 sampling: same weights, no reload
                            "sleep2", "wake_up", "reload", "reset_prefix_cache", "generate",
                            "shutdown"]  # when training ends
    assert trainer.last_sft_trainer.optimizer is None  # its state was freed for the next sampling phase


def test_sampler_seeds_each_prompt_and_call_reproducibly(tmp_path, tiny_model_dir, mbpp_tasks, engine_stand_in,
                                                         monkeypatch):
    from trainers.sampling import Sampler, SamplingParams
    from trainers.vllm_backend import VLLMSampler

    trainer = LetiTrainer(str(tiny_model_dir), small_config(tmp_path), train_tasks=mbpp_tasks[:1])
    sampler = VLLMSampler(tmp_path / "export", seed=3, gpu_memory_utilization=0.3, max_model_len=512)
    prompts = [mbpp_tasks[0].prompt] * 2 + [mbpp_tasks[1].prompt]
    calls = []

    assert isinstance(sampler, Sampler)  # the interface the LeTI loop samples through

    def sample(seed):
        return sampler.generate(trainer.model, trainer.tokenizer, prompts, SamplingParams(3, 6, 1.0, top_p=0.9),
                                seed=seed, on_batch=calls.append)

    first = sample(1)
    assert [len(samples) for samples in first] == [3, 3, 3] and calls == [3, 3, 3]
    assert first == sample(1)  # a resumed iteration samples the same programs
    assert first != sample(2)  # another iteration samples new ones
    assert first[0] != first[1]  # the same prompt twice in one call gets its own seed
    assert len(set(first[2])) > 1  # n samples of one prompt differ
    monkeypatch.setattr("trainers.vllm_backend.SEQUENCES_PER_CALL", 3)  # one prompt per engine call
    generate_calls = len(engine_stand_in.instances[0].calls)
    assert sample(1) == first  # the same samples, whatever the chunking
    assert len(engine_stand_in.instances[0].calls) - generate_calls == 3
    (engine,) = engine_stand_in.instances
    assert engine.calls.count("init") == 1 and "reload" not in engine.calls  # same weights version throughout
    assert engine.kwargs["max_model_len"] == 512 and engine.kwargs["seed"] == 3


def test_vllm_backend_fails_early_without_vllm_or_cuda(tmp_path, tiny_model_dir, mbpp_tasks, monkeypatch):
    config = small_config(tmp_path, generation_backend="vllm")
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed
    with pytest.raises(ImportError, match="needs vLLM: `pip install \"vllm>=0.22,<0.32\"`.*generation_backend='hf'"):
        LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks)
    installed = types.ModuleType("vllm")
    installed.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    monkeypatch.setitem(sys.modules, "vllm", installed)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU.*generation_backend='hf'"):
        LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks)
    assert not (tmp_path / "iteration-1").exists()


def test_leti_export_merges_a_saved_adapter_into_one_checkpoint(tmp_path, tiny_model_dir, mbpp_tasks, capsys):
    from transformers import AutoModelForCausalLM

    from trainers.cli import main

    trainer = LetiTrainer(str(tiny_model_dir), small_config(tmp_path / "run"), train_tasks=mbpp_tasks[:1])
    _perturb_adapters(trainer.model, seed=1)
    trainer._save_model(tmp_path / "run" / "iteration-1" / "model")
    ids = _sample_ids(trainer)

    assert main(["export", "--model", str(tmp_path / "run" / "iteration-1" / "model"),
                 "--output", str(tmp_path / "merged")]) == 0
    assert "merged checkpoint:" in capsys.readouterr().out
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert torch.allclose(_logits(merged, ids), _logits(trainer.model, ids), atol=1e-5)
    with pytest.raises(SystemExit):
        main(["export", "--model", str(tmp_path / "nowhere"), "--output", str(tmp_path / "x")])
    assert "does not exist" in capsys.readouterr().err
