import pytest
import torch

from sktransfer.devices import available_or_cpu, resolve_device, seeded


@pytest.mark.parametrize("present, resolved", [(True, "cuda"), (False, "cpu")])
def test_auto_takes_cuda_only_when_present(monkeypatch, present, resolved):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: present)
    assert resolve_device("auto") == torch.device(resolved)
    assert resolve_device(None) == torch.device(resolved)


def test_cuda_without_gpu_raises(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        resolve_device("cuda")


def test_unknown_device_raises():
    with pytest.raises(ValueError, match="Unknown device 'gpu0'"):
        resolve_device("gpu0")


def test_saved_cuda_device_maps_to_cpu_with_a_warning(monkeypatch):
    from sktransfer.devices import DeviceWarning

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(DeviceWarning, match="loaded onto the CPU"):
        assert available_or_cpu("cuda:0").type == "cpu"


def test_seeded_restores_the_global_generator():
    before = torch.random.get_rng_state()
    with seeded(5):
        a = torch.rand(3)
    with seeded(5):
        b = torch.rand(3)
    assert torch.equal(a, b)
    assert torch.equal(before, torch.random.get_rng_state())
