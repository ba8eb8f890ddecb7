import functools

import pytest
import torch

from pockettts.models.bundle import write_export
from pockettts.models.flow_lm import FlowLM
from pockettts.models.one_step_heads import PointwiseHead
from pockettts.training.distill_module import DistillationModule
from pockettts.training.warm_start import factorised_bottleneck, grouped_key_values, warm_start
from tests.support import TINY_FLOW_LM

POINTWISE = {"kind": "pointwise", "dim": 32, "depth": 2, "batch_multiplier": 2}


def _source(seed: int = 0) -> FlowLM:
    """A TINY_FLOW_LM (LSD head, d_model 32, 4 heads) with every parameter random (a fresh head outputs
    zero, which would hide a wrong conversion)."""
    torch.manual_seed(seed)
    source = FlowLM(**TINY_FLOW_LM).eval()
    with torch.no_grad():
        for param in source.parameters():
            param.normal_(0.0, 0.3)
    return source


def _small(**config) -> FlowLM:
    return FlowLM(**{**TINY_FLOW_LM, "head": POINTWISE, **config}).eval()


def _samples(model: FlowLM, hidden: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's one-step samples and the EOS logits from backbone outputs ``hidden`` ``[N, d]``."""
    z = model.output(hidden, None)
    return model.head.sample(z, noise, 1), model.out_eos(z)


def test_full_rank_bottleneck_reproduces_the_sources_samples():
    source, small = _source(), _small(z_dim=32)
    warm_start(small, source)
    hidden, noise = torch.randn(6, 32), torch.randn(6, 8)
    with torch.no_grad():
        for got, want in zip(_samples(small, hidden, noise), _samples(source, hidden, noise)):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_the_factorisation_is_exact_at_rank_z_dim_and_a_best_approximation_below():
    torch.manual_seed(1)
    low_rank = torch.randn(40, 6) @ torch.randn(6, 24)  # [dim, d] of rank 6
    eos = torch.randn(1, 6) @ low_rank[:6]  # in its row space
    z_proj, cond, eos_z = factorised_bottleneck(low_rank, eos, 6)
    assert z_proj.shape == (6, 24) and cond.shape == (40, 6) and eos_z.shape == (1, 6)
    torch.testing.assert_close(cond @ z_proj, low_rank, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eos_z @ z_proj, eos, atol=1e-4, rtol=1e-4)

    full = torch.randn(40, 24)
    z_proj, cond, _ = factorised_bottleneck(full, torch.randn(1, 24), 6)
    singular = torch.linalg.svdvals(full)
    error = torch.linalg.matrix_norm(cond @ z_proj - full)  # Eckart-Young: the tail singular values
    assert error.item() == pytest.approx(singular[6:].square().sum().sqrt().item(), rel=1e-4)
    with pytest.raises(ValueError, match="exceeds the rank bound 24"):
        factorised_bottleneck(full, torch.randn(1, 24), 25)


def test_grouped_query_attention_is_the_identity_at_num_heads_and_pools_each_group():
    source = _source()
    same = _small(z_dim=32, num_kv_heads=4)
    warm_start(same, source)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(same.transformer(x), source.transformer(x))

    in_proj = torch.randn(3 * 32, 16)  # 4 heads of 8
    grouped = grouped_key_values(in_proj, 32, 8, 2)
    assert grouped.shape == (32 + 2 * 16, 16)
    torch.testing.assert_close(grouped[:32], in_proj[:32])  # queries
    torch.testing.assert_close(grouped[32:40], (in_proj[32:40] + in_proj[40:48]) / 2)  # key heads 0, 1
    torch.testing.assert_close(grouped[48:56], (in_proj[64:72] + in_proj[72:80]) / 2)  # value heads 0, 1
    with pytest.raises(ValueError, match="do not split into 3"):
        grouped_key_values(in_proj, 32, 8, 3)


def test_grouped_query_attention_is_exact_when_each_group_shares_its_keys_and_values():
    source = _source()
    with torch.no_grad():
        for layer in source.transformer.layers:
            kv = layer.self_attn.in_proj.weight[32:].view(2, 2, 2, 8, 32)  # [k/v, group, member, Dh, d]
            kv[:, :, 1] = kv[:, :, 0]
    small = _small(num_kv_heads=2, z_dim=32)
    warm_start(small, source)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(small.transformer(x), source.transformer(x), atol=1e-5, rtol=1e-5)


def test_a_grouped_bottlenecked_student_takes_the_shapes_and_refuses_what_does_not_fit():
    source = _source()
    small = _small(num_kv_heads=1, z_dim=16)
    warm_start(small, source)
    assert isinstance(small.head, PointwiseHead) and small.z_proj.weight.shape == (16, 32)
    assert small.transformer.layers[0].self_attn.in_proj.weight.shape == (32 + 2 * 8, 32)
    torch.testing.assert_close(small.conditioner.embed.weight, source.conditioner.embed.weight)

    with pytest.raises(ValueError, match="d_model 32 differs"):
        warm_start(_small(d_model=48, z_dim=16), source)
    with pytest.raises(ValueError, match="head.flow_net"):
        warm_start(_small(z_dim=16, head={**POINTWISE, "dim": 48}), source)
    with pytest.raises(ValueError, match="cannot start a DriftingHead"):
        warm_start(_small(z_dim=16, head={**POINTWISE, "kind": "drifting"}), source)


def test_distillation_warm_starts_its_student_from_an_export_of_another_architecture(tmp_path):
    source = _source()
    path = str(write_export(source, tmp_path / "student.safetensors"))
    student = {**TINY_FLOW_LM, "head": POINTWISE, "num_kv_heads": 2, "z_dim": 16}
    module = DistillationModule(
        teacher=path, optimizer=functools.partial(torch.optim.AdamW), student=student,
        init_student_from=path, head_from_teacher=True,
    )  # fmt: skip
    assert module.model.z_dim == 16 and module.model.transformer.layers[0].self_attn.num_kv_heads == 2
    torch.testing.assert_close(module.model.input_linear.weight, source.input_linear.weight)
    with pytest.raises(ValueError, match="choose one"):
        DistillationModule(
            teacher=path, optimizer=torch.optim.AdamW, student=student, init_student_from=path, init_from=path
        )
